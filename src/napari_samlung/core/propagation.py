"""Propagation through a volume from a few prompted slices (no ground truth needed).

The user prompts one slice or a few.  From each prompted ("seed") slice the
segmentation walks up and down the volume: the next slice's prompts come from
the previous slice's result (one box per lung from its mask, slightly
enlarged, plus a positive point at the mask's most interior pixel for models
that accept points).  A lung stops being followed in a direction when its
area falls below ``min_area_px``, its predicted IoU below ``min_score``, or
its area jumps by more than ``max_area_change`` (a leak into the body or a
collapse).  Each seed owns the slices nearer to it than to any other seed, so
a correction on one slice re-propagates only its own stretch.

Guarded by the CT's air (``candidates``, from :mod:`.lungs_hu`): the next
slice's prompt for a lung is the box of the candidate air on that slice that
the previous slice's lung overlaps, and the model's mask is checked against
that air (:func:`~.refine.refine_with_candidates`).  A lung stops where its
candidate air ends, so no mask is written on a slice without aerated lung, and
propagation does not run into the liver, the heart or the bowel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import PromptError
from .engine import Segmenter
from .masks import combine_masks
from .prompts import Prompt, boxes_mask, lung_prompts, per_lung_prompts, validate_prompt
from .refine import assign_air_to_lungs, refine_with_candidates
from .volume import as_volume
from .windowing import Window, to_rgb


@dataclass
class Seed:
    """User (or ground-truth) prompts on one slice."""

    slice_index: int
    prompts: list[Prompt]


@dataclass
class PropagationResult:
    labels: np.ndarray  # (slices, rows, cols) uint8
    written: list[int] = field(default_factory=list)  # slice indices this run wrote
    predicted_iou: dict[int, float] = field(default_factory=dict)  # mean per written slice
    stop_reasons: list[str] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0

    @property
    def segmented_slices(self) -> int:
        return len(self.written)


@dataclass(frozen=True)
class PropagationSettings:
    min_area_px: int = 30
    min_score: float = 0.5
    max_area_change: float = 2.0  # next/previous area ratio beyond which a lung stops
    box_margin_frac: float = 0.05  # box enlargement, fraction of its size (at least 2 px)


def seeds_from_labels(lung_labels: np.ndarray, slice_index: int | None = None) -> list[Seed]:
    """One seed from the ground truth of one slice (default: the middle of the lung's extent)."""
    truth = as_volume(lung_labels)
    with_lung = np.flatnonzero(truth.reshape(truth.shape[0], -1).any(axis=1))
    if with_lung.size == 0:
        raise PromptError("the mask has no lung on any slice; nothing to seed from")
    if slice_index is None:
        slice_index = int(with_lung[len(with_lung) // 2])
    if not 0 <= slice_index < truth.shape[0]:
        last = truth.shape[0] - 1
        raise PromptError(f"seed slice {slice_index} is outside the volume (0..{last})")
    if not truth[slice_index].any():
        raise PromptError(f"slice {slice_index} of the mask has no lung; choose a slice with lung")
    return [Seed(slice_index, per_lung_prompts(truth[slice_index], accepts_points=True))]


def guide_air(previous_2d: np.ndarray, candidates_2d: np.ndarray, reach_px: int = 2) -> np.ndarray:
    """The candidate air of a slice that continues the previous slice's lungs.

    Each connected piece of candidate air joins the lung of ``previous_2d``
    (dilated by ``reach_px`` pixels) that it overlaps most.  A piece that
    touches no previous lung joins the lung whose candidate label it shares
    (candidate labels are consistent in 3D), or, when no air is named after
    that candidate lung yet, becomes the lung of its own side (the side rule of
    the candidates and of the lung labels is the same): a seed may hold one
    lung only (a correction of one lung, or a slice below the other lung's
    base), or a model mask that missed its lung's air, and the walk must not
    drop that lung from the stretch it rewrites.  uint8 (row, col) labels,
    named like ``previous_2d``.
    """
    grown = np.zeros_like(previous_2d)
    for value in (int(v) for v in np.unique(previous_2d) if v > 0):
        mask = previous_2d == value
        reach = ndi.binary_dilation(mask, iterations=reach_px) if reach_px else mask
        grown[reach & (grown == 0)] = value
    guide = assign_air_to_lungs(candidates_2d > 0, candidates_2d, grown, keep_unmatched=False)
    loose = (candidates_2d > 0) & (guide == 0)
    if not loose.any():
        return guide
    name_of = {}  # candidate label -> lung name, from the pieces already named
    for candidate in (1, 2):
        names = guide[(candidates_2d == candidate) & (guide > 0)]
        if names.size:
            name_of[candidate] = int(np.bincount(names).argmax())
    for candidate in (1, 2):
        piece = loose & (candidates_2d == candidate)
        if not piece.any():
            continue
        if candidate not in name_of:
            unused = [v for v in (candidate, 3 - candidate) if v not in name_of.values()]
            if not unused:
                continue
            name_of[candidate] = unused[0]  # the candidate's own side, when it is free
        guide[piece] = name_of[candidate]
    return guide


def _accept(
    labels: np.ndarray,
    previous: np.ndarray,
    predicted_iou: dict[int, float],
    settings: PropagationSettings,
    guided: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Drop lungs that fail the stopping rules; say why.

    ``previous`` is what the area of each lung is compared with: the previous
    slice's labels, or, when the walk is ``guided``, this slice's air that
    continues each lung (the area may change fast between slices at the
    lung's base and apex, but not away from the air it was prompted from).
    In a guided walk a lung whose mask fails the IoU or area-jump rule keeps
    its air instead (the model strayed; the lung did not end).
    """
    reasons = []
    kept = labels.copy()
    for value in (int(v) for v in np.unique(labels) if v > 0):
        area = int(np.count_nonzero(labels == value))
        prev_area = int(np.count_nonzero(previous == value))
        why = None
        if area < settings.min_area_px:
            why = "area below threshold"
        elif predicted_iou.get(value, 1.0) < settings.min_score:
            why = "low predicted IoU"
        elif prev_area and not (
            1.0 / settings.max_area_change <= area / prev_area <= settings.max_area_change
        ):
            why = "implausible area jump"
        if why:
            kept[labels == value] = 0
            air = previous == value
            if guided and why != "area below threshold" and air.sum() >= settings.min_area_px:
                kept[air & (kept == 0)] = value
            else:
                reasons.append(why)
    for value in (int(v) for v in np.unique(previous) if v > 0):
        if value not in labels:
            reasons.append("lung vanished")
    return kept, reasons


def propagate(
    segmenter: Segmenter,
    image: np.ndarray,
    seeds: Sequence[Seed],
    *,
    window: Window,
    settings: PropagationSettings = PropagationSettings(),
    out: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    on_slice: Callable[[int, np.ndarray], None] | None = None,
    candidates: np.ndarray | None = None,
    spacing_zyx_mm: tuple[float, ...] = (1.0, 1.0, 1.0),
) -> PropagationResult:
    """Segment the seed slices, then walk away from each seed up and down the volume.

    ``on_slice(z, labels_2d)`` is called for every slice written (the widget
    uses it to show results as they come).  ``candidates``, the air candidates
    of the volume (uint8 ``(slice, row, col)`` lung labels, see
    :func:`~.lungs_hu.find_lung_candidates`), guard the walk (module
    docstring); ``spacing_zyx_mm`` is the voxel spacing in mm.
    """
    t0 = time.perf_counter()
    volume = as_volume(image)
    n = volume.shape[0]
    labels = np.zeros(volume.shape, np.uint8) if out is None else as_volume(out)
    result = PropagationResult(labels)
    seed_slices = sorted({s.slice_index for s in seeds})
    # each seed owns the slices nearer to it than to any other seed
    bounds = {}
    for i, z in enumerate(seed_slices):
        lo = 0 if i == 0 else (seed_slices[i - 1] + z) // 2 + 1
        hi = n - 1 if i == len(seed_slices) - 1 else (z + seed_slices[i + 1]) // 2
        bounds[z] = (lo, hi)
    done = 0

    def write(z: int, lab: np.ndarray, iou: float) -> None:
        nonlocal done
        labels[z] = lab
        result.written.append(z)
        result.predicted_iou[z] = iou
        done += 1
        if on_slice is not None:
            on_slice(z, lab)
        if progress is not None:
            progress(done, n)

    air = None if candidates is None else as_volume(candidates)
    spacing_rc = tuple(spacing_zyx_mm[-2:])

    def segment(
        z: int, prompts: list[Prompt], guide: np.ndarray | None = None
    ) -> tuple[np.ndarray, dict[int, float]]:
        rgb = to_rgb(volume[z], window)
        checked = [validate_prompt(p, rgb.shape[:2], segmenter.accepts_points) for p in prompts]
        pred = segmenter.predict(segmenter.embed(rgb), checked)
        lab = combine_masks(pred, checked)
        per_label = {
            int(lab[m].max()) if m.any() and lab[m].any() else p.target_label: float(s)
            for p, s, m in zip(checked, pred.predicted_iou, pred.masks, strict=True)
            if p.target_label is not None
        }
        if air is not None:
            if guide is None:  # a seed: the air its own masks overlap
                guide = guide_air(lab, air[z], reach_px=0)
            lab = refine_with_candidates(
                lab, guide, spacing_rc, region=boxes_mask(checked, lab.shape)
            )
        return lab, per_label

    for seed in sorted(seeds, key=lambda s: s.slice_index):
        if should_cancel is not None and should_cancel():
            result.cancelled = True
            break
        z0 = seed.slice_index
        seed_labels, _ = segment(z0, seed.prompts)
        write(z0, seed_labels, float("nan"))
        lo, hi = bounds[z0]
        for step in (-1, 1):
            previous = seed_labels
            z = z0 + step
            while lo <= z <= hi and previous.any():
                if should_cancel is not None and should_cancel():
                    result.cancelled = True
                    break
                guide = None if air is None else guide_air(previous, air[z])
                if guide is not None and not guide.any():
                    result.stop_reasons.append(f"slice {z}: no aerated lung (CT air) here")
                    break
                source = previous if guide is None else guide
                prompts = lung_prompts(source, segmenter.accepts_points, settings.box_margin_frac)
                lab, iou = segment(z, prompts, guide)
                reference = previous if guide is None else guide
                kept, reasons = _accept(lab, reference, iou, settings, guided=guide is not None)
                if not kept.any():
                    result.stop_reasons.append(
                        f"slice {z}: {', '.join(sorted(set(reasons))) or 'nothing found'}"
                    )
                    break
                write(z, kept, float(np.mean(list(iou.values()))) if iou else float("nan"))
                previous = kept
                z += step
            if result.cancelled:
                break
        if result.cancelled:
            break
    result.seconds = time.perf_counter() - t0
    return result
