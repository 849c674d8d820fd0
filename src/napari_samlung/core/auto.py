"""Automatic CT segmentation without ground truth: air candidates -> prompts -> model -> rule.

1. :func:`~.lungs_hu.find_lung_candidates` finds the aerated lungs of the
   whole volume from its Hounsfield units;
2. every slice with candidate lung gets one prompt per lung: the lung's box,
   slightly enlarged, plus an interior positive point for models that take
   points (:func:`~.prompts.lung_prompts`);
3. the segmenter runs on those prompts;
4. the model's masks and the candidates are combined by ``combine``:
   ``"refined"`` (:func:`~.refine.refine_with_candidates`: the candidate, plus
   what the model adds that the aerated lung encloses), ``"model"`` or
   ``"candidates"`` (no model call at all).  ``docs/auto.md`` measures them.

A slice without candidate lung is never written, so nothing leaks into the
liver, the bowel or the neck.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np

from ..errors import ShapeMismatchError
from .engine import Segmenter
from .lungs_hu import air_threshold, find_lung_candidates, partly_aerated_level, spacing_3d
from .metrics import score_slice
from .prompts import boxes_mask, lung_prompts
from .refine import refine_with_candidates
from .volume import CancelFn, ProgressFn, SliceResult, VolumeResult, as_volume, collect
from .windowing import Window, is_prewindowed, to_rgb

Combine = Literal["refined", "model", "candidates"]
COMBINE_RULES: tuple[str, ...] = ("refined", "model", "candidates")
#: The run strategy name of the automatic path (``evaluate --strategy auto``): not a prompt
#: strategy of :data:`~.prompts.STRATEGIES`, as its prompts come from the CT, not a mask.
AUTO_STRATEGY = "auto"


def iter_segment_auto(
    segmenter: Segmenter | None,
    image: np.ndarray,
    *,
    window: Window,
    spacing_zyx_mm: tuple[float, ...] | None = None,
    combine: Combine = "refined",
    candidates: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    slices: Iterable[int] | None = None,
    batch_size: int = 4,
    case: str = "",
) -> Iterator[SliceResult]:
    """Yield one :class:`~.volume.SliceResult` per slice with candidate lung, in order.

    Parameters
    ----------
    segmenter
        The model; may be ``None`` with ``combine="candidates"``.
    image
        CT ``(slice, row, col)`` in HU (or windowed uint8), or one ``(row, col)`` slice.
    window
        The CT window the model sees.
    spacing_zyx_mm
        Voxel spacing in mm, one entry per axis of ``image``.
    combine
        The rule that makes the final mask (see the module docstring).
    candidates
        Precomputed candidate labels (same shape as ``image``); found here when None.
    truth
        Optional ground truth, used only to score the slices (``metrics``).
    slices
        Slice indices to consider (default: all).
    batch_size
        Slices embedded per encoder call.
    case
        Case name for the scores.
    """
    if combine not in COMBINE_RULES:
        raise ValueError(f"combine must be one of {', '.join(COMBINE_RULES)}, got {combine!r}")
    volume = as_volume(image)
    spacing = spacing_3d(spacing_zyx_mm, np.ndim(image))
    threshold, air = air_threshold(volume, is_prewindowed(volume))
    level = partly_aerated_level(threshold, air)
    if candidates is None:
        candidates = find_lung_candidates(volume, spacing).lung_labels
    cand = as_volume(candidates)
    gt = None if truth is None else as_volume(truth)
    if cand.shape != volume.shape or (gt is not None and gt.shape != volume.shape):
        raise ShapeMismatchError(
            f"image {volume.shape}, candidates {cand.shape} and ground truth "
            f"{None if gt is None else gt.shape} must have the same shape"
        )
    indices = range(volume.shape[0]) if slices is None else slices
    todo = [int(z) for z in indices if cand[int(z)].any()]
    step = max(1, batch_size)
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        t0 = time.perf_counter()
        rgbs: list[np.ndarray | None] = [None] * len(chunk)
        if combine != "candidates":
            rgbs = [to_rgb(volume[z], window) for z in chunk]
            segmenter.embed_many(rgbs, batch_size=batch_size)
        embed_share = (time.perf_counter() - t0) / len(chunk)
        for z, rgb in zip(chunk, rgbs, strict=True):
            t1 = time.perf_counter()
            labels, iou, boxes = _segment_one(segmenter, rgb, cand[z], combine)
            if combine == "refined":
                labels = refine_with_candidates(
                    labels,
                    cand[z],
                    tuple(spacing[1:]),
                    image=volume[z],
                    partly_aerated=level,
                    region=boxes,
                )
            seconds = embed_share + time.perf_counter() - t1
            metrics = None
            if gt is not None and gt[z].any():
                metrics = score_slice(
                    labels, gt[z], case=case, slice_index=z, score=iou, seconds=seconds
                )
            yield SliceResult(z, labels, iou, seconds, metrics)


def _segment_one(
    segmenter: Segmenter | None,
    rgb: np.ndarray | None,
    candidate_2d: np.ndarray,
    combine: Combine,
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """The slice's labels, mean predicted IoU and the prompts' boxes (None without a model)."""
    if combine == "candidates" or segmenter is None:
        return candidate_2d.astype(np.uint8), float("nan"), None
    prompts = lung_prompts(candidate_2d, segmenter.accepts_points)
    labels, iou = segmenter.segment_slice(rgb, prompts, validate=False)
    return labels, iou, boxes_mask(prompts, labels.shape)


def segment_auto(
    segmenter: Segmenter | None,
    image: np.ndarray,
    *,
    window: Window,
    spacing_zyx_mm: tuple[float, ...] | None = None,
    combine: Combine = "refined",
    truth: np.ndarray | None = None,
    batch_size: int = 4,
    case: str = "",
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    out: np.ndarray | None = None,
) -> VolumeResult:
    """Segment a whole CT automatically (see :func:`iter_segment_auto`).

    ``progress(done, total)`` counts the slices with candidate lung; a run
    cancelled through ``should_cancel()`` keeps its completed slices.  With
    ``truth`` the slices with lung are scored (``scores``), and
    ``VolumeResult.written`` says which slices got a mask, so slices written
    outside the true lung can be counted.
    """
    volume = as_volume(image)
    spacing = spacing_3d(spacing_zyx_mm, np.ndim(image))
    candidates = find_lung_candidates(volume, spacing).lung_labels
    total = int(candidates.reshape(len(candidates), -1).any(axis=1).sum())
    results = iter_segment_auto(
        segmenter,
        volume,
        window=window,
        spacing_zyx_mm=spacing,
        combine=combine,
        candidates=candidates,
        truth=truth,
        batch_size=batch_size,
        case=case,
    )
    skipped = 0
    if truth is not None:
        gt = as_volume(truth)
        skipped = int((~gt.reshape(len(gt), -1).any(axis=1)).sum())
    return collect(
        results,
        volume.shape,
        total=total,
        skipped_empty=skipped,
        progress=progress,
        should_cancel=should_cancel,
        out=out,
    )
