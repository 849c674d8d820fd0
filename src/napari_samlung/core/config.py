"""The settings of a run: model, prompts, CT window, batching, cache.

One frozen :class:`RunConfig` is shared by the console script, the dataset
runs (local and on Dask workers, where it is also the key of the worker's
model cache) and the dock widget.
"""

from __future__ import annotations

from dataclasses import dataclass

from .auto import AUTO_STRATEGY, COMBINE_RULES
from .engine import Segmenter
from .models import get_spec
from .windowing import Window


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result (and its speed).

    Attributes
    ----------
    model_id : str
        A registered model id (:func:`~napari_samlung.core.models.get_spec`).
    checkpoint : str or None
        A weights file for the model's architecture; None: the model's own.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    strategy : str or None
        A prompt strategy name, or ``"auto"`` (:data:`~.auto.AUTO_STRATEGY`:
        prompts from the lungs found in the CT itself, the ground truth only
        scores); None: the model's default.
    window_preset : str or None
        A named CT window; None (and no level/width): the model's default.
    window_level, window_width : float or None
        An explicit CT window in HU; give both or neither.
    normalization : str
        ``"fixed"`` window mapping or the paper's ``"per-slice"`` min-max.
    batch_size : int
        Slices per encoder batch.
    precision : str
        Encoder precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
    disk_cache_dir : str or None
        None: no disk cache of embeddings; ``""``: the user cache directory.
    disk_cache_limit_mb : float
        Size limit of the disk cache in MB.
    hu_refine : bool
        Check the masks of ground-truth-prompted runs and of propagation
        against the CT's air (:func:`~.refine.refine_with_candidates`,
        :func:`~.propagation.propagate` with candidates).  CT only; X-rays
        are never refined.
    combine : str
        The automatic path's rule (:data:`~.auto.COMBINE_RULES`).
    """

    model_id: str = "lite_medsam"
    checkpoint: str | None = None
    device: str = "auto"
    strategy: str | None = None
    window_preset: str | None = None
    window_level: float | None = None
    window_width: float | None = None
    normalization: str = "fixed"
    batch_size: int = 4
    precision: str = "auto"
    disk_cache_dir: str | None = None
    disk_cache_limit_mb: float = 2048.0
    hu_refine: bool = True
    combine: str = "refined"

    def __post_init__(self) -> None:
        if self.combine not in COMBINE_RULES:
            raise ValueError(
                f"combine must be one of {', '.join(COMBINE_RULES)}, got {self.combine!r}"
            )

    @property
    def is_auto(self) -> bool:
        """True for the automatic path (strategy ``"auto"``)."""
        return self.strategy == AUTO_STRATEGY

    def refines(self, modality: str) -> bool:
        """Whether masks of an image of this modality are checked against its air (CT only)."""
        return self.hu_refine and modality == "ct"

    def resolved_strategy(self) -> str:
        """The prompt strategy's name: the one asked for, else the model's default."""
        return self.strategy or get_spec(self.model_id).default_strategy

    def window(self) -> Window:
        """The CT window: level/width if given, else the preset, else the model's default.

        Raises
        ------
        ValueError
            When only one of level and width is given, or a value is invalid.
        """
        if self.window_level is not None or self.window_width is not None:
            if self.window_level is None or self.window_width is None:
                raise ValueError("give both --window-level and --window-width")
            return Window(self.window_level, self.window_width, self.normalization)  # type: ignore[arg-type]
        preset = self.window_preset or get_spec(self.model_id).default_window
        return Window.preset(preset, self.normalization)  # type: ignore[arg-type]

    def settings(self) -> dict:
        """What decides the scores as plain values: model, checkpoint, strategy, window,
        and the combination rule (automatic runs) or the HU refinement (the others)."""
        settings = {
            "model": self.model_id,
            "checkpoint": self.checkpoint,
            "strategy": self.resolved_strategy(),
            "window": self.window().describe(),
        }
        if self.is_auto:
            settings["combine"] = self.combine
        else:
            settings["hu_refine"] = self.hu_refine
        return settings

    def make_segmenter(self) -> Segmenter:
        """Load the model (downloading its weights once) and wrap it in a Segmenter."""
        disk_cache = None
        if self.disk_cache_dir is not None:
            from .cache import DiskCache

            disk_cache = DiskCache(self.disk_cache_dir or None, self.disk_cache_limit_mb)
        return Segmenter.from_registry(
            self.model_id,
            self.checkpoint,
            self.device,
            precision=self.precision,
            disk_cache=disk_cache,
        )
