"""Segment one image headless, from one source of prompts, and score it where a truth exists.

The sources (exactly one per run):

- ``prompts_from``: a lung mask; prompts are built on every slice with lung
  (:func:`~napari_samlung.core.volume.segment_from_labels`) and the result is
  scored against that mask;
- ``propagate_from``: a prompts JSON with a few prompted slices, propagated
  through the volume (:func:`~napari_samlung.core.propagation.propagate`);
- ``seed_from``: the ground truth of one slice, propagated, and the result
  scored against the whole mask.

A further source (issue 11's ``auto``: prompts from the lungs found in the CT
itself) is one more keyword of :func:`segment_image` and one more ``_from_*``
function here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.config import RunConfig
from ..core.engine import Segmenter
from ..core.metrics import SliceScore, Summary, score_slice, summarize
from ..core.propagation import PropagationResult, propagate, seeds_from_labels
from ..core.volume import VolumeResult, segment_from_labels
from ..errors import PromptError, SamlungError
from ..io import ImageData, read_image, read_mask, write_labels
from ..io.atomic import check_writable


@dataclass
class SegmentResult:
    """One segmented image.

    Attributes
    ----------
    image : ImageData
        The image as read (its ``data`` is ``(row, col)`` or ``(slice, row, col)``).
    labels : ndarray of uint8
        Lung labels {0, 1 left, 2 right}, shaped like ``image.data``.
    scores : list of SliceScore or None
        Per-slice scores against the ground truth; None when there was none.
    skipped_empty : int
        Slices not scored because their ground truth has no lung.
    propagation : PropagationResult or None
        How a propagation went (slices written, why it stopped).
    seconds : float
        Wall time of the segmentation, in seconds.
    """

    image: ImageData
    labels: np.ndarray
    scores: list[SliceScore] | None = None
    skipped_empty: int = 0
    propagation: PropagationResult | None = None
    seconds: float = 0.0

    def summary(self) -> Summary:
        """The Dice/Jaccard summary over the scored slices."""
        return summarize(self.scores or [], self.skipped_empty)


def image_shaped(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Labels of a one-slice volume ``(1, row, col)`` back to ``(row, col)`` for a 2D image."""
    return labels[0] if np.ndim(image) == 2 and labels.ndim == 3 else labels


