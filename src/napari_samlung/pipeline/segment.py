"""Segment one image headless, from one source of prompts, and score it where a truth exists.

The sources (exactly one per run):

- ``prompts_from``: a lung mask; prompts are built on every slice with lung
  (:func:`~napari_samlung.core.volume.segment_from_labels`) and the result is
  scored against that mask;
- ``propagate_from``: a prompts JSON with a few prompted slices, propagated
  through the volume (:func:`~napari_samlung.core.propagation.propagate`);
- ``seed_from``: the ground truth of one slice, propagated, and the result
  scored against the whole mask;
- ``auto``: no ground truth; prompts from the lungs found in the CT itself
  (:func:`~napari_samlung.core.auto.segment_auto`).

On CT (``ImageData.modality == "ct"``) the masks are checked against the CT's
air unless ``RunConfig.hu_refine`` is off: the ground-truth-prompted runs
refine each slice (``segment_from_labels(refine=True)``) and propagation is
guarded by the candidate lungs (``propagate(candidates=...)``).  X-rays are
never refined, and the automatic path refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.config import RunConfig
from ..core.engine import Segmenter
from ..core.lungs_hu import find_lung_candidates
from ..core.metrics import SliceScore, Summary, score_slice, summarize
from ..core.propagation import PropagationResult, Seed, propagate, seeds_from_labels
from ..core.volume import CancelFn, ProgressFn, VolumeResult, segment_from_labels
from ..errors import PromptError, SamlungError
from ..io import ImageData, read_image, read_mask
from ..io.outputs import check_output as check_output_path
from ..io.outputs import protecting
from .auto import require_ct, run_auto
from .export import check_output_fits, write_label_file


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
    written : list of int or None
        Slices the automatic path wrote a mask on; None for the other sources.
    inputs : list of Path
        The files the result was made from: :func:`write_result` never writes over them.
    """

    image: ImageData
    labels: np.ndarray
    scores: list[SliceScore] | None = None
    skipped_empty: int = 0
    propagation: PropagationResult | None = None
    seconds: float = 0.0
    written: list[int] | None = None
    inputs: list[Path] = field(default_factory=list)

    def summary(self) -> Summary:
        """The Dice/Jaccard summary over the scored slices."""
        return summarize(self.scores or [], self.skipped_empty)


