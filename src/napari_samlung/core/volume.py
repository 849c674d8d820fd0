"""Whole-volume runs: segment every slice with lung from ground-truth prompts,
with progress, cancellation and batched embeddings."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import ShapeMismatchError
from .engine import Segmenter
from .lungs_hu import find_lung_candidates, spacing_3d
from .metrics import SliceScore, Summary, score_slice, summarize
from .prompts import Strategy, boxes_mask, get_strategy, prompts_from_labels
from .refine import refine_with_candidates
from .windowing import Window, to_rgb

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


@dataclass
class SliceResult:
    """One segmented slice."""

    slice_index: int
    labels: np.ndarray  # (rows, cols) uint8
    predicted_iou: float  # mean of the model's predicted IoU over the slice's prompts
    seconds: float
    metrics: SliceScore | None = None


@dataclass
class VolumeResult:
    labels: np.ndarray  # (slices, rows, cols) uint8
    scores: list[SliceScore] = field(default_factory=list)
    skipped_empty: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    written: list[int] = field(default_factory=list)  # slice indices this run wrote

    def summary(self) -> Summary:
        return summarize(self.scores, self.skipped_empty)


def as_volume(array: np.ndarray) -> np.ndarray:
    """View a 2D image as a one-slice volume; 3D passes through."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise ShapeMismatchError(f"expected a 2D image or a 3D volume, got shape {array.shape}")
    return array


def iter_segment_from_labels(
    segmenter: Segmenter,
    image: np.ndarray,
    lung_labels: np.ndarray,
    *,
    window: Window,
    strategy: str | Strategy = "per-lung",
    slices: Iterable[int] | None = None,
    batch_size: int = 4,
    case: str = "",
    refine: bool = False,
    spacing_zyx_mm: tuple[float, ...] | None = None,
) -> Iterator[SliceResult]:
    """Yield one :class:`SliceResult` per slice with lung, in order.

    Embeddings are computed ``batch_size`` slices at a time.  Slices whose
    ground truth is empty are not yielded.  With ``refine`` (CT only), each
    slice's masks are checked against the CT's air inside the prompts' boxes
    (:func:`~.refine.refine_with_candidates`); ``spacing_zyx_mm`` is the voxel
    spacing in mm, one entry per axis of ``image``.
    """
    volume = as_volume(image)
    truth = as_volume(lung_labels)
    if volume.shape != truth.shape:
        raise ShapeMismatchError(
            f"image shape {volume.shape} and mask shape {truth.shape} differ; use the mask "
            "made for this image"
        )
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    indices = range(volume.shape[0]) if slices is None else slices
    todo = [int(z) for z in indices if truth[int(z)].any()]
    air = None
    if refine:
        spacing = spacing_3d(spacing_zyx_mm, np.ndim(image))
        found = find_lung_candidates(volume, spacing)
        air, air_level = as_volume(found.lung_labels), found.partly_aerated
        spacing_rc = tuple(spacing[1:])
    for start in range(0, len(todo), max(1, batch_size)):
        chunk = todo[start : start + max(1, batch_size)]
        t0 = time.perf_counter()
        rgbs = [to_rgb(volume[z], window) for z in chunk]
        segmenter.embed_many(rgbs, batch_size=batch_size)
        embed_share = (time.perf_counter() - t0) / len(chunk)
        for z, rgb in zip(chunk, rgbs, strict=True):
            t1 = time.perf_counter()
            prompts = prompts_from_labels(truth[z], strat, segmenter.accepts_points)
            labels, iou = segmenter.segment_slice(rgb, prompts, strategy=strat, validate=False)
            if air is not None:
                boxes = boxes_mask(prompts, labels.shape)
                labels = refine_with_candidates(
                    labels,
                    air[z] * boxes,
                    spacing_rc,
                    image=volume[z],
                    partly_aerated=air_level,
                    region=boxes,
                )
            seconds = embed_share + time.perf_counter() - t1
            metrics = score_slice(
                labels, truth[z], case=case, slice_index=z, score=iou, seconds=seconds
            )
            yield SliceResult(z, labels, iou, seconds, metrics)


def segment_from_labels(
    segmenter: Segmenter,
    image: np.ndarray,
    lung_labels: np.ndarray,
    *,
    window: Window,
    strategy: str | Strategy = "per-lung",
    slices: Iterable[int] | None = None,
    batch_size: int = 4,
    case: str = "",
    refine: bool = False,
    spacing_zyx_mm: tuple[float, ...] | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    out: np.ndarray | None = None,
) -> VolumeResult:
    """Segment every slice with lung and score it.

    ``progress(done, total)`` is called after each slice; when
    ``should_cancel()`` turns true the run stops after the current slice and
    every completed slice stays in the result (``cancelled=True``).  Results
    are written into ``out`` (same shape as the image) when given.  ``refine``
    and ``spacing_zyx_mm``: see :func:`iter_segment_from_labels`.
    """
    volume = as_volume(image)
    truth = as_volume(lung_labels)
    indices = list(range(volume.shape[0]) if slices is None else slices)
    todo = [z for z in indices if truth[z].any()]
    results = iter_segment_from_labels(
        segmenter,
        volume,
        truth,
        window=window,
        strategy=strategy,
        slices=indices,
        batch_size=batch_size,
        case=case,
        refine=refine,
        spacing_zyx_mm=spacing_zyx_mm,
    )
    return collect(
        results,
        volume.shape,
        total=len(todo),
        skipped_empty=len(indices) - len(todo),
        progress=progress,
        should_cancel=should_cancel,
        out=out,
    )


def collect(
    results: Iterator[SliceResult],
    shape: tuple[int, ...],
    *,
    total: int,
    skipped_empty: int = 0,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    out: np.ndarray | None = None,
) -> VolumeResult:
    """Write a run's slices into one label volume, with progress and cancellation.

    ``shape`` is the ``(slice, row, col)`` shape of the labels; ``total`` the
    number of slices the run will yield (for ``progress(done, total)``).
    """
    t0 = time.perf_counter()
    labels = np.zeros(shape, np.uint8) if out is None else as_volume(out)
    result = VolumeResult(labels=labels, skipped_empty=skipped_empty)
    done = 0
    for res in results:
        labels[res.slice_index] = res.labels
        result.written.append(res.slice_index)
        if res.metrics is not None:
            result.scores.append(res.metrics)
        done += 1
        if progress is not None:
            progress(done, total)
        if should_cancel is not None and should_cancel():
            result.cancelled = done < total
            break
    result.seconds = time.perf_counter() - t0
    return result