def segment_from_truth(
    segmenter: Segmenter,
    image: np.ndarray,
    lung_labels: np.ndarray,
    config: RunConfig,
    *,
    case: str = "",
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> VolumeResult:
    """Segment every slice with lung from ground-truth prompts, and score it.

    :func:`~napari_samlung.core.volume.segment_from_labels` with the run's
    window, strategy and batch size.

    Parameters
    ----------
    segmenter : Segmenter
        From ``config.make_segmenter()``.
    image : ndarray
        ``(row, col)`` or ``(slice, row, col)``, in HU for CT.
    lung_labels : ndarray
        Ground truth {0, 1 left, 2 right} shaped like ``image``.
    config : RunConfig
        Supplies the window, the strategy and the batch size.
    case : str
        Case name written into each :class:`SliceScore`.
    progress, should_cancel : callable, optional
        ``progress(done, total)`` per slice; ``should_cancel()`` stops after a slice.

    Returns
    -------
    VolumeResult
        Labels as a ``(slice, row, col)`` volume (one slice for a 2D image) and scores.
    """
    return segment_from_labels(
        segmenter,
        image,
        lung_labels,
        window=config.window(),
        strategy=config.resolved_strategy(),
        batch_size=config.batch_size,
        case=case,
        progress=progress,
        should_cancel=should_cancel,
    )


def check_output(output: Path, inputs: Sequence[Path | None], overwrite: bool) -> None:
    """Refuse, before any work, an output that is an input or cannot be written.

    Raises
    ------
    SamlungError
        When ``output`` is one of ``inputs``, exists without ``overwrite``, is a
        folder or has no parent folder.
    """
    if any(p is not None and Path(p).resolve() == Path(output).resolve() for p in inputs):
        raise SamlungError(f"{output} is one of the input files; choose another output name")
    check_writable(output, overwrite)


def segment_image(
    image_path: Path,
    config: RunConfig,
    *,
    prompts_from: Path | None = None,
    propagate_from: Path | None = None,
    seed_from: Path | None = None,
    seed_slice: int | None = None,
) -> SegmentResult:
    """Read an image, segment it from exactly one source of prompts, score where possible.

    Parameters
    ----------
    image_path : Path
        A CT volume or an X-ray (any format :func:`~napari_samlung.io.read_image` reads).
    config : RunConfig
        Model, window, strategy.
    prompts_from : Path, optional
        A lung mask: prompts on every slice with lung, scored against it.
    propagate_from : Path, optional
        A prompts JSON (``points_rc``, ``boxes_xyxy`` per slice) to propagate from.
    seed_from : Path, optional
        A lung mask whose slice ``seed_slice`` (default: the middle of the lung)
        seeds a propagation; the result is scored against the whole mask.
    seed_slice : int, optional
        Slice index for ``seed_from``.

    Returns
    -------
    SegmentResult

    Raises
    ------
    SamlungError
        For an unreadable file, a mask that does not fit, or a prompt that cannot work.
    """
    image = read_image(image_path)
    segmenter = config.make_segmenter()
    if prompts_from is not None:
        truth = read_mask(prompts_from, like=image)
        if not truth.any():
            raise PromptError(
                f"{prompts_from}: the mask has no lung on any slice; nothing to build prompts from"
            )
        return segment_labelled(segmenter, image, truth, config, case=Path(image_path).name)
    if propagate_from is not None:
        return _from_prompts_file(segmenter, image, propagate_from, config)
    if seed_from is not None:
        return _from_seed(segmenter, image, read_mask(seed_from, like=image), seed_slice, config)
    # issue 11: the `auto` source (candidate lungs from the CT -> prompts) goes here
    raise ValueError("give one of prompts_from, propagate_from or seed_from")


def segment_labelled(
    segmenter: Segmenter,
    image: ImageData,
    lung_labels: np.ndarray,
    config: RunConfig,
    *,
    case: str = "",
) -> SegmentResult:
    """Segment an image from prompts built on its ground truth, and score every slice.

    ``lung_labels`` are {0, 1 left, 2 right}, shaped like ``image.data``.
    """
    result = segment_from_truth(segmenter, image.data, lung_labels, config, case=case)
    return SegmentResult(
        image,
        image_shaped(result.labels, image.data),
        result.scores,
        result.skipped_empty,
        seconds=result.seconds,
    )


def _from_prompts_file(
    segmenter: Segmenter, image: ImageData, path: Path, config: RunConfig
) -> SegmentResult:
    from ..core.prompts import validate_prompt
    from ..io.tables import seeds_from_json

    seeds = seeds_from_json(path, image.data.shape)
    for seed in seeds:  # name the file and slice of a prompt that cannot work
        try:
            for p in seed.prompts:
                validate_prompt(p, image.data.shape[-2:], segmenter.accepts_points)
        except PromptError as exc:
            raise PromptError(f"{path}: slice {seed.slice_index}: {exc}") from None
    prop = propagate(segmenter, image.data, seeds, window=config.window())
    return SegmentResult(
        image, image_shaped(prop.labels, image.data), propagation=prop, seconds=prop.seconds
    )


def _from_seed(
    segmenter: Segmenter,
    image: ImageData,
    truth: np.ndarray,
    seed_slice: int | None,
    config: RunConfig,
) -> SegmentResult:
    seeds = seeds_from_labels(truth, seed_slice)
    prop = propagate(segmenter, image.data, seeds, window=config.window())
    return SegmentResult(
        image,
        image_shaped(prop.labels, image.data),
        scores=score_volume(prop.labels, truth),
        propagation=prop,
        seconds=prop.seconds,
    )


def score_volume(labels: np.ndarray, lung_labels: np.ndarray) -> list[SliceScore]:
    """Score every slice whose ground truth has lung.

    Parameters
    ----------
    labels, lung_labels : ndarray
        Predicted and true lung labels, both ``(slice, row, col)`` (or both ``(row, col)``).

    Returns
    -------
    list of SliceScore
        One per slice with lung, in slice order.
    """
    pred, truth = np.asarray(labels), np.asarray(lung_labels)
    if truth.ndim == 2:
        pred, truth = pred.reshape((1, *truth.shape)), truth[None]
    return [
        s
        for z in range(truth.shape[0])
        if (s := score_slice(pred[z], truth[z], slice_index=z)) is not None
    ]


def write_result(result: SegmentResult, output: Path, overwrite: bool = False) -> Path:
    """Write the labels next to nothing of the user's (atomic; on the image's grid).

    Returns
    -------
    Path
        The file written.
    """
    return write_labels(output, result.labels, like=result.image, overwrite=overwrite)


def demo_inputs(
    image_path: Path | None, labels_path: Path | None
) -> tuple[ImageData, np.ndarray | None]:
    """The demo's image and lung labels: the phantom, or the user's files.

    Raises
    ------
    SamlungError
        When ``labels_path`` comes without ``image_path``.
    """
    from ..io.phantom import make_phantom

    if image_path is None:
        if labels_path is not None:
            raise SamlungError("--labels needs --image")
        return make_phantom()
    image = read_image(image_path)
    labels = read_mask(labels_path, like=image) if labels_path is not None else None
    return image, labels