def image_shaped(labels: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Labels of a one-slice volume ``(1, row, col)`` back to ``(row, col)`` for a 2D image."""
    return labels[0] if np.ndim(image) == 2 and labels.ndim == 3 else labels


def segment_from_truth(
    segmenter: Segmenter,
    image: ImageData,
    lung_labels: np.ndarray,
    config: RunConfig,
    *,
    case: str = "",
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> VolumeResult:
    """Segment every slice with lung from ground-truth prompts, and score it.

    :func:`~napari_samlung.core.volume.segment_from_labels` with the run's
    window, strategy and batch size, refined by the CT's air where
    ``config.refines(image.modality)``.  With the ``"auto"`` strategy the
    ground truth only scores: :func:`~napari_samlung.core.auto.segment_auto`
    finds the lungs in the CT (``VolumeResult.written`` then says which
    slices got a mask, see :func:`false_positive_slices`).

    Parameters
    ----------
    segmenter : Segmenter
        From ``config.make_segmenter()``.
    image : ImageData
        ``data`` ``(row, col)`` or ``(slice, row, col)``, in HU for CT.
    lung_labels : ndarray
        Ground truth {0, 1 left, 2 right} shaped like ``image.data``.
    config : RunConfig
        Supplies the window, the strategy, the batch size and ``hu_refine``.
    case : str
        Case name written into each :class:`SliceScore`.
    progress, should_cancel : callable, optional
        ``progress(done, total)`` per slice; ``should_cancel()`` stops after a slice.

    Returns
    -------
    VolumeResult
        Labels as a ``(slice, row, col)`` volume (one slice for a 2D image) and scores.

    Raises
    ------
    PromptError
        For the ``"auto"`` strategy on an X-ray.
    """
    if config.is_auto:
        return run_auto(
            segmenter,
            image,
            config,
            truth=lung_labels,
            case=case,
            progress=progress,
            should_cancel=should_cancel,
            fix="use a prompt strategy (e.g. --strategy per-lung)",
        )
    return segment_from_labels(
        segmenter,
        image.data,
        lung_labels,
        window=config.window(),
        strategy=config.resolved_strategy(),
        batch_size=config.batch_size,
        case=case,
        refine=config.refines(image.modality),
        spacing_zyx_mm=image.spacing_zyx_mm,
        progress=progress,
        should_cancel=should_cancel,
    )


def check_output(output: Path, inputs: Sequence[Path | None], overwrite: bool) -> None:
    """Refuse, before any work, an output that is an input or cannot be written.

    :func:`napari_samlung.io.outputs.check_output` with a probe of the folder:
    an input however spelt (``..``, a symlink, a hard link), whatever
    ``overwrite`` says; a folder, a missing or read-only folder, a full disk, a
    name too long or a symlink loop.

    Raises
    ------
    SamlungError
        Naming the output, the problem and the fix.
    """
    check_output_path(output, overwrite=overwrite, inputs=inputs, probe=True)


def segment_image(
    image_path: Path,
    config: RunConfig,
    *,
    prompts_from: Path | None = None,
    propagate_from: Path | None = None,
    seed_from: Path | None = None,
    seed_slice: int | None = None,
    auto: bool = False,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    output: Path | None = None,
) -> SegmentResult:
    """Read an image, segment it from exactly one source of prompts, score where possible.

    Parameters
    ----------
    image_path : Path
        A CT volume or an X-ray (any format :func:`~napari_samlung.io.read_image` reads).
    config : RunConfig
        Model, window, strategy, ``hu_refine`` and the automatic ``combine`` rule.
    prompts_from : Path, optional
        A lung mask: prompts on every slice with lung, scored against it.
    propagate_from : Path, optional
        A prompts JSON (``points_rc``, ``boxes_xyxy`` per slice) to propagate from.
    seed_from : Path, optional
        A lung mask whose slice ``seed_slice`` (default: the middle of the lung)
        seeds a propagation; the result is scored against the whole mask.
    seed_slice : int, optional
        Slice index for ``seed_from``.
    auto : bool
        No ground truth: the lungs found in the CT prompt the model (CT only).
    progress, should_cancel : callable, optional
        ``progress(done, total)`` per slice; ``should_cancel()`` stops after a
        slice (the result keeps the slices done).
    output : Path, optional
        Where the labels will go: checked against the image before any model call.

    Returns
    -------
    SegmentResult

    Raises
    ------
    SamlungError
        For an unreadable file, a mask that does not fit, a prompt that cannot
        work, or ``auto`` on an X-ray.
    """
    inputs = [Path(p) for p in (image_path, prompts_from, propagate_from, seed_from) if p]
    with protecting(inputs):  # nothing written during the run may be one of them
        result = _segment(
            image_path,
            config,
            prompts_from=prompts_from,
            propagate_from=propagate_from,
            seed_from=seed_from,
            seed_slice=seed_slice,
            auto=auto,
            progress=progress,
            should_cancel=should_cancel,
            output=output,
        )
    result.inputs = inputs
    return result


def _segment(
    image_path: Path,
    config: RunConfig,
    *,
    prompts_from: Path | None,
    propagate_from: Path | None,
    seed_from: Path | None,
    seed_slice: int | None,
    auto: bool,
    progress: ProgressFn | None,
    should_cancel: CancelFn | None,
    output: Path | None = None,
) -> SegmentResult:
    image = read_image(image_path)
    if output is not None:
        check_output_fits(output, image)  # before loading the model
    if auto:  # before loading the model
        require_ct(image, "prompt it with --prompts-from MASK or --propagate-from PROMPTS.json")
    segmenter = config.make_segmenter()
    if prompts_from is not None:
        truth = read_mask(prompts_from, like=image)
        if not truth.any():
            raise PromptError(
                f"{prompts_from}: the mask has no lung on any slice; nothing to build prompts from"
            )
        return segment_labelled(
            segmenter,
            image,
            truth,
            config,
            case=Path(image_path).name,
            progress=progress,
            should_cancel=should_cancel,
        )
    if propagate_from is not None:
        return _from_prompts_file(segmenter, image, propagate_from, config, progress, should_cancel)
    if seed_from is not None:
        truth = read_mask(seed_from, like=image)
        seeds = seeds_from_labels(truth, seed_slice)
        result = propagate_seeds(segmenter, image, seeds, config, progress, should_cancel)
        result.scores = score_volume(result.labels, truth)
        return result
    if auto:
        vol = run_auto(segmenter, image, config, progress=progress, should_cancel=should_cancel)
        return SegmentResult(
            image,
            image_shaped(vol.labels, image.data),
            seconds=vol.seconds,
            written=vol.written,
        )
    raise ValueError("give one of prompts_from, propagate_from, seed_from or auto")


def segment_labelled(
    segmenter: Segmenter,
    image: ImageData,
    lung_labels: np.ndarray,
    config: RunConfig,
    *,
    case: str = "",
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> SegmentResult:
    """Segment an image from prompts built on its ground truth, and score every slice.

    ``lung_labels`` are {0, 1 left, 2 right}, shaped like ``image.data``
    (:func:`segment_from_truth`).
    """
    result = segment_from_truth(
        segmenter,
        image,
        lung_labels,
        config,
        case=case,
        progress=progress,
        should_cancel=should_cancel,
    )
    return SegmentResult(
        image,
        image_shaped(result.labels, image.data),
        result.scores,
        result.skipped_empty,
        seconds=result.seconds,
        written=result.written if config.is_auto else None,
    )


def propagate_seeds(
    segmenter: Segmenter,
    image: ImageData,
    seeds: Sequence[Seed],
    config: RunConfig,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> SegmentResult:
    """Propagate ``seeds`` through the image; on CT guarded by its candidate lungs.

    With ``config.refines(image.modality)`` the candidates of
    :func:`~napari_samlung.core.lungs_hu.find_lung_candidates` and the voxel
    spacing go to :func:`~napari_samlung.core.propagation.propagate`: the
    walk stays in the lung and stops where its air ends.
    """
    candidates = None
    if config.refines(image.modality):
        candidates = find_lung_candidates(image.data, image.spacing_zyx_mm).lung_labels
    prop = propagate(
        segmenter,
        image.data,
        seeds,
        window=config.window(),
        candidates=candidates,
        spacing_zyx_mm=image.spacing_zyx_mm,
        progress=progress,
        should_cancel=should_cancel,
    )
    return SegmentResult(
        image, image_shaped(prop.labels, image.data), propagation=prop, seconds=prop.seconds
    )


def _from_prompts_file(
    segmenter: Segmenter,
    image: ImageData,
    path: Path,
    config: RunConfig,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
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
    return propagate_seeds(segmenter, image, seeds, config, progress, should_cancel)


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

    ``.dcm``: a DICOM SEG of the image's DICOM series; otherwise NIfTI or PNG.
    Never over one of ``result.inputs`` (nor the image's own file).
    """
    automatic = result.written is not None  # no person's prompts: an AUTOMATIC SEG segment
    inputs = [*result.inputs, result.image.source_path]
    return write_label_file(output, result.labels, result.image, overwrite, automatic, inputs)


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
