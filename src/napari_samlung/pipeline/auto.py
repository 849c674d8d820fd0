"""The automatic path of a headless run: no ground truth, CT only.

:func:`run_auto` wraps :func:`~napari_samlung.core.auto.segment_auto` with a
run's settings and scores the result where a ground truth exists (the truth
never prompts); :func:`false_positive_slices` counts what it wrote where the
truth has no lung.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.auto import segment_auto
from ..core.config import RunConfig
from ..core.engine import Segmenter
from ..core.metrics import SliceScore, score_slice
from ..core.volume import CancelFn, ProgressFn, VolumeResult, as_volume
from ..errors import PromptError
from ..io import ImageData


def require_ct(image: ImageData, fix: str) -> None:
    """Refuse an X-ray for the automatic path, in one line that ends with ``fix``.

    Raises
    ------
    PromptError
        When ``image.modality`` is not ``"ct"``.
    """
    if image.modality != "ct":
        name = image.source_path.name if image.source_path is not None else "the image"
        raise PromptError(
            f"{name}: automatic lung finding needs a CT in HU (an X-ray has no Hounsfield "
            f"units); {fix}"
        )


def run_auto(
    segmenter: Segmenter,
    image: ImageData,
    config: RunConfig,
    *,
    truth: np.ndarray | None = None,
    case: str = "",
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    fix: str = "use a prompt strategy",
) -> VolumeResult:
    """:func:`~napari_samlung.core.auto.segment_auto` with the run's window, rule and batch
    size; ``truth`` (optional) only scores.  An X-ray is refused (:func:`require_ct`).

    A slice with true lung where no lung was found is scored too (Dice 0, an
    empty prediction), unless the run was cancelled.
    """
    require_ct(image, fix)
    result = segment_auto(
        segmenter,
        image.data,
        window=config.window(),
        spacing_zyx_mm=image.spacing_zyx_mm,
        combine=config.combine,  # type: ignore[arg-type]
        truth=truth,
        batch_size=config.batch_size,
        case=case,
        progress=progress,
        should_cancel=should_cancel,
    )
    if truth is not None and not result.cancelled:
        result.scores = _with_missed_slices(result, truth, case)
    return result


def _with_missed_slices(
    result: VolumeResult, lung_labels: np.ndarray, case: str
) -> list[SliceScore]:
    """The run's scores plus those of the slices with true lung it wrote nothing on."""
    truth, written = as_volume(lung_labels), set(result.written)
    missed = [
        score_slice(result.labels[z], truth[z], case=case, slice_index=z)
        for z in range(truth.shape[0])
        if z not in written and truth[z].any()
    ]
    return sorted(result.scores + missed, key=lambda s: s.slice_index)


def false_positive_slices(written: Sequence[int], lung_labels: np.ndarray) -> int:
    """How many of the ``written`` slices have no lung in the ground truth."""
    truth = as_volume(lung_labels)
    return sum(1 for z in written if not truth[z].any())
