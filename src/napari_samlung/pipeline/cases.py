"""One case of a dataset: load it, segment it from its ground truth, score it.

Shared by the local and the Dask dataset runs (:mod:`.evaluate`, :mod:`.dask`)
and by anything that wants one case's scores without a run folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import RunConfig
from ..core.engine import Segmenter
from ..core.metrics import SliceScore
from ..errors import DatasetError, SamlungError
from ..io import Case, ImageData
from ..io.datasets import load_case
from ..io.names import NIFTI_SUFFIXES, RASTER_SUFFIXES, image_suffix, strip_suffix
from .auto import false_positive_slices
from .segment import image_shaped, segment_from_truth


@dataclass
class CaseResult:
    """A case's scores and predicted labels, or the reason it failed.

    Attributes
    ----------
    name : str
        The case name (``Case.name``).
    scores : list of SliceScore
        One per slice with lung, in slice order.
    skipped_empty : int
        Slices not scored because their ground truth has no lung.
    labels : ndarray of uint8
        Predicted lung labels {0, 1 left, 2 right}, shaped like the image
        (``(row, col)`` or ``(slice, row, col)``); empty for a failed case.
    image : ImageData or None
        The image as read; None for a failed case and for results that come
        back from a Dask worker (the volume is not shipped back).
    seconds : float
        Wall time of the case, in seconds.
    error : str or None
        Why the case failed; None when it was evaluated.
    image_path : Path or None
        The case's image file.
    false_positive_slices : int or None
        Automatic runs: slices given a mask where the ground truth has no lung;
        None for ground-truth-prompted runs (they write only slices with lung).
    """

    name: str
    scores: list[SliceScore]
    skipped_empty: int
    labels: np.ndarray
    image: ImageData | None
    seconds: float
    error: str | None = None
    image_path: Path | None = None
    false_positive_slices: int | None = None


def evaluate_case(
    segmenter: Segmenter,
    case: Case,
    config: RunConfig,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> CaseResult:
    """Segment one case from its ground truth and score every slice with lung.

    With ``config.strategy == "auto"`` the lungs come from the CT itself and
    the ground truth only scores (:func:`~.segment.segment_from_truth`).

    Parameters
    ----------
    segmenter : Segmenter
        From ``config.make_segmenter()``.
    case : Case
        From :func:`~napari_samlung.io.find_cases`; it must have a mask.
    config : RunConfig
        Window, strategy and batch size.
    progress, should_cancel : callable, optional
        ``progress(done, total)`` per slice; ``should_cancel()`` stops after a slice.

    Returns
    -------
    CaseResult

    Raises
    ------
    SamlungError
        When a file cannot be read, the mask does not fit the image, there is no
        mask, or the strategy is ``"auto"`` and the image is an X-ray.
    """
    t0 = time.perf_counter()
    image, truth = load_case(case)
    if truth is None:
        raise DatasetError(f"{case.image_path}: case {case.name} has no mask to score against")
    result = segment_from_truth(
        segmenter,
        image,
        truth,
        config,
        case=case.name,
        progress=progress,
        should_cancel=should_cancel,
    )
    return CaseResult(
        case.name,
        result.scores,
        result.skipped_empty,
        image_shaped(result.labels, image.data),
        image,
        time.perf_counter() - t0,
        image_path=Path(case.image_path),
        false_positive_slices=(
            false_positive_slices(result.written, truth) if config.is_auto else None
        ),
    )


def failed_case(case: Case, error: str) -> CaseResult:
    """The result of a case that could not be evaluated, carrying ``error``."""
    return CaseResult(
        case.name,
        [],
        0,
        np.zeros((0,), np.uint8),
        None,
        0.0,
        error=error,
        image_path=case.image_path,
    )


def describe_error(exc: BaseException) -> str:
    """One line for a failed case: our errors as they are, others with their type."""
    if isinstance(exc, SamlungError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def nothing_scored(res: CaseResult) -> list[str]:
    """A problem line for a case whose mask has no lung anywhere (zero scored slices)."""
    if res.scores:
        return []
    n = res.skipped_empty
    return [
        f"{res.name}: the mask has no lung on any of its {n} slice{'s' if n != 1 else ''}, "
        "so nothing was scored; check that it is the lung mask of this image"
    ]


def output_name(case: Case, suffix: str | None = None) -> str:
    """File name of a case's predicted mask: ``<stem>_samlung<suffix>``.

    Without ``suffix``: the image's own type, with JPEG written as PNG and
    ``.npy`` as ``.nii.gz``.
    """
    src = Path(case.image_path).name
    ext_out = image_suffix(src) or ".nii.gz"
    if ext_out in (".jpg", ".jpeg", ".npy"):
        ext_out = ".png" if ext_out != ".npy" else ".nii.gz"
    return f"{strip_suffix(src)}_samlung{suffix or ext_out}"


def mask_suffix(labels: np.ndarray) -> str:
    """The file type of a predicted mask: ``.nii.gz`` for a volume, ``.png`` for a 2D image."""
    return ".nii.gz" if np.ndim(labels) == 3 else ".png"


def mask_targets(out_dir: Path, case: Case) -> list[Path]:
    """The file(s) a case's predicted mask may be written to (``.npy``: 2D or 3D)."""
    suffix = image_suffix(case.image_path)
    if suffix in RASTER_SUFFIXES:
        suffixes = [".png"]
    elif suffix in NIFTI_SUFFIXES:
        suffixes = [".nii.gz"]
    else:
        suffixes = [".png", ".nii.gz"]
    return [Path(out_dir) / output_name(case, s) for s in suffixes]
