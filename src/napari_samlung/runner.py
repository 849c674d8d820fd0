"""Case-level runs shared by the console script, the Dask workers and the benchmarks.

It joins ``io`` (reading cases) and ``core`` (segmenting and scoring); it
knows nothing about napari or the command line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .core.engine import Segmenter
from .core.metrics import SliceScore
from .core.models import get_spec
from .core.volume import VolumeResult, segment_from_labels
from .core.windowing import Window
from .errors import DatasetError
from .io import Case, ImageData
from .io.datasets import load_case
from .io.names import image_suffix, strip_suffix


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result (and its speed)."""

    model_id: str = "lite_medsam"
    checkpoint: str | None = None
    device: str = "auto"
    strategy: str | None = None  # None: the model's default
    window_preset: str | None = None  # None (and no level/width): the model's default
    window_level: float | None = None
    window_width: float | None = None
    normalization: str = "fixed"
    batch_size: int = 4
    precision: str = "auto"
    disk_cache_dir: str | None = None  # None: no disk cache; "" : the user cache directory
    disk_cache_limit_mb: float = 2048.0

    def resolved_strategy(self) -> str:
        return self.strategy or get_spec(self.model_id).default_strategy

    def window(self) -> Window:
        if self.window_level is not None or self.window_width is not None:
            if self.window_level is None or self.window_width is None:
                raise ValueError("give both --window-level and --window-width")
            return Window(self.window_level, self.window_width, self.normalization)  # type: ignore[arg-type]
        preset = self.window_preset or get_spec(self.model_id).default_window
        return Window.preset(preset, self.normalization)  # type: ignore[arg-type]

    def segment_from_labels(
        self,
        segmenter: Segmenter,
        image: np.ndarray,
        truth: np.ndarray,
        *,
        case: str = "",
        **kwargs,
    ) -> VolumeResult:
        """:func:`core.volume.segment_from_labels` with this run's window, strategy and batch."""
        return segment_from_labels(
            segmenter,
            image,
            truth,
            window=self.window(),
            strategy=self.resolved_strategy(),
            batch_size=self.batch_size,
            case=case,
            **kwargs,
        )

    def make_segmenter(self) -> Segmenter:
        disk_cache = None
        if self.disk_cache_dir is not None:
            from .core.cache import DiskCache

            disk_cache = DiskCache(self.disk_cache_dir or None, self.disk_cache_limit_mb)
        return Segmenter.from_registry(
            self.model_id,
            self.checkpoint,
            self.device,
            precision=self.precision,
            disk_cache=disk_cache,
        )


@dataclass
class CaseResult:
    name: str
    scores: list[SliceScore]
    skipped_empty: int
    labels: np.ndarray
    image: ImageData
    seconds: float
    error: str | None = None
    image_path: Path | None = None
    extra: dict = field(default_factory=dict)


def evaluate_case(
    segmenter: Segmenter,
    case: Case,
    config: RunConfig,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CaseResult:
    """Segment one case from its ground truth and score every slice with lung."""
    t0 = time.perf_counter()
    image, truth = load_case(case)
    if truth is None:
        raise DatasetError(f"{case.image_path}: case {case.name} has no mask to score against")
    result = config.segment_from_labels(
        segmenter,
        image.data,
        truth,
        case=case.name,
        progress=progress,
        should_cancel=should_cancel,
    )
    labels = result.labels if image.data.ndim == 3 else result.labels[0]
    return CaseResult(
        case.name,
        result.scores,
        result.skipped_empty,
        labels,
        image,
        time.perf_counter() - t0,
        image_path=Path(case.image_path),
    )


def output_name(case: Case, suffix: str | None = None) -> str:
    """File name for a case's predicted mask, next to no user file."""
    src = Path(case.image_path).name
    ext_out = image_suffix(src) or ".nii.gz"
    if ext_out in (".jpg", ".jpeg", ".npy"):
        ext_out = ".png" if ext_out != ".npy" else ".nii.gz"
    return f"{strip_suffix(src)}_samlung{suffix or ext_out}"
