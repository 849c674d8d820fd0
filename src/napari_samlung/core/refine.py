"""Model masks checked against the CT's own air: the combination rule.

On CT, the air threshold (:mod:`.lungs_hu`) is right wherever the lung is
aerated, and on low-resolution volumes it beats the model's outline.  The
model is needed where the lung is *not* air: consolidation, effusion-adjacent
atelectasis, dense nodules.  The rule, per slice and per lung, measured in
``docs/auto.md``:

- the candidate lung (aerated) is kept;
- of what the model adds outside the candidate, thin rims (under
  ``rim_mm``) are dropped, and each remaining blob is kept only when it is
  lung by the CT's physics: most of its border touches aerated lung (it is
  *enclosed* by the lung: consolidation), or its median density lies between
  gas and -200 HU (ground glass, consolidation with air bronchograms).
  Liver, heart, mediastinum and chest wall are denser; air outside the
  patient, bowel gas and airway are pure air;
- where the candidate holds almost no air of the model's lung (a fully
  consolidated lung), the model is kept as is;
- with ``region`` (the prompts' boxes), nothing outside it is kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .labels import LEFT_LUNG, RIGHT_LUNG
from .lungs_hu import AIR_HU, GAS_FRACTION, PARTLY_AERATED_HU

#: Tissue that holds air but is not gas, in HU.
PARTLY_AERATED_RANGE_HU = (AIR_HU + GAS_FRACTION * 600.0, PARTLY_AERATED_HU)

#: Blobs the model adds are kept when at least this fraction of their border is aerated lung.
ENCLOSURE_FRACTION = 0.7
#: Model additions thinner than this (mm) are outline differences, not consolidation.
RIM_MM = 3.0
#: A lung with less aerated area than this (mm²) in the slice is taken as not aerated.
MIN_AERATED_MM2 = 50.0


def refine_with_candidates(
    model_labels: np.ndarray,
    candidate_labels: np.ndarray,
    spacing_rc_mm: tuple[float, float] = (1.0, 1.0),
    *,
    image: np.ndarray | None = None,
    partly_aerated: tuple[float, float] = PARTLY_AERATED_RANGE_HU,
    region: np.ndarray | None = None,
    enclosure: float = ENCLOSURE_FRACTION,
    rim_mm: float = RIM_MM,
) -> np.ndarray:
    """Combine a model's lung labels with the air candidates on one slice.

    Parameters
    ----------
    model_labels, candidate_labels
        uint8 ``(row, col)`` lung labels (0, 1 left, 2 right) of the same slice.
    spacing_rc_mm
        Pixel spacing (row, col) in mm.
    image
        The slice itself (HU, or windowed grey levels), for the density test;
        without it only the enclosure test applies.
    partly_aerated
        The density test's (low, high) range, in the image's units (HU by
        default; see :func:`~.lungs_hu.partly_aerated_level` for windowed data).
    region
        Optional boolean (row, col) mask, e.g. the prompts' boxes: the model's
        masks are clipped to it (a mask that ran beyond its box is a leak).
    enclosure
        Fraction of a blob's border that must be aerated lung to keep it.
    rim_mm
        Width (mm) under which the model's additions are treated as outline.

    Returns
    -------
    np.ndarray
        uint8 ``(row, col)`` lung labels.
    """
    model_labels = np.asarray(model_labels)
    candidate_labels = np.asarray(candidate_labels)
    if region is not None:
        model_labels = np.where(region, model_labels, 0)
    if model_labels.shape != candidate_labels.shape:
        raise ValueError(
            f"model labels {model_labels.shape} and candidates {candidate_labels.shape} differ"
        )
    aerated = candidate_labels > 0
    radius = max(1, int(round(rim_mm / (2.0 * min(spacing_rc_mm)))))
    pixel_mm2 = float(spacing_rc_mm[0]) * float(spacing_rc_mm[1])
    opening = _disk(radius)
    owner = assign_air_to_lungs(aerated, candidate_labels, model_labels)
    out = np.zeros(model_labels.shape, np.uint8)
    for lung in (LEFT_LUNG, RIGHT_LUNG):
        model = model_labels == lung
        candidate = owner == lung
        if model.any() and candidate.sum() * pixel_mm2 < MIN_AERATED_MM2:
            out[model & (out == 0)] = lung  # not aerated here: the model alone
            continue
        keep = candidate.copy()
        added = model & ~aerated
        extra = ndi.binary_opening(added, opening)
        blobs, _ = ndi.label(extra)
        for index, where in enumerate(ndi.find_objects(blobs), start=1):
            grown = _grow(where, model.shape, radius + 1)
            blob = blobs[grown] == index
            ring = ndi.binary_dilation(blob) & ~blob
            enclosed = ring.any() and aerated[grown][ring].mean() >= enclosure
            dense_air = image is not None and (
                partly_aerated[0] < np.median(image[grown][blob]) < partly_aerated[1]
            )
            if enclosed or dense_air:
                # the opening shaved the blob's edge: take back what it shaved
                blob = ndi.binary_dilation(blob, opening)
                keep[grown] |= blob & added[grown]
        out[keep & (out == 0)] = lung
    return out


#: A piece of air is split between the two model lungs when the smaller share covers at
#: least this fraction of the piece's overlap with them (below it, it is a stray pixel).
SHARED_PIECE_FRACTION = 0.05


def assign_air_to_lungs(
    aerated: np.ndarray,
    candidate_labels: np.ndarray,
    model_labels: np.ndarray,
    *,
    keep_unmatched: bool = True,
) -> np.ndarray:
    """Each connected piece of aerated lung joins the model lung it overlaps most; a piece
    both model lungs cover (they touch) is split, each pixel to the nearer model lung.

    This names the air by the model's (or the user's) lungs, whatever side
    rule made the candidates.  A piece that overlaps no model lung keeps its
    candidate label, or is dropped when ``keep_unmatched`` is False.  All
    arrays are (row, col); the result is uint8 lung labels.
    """
    pieces, n = ndi.label(aerated)
    owner = np.zeros(aerated.shape, np.uint8)
    if n == 0:
        return owner
    overlap = np.zeros((n + 1, 3), np.int64)
    np.add.at(overlap, (pieces.ravel(), np.clip(model_labels.ravel(), 0, 2)), 1)
    counts = overlap[:, 1:]
    names = np.where(counts[:, 0] >= counts[:, 1], LEFT_LUNG, RIGHT_LUNG).astype(np.uint8)
    names[counts.sum(axis=1) == 0] = 0
    names[0] = 0
    owner = names[pieces]
    # a piece that both model lungs cover (the lungs touch at the anterior junction) is
    # split between them, each pixel going to the nearer model lung
    shared = np.flatnonzero(counts.min(axis=1) >= SHARED_PIECE_FRACTION * counts.sum(axis=1))
    shared = shared[(shared > 0) & (counts[shared].min(axis=1) > 0)]
    if len(shared):
        lungs = np.clip(model_labels, 0, 2)
        _, (rows, cols) = ndi.distance_transform_edt(lungs == 0, return_indices=True)
        nearest = lungs[rows, cols]
        split = np.isin(pieces, shared)
        owner[split] = nearest[split]
    if keep_unmatched:
        unmatched = (owner == 0) & aerated
        owner[unmatched] = candidate_labels[unmatched]
    return owner


def refine_volume(
    model_labels: np.ndarray,
    candidate_labels: np.ndarray,
    spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    *,
    image: np.ndarray | None = None,
    partly_aerated: tuple[float, float] = PARTLY_AERATED_RANGE_HU,
) -> np.ndarray:
    """:func:`refine_with_candidates` on every slice of a ``(slice, row, col)`` volume."""
    out = np.zeros(np.shape(model_labels), np.uint8)
    for z in range(out.shape[0]):
        if model_labels[z].any() or candidate_labels[z].any():
            out[z] = refine_with_candidates(
                model_labels[z],
                candidate_labels[z],
                tuple(spacing_zyx_mm[1:]),
                image=None if image is None else image[z],
                partly_aerated=partly_aerated,
            )
    return out


def _disk(radius: int) -> np.ndarray:
    rows, cols = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return rows**2 + cols**2 <= radius**2


def _grow(where: tuple[slice, slice], shape: tuple[int, ...], margin: int) -> tuple[slice, slice]:
    """A bounding box ``margin`` pixels larger on every side (clipped to the image)."""
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, size))
        for s, size in zip(where, shape, strict=True)
    )
