"""Candidate lungs found from the CT itself: air-density voxels inside the body.

No model and no ground truth.  Lung is air (about -1000 HU; parenchyma -900
to -500 HU) inside a body of soft tissue.  The recipe, each step in mm or mL
through the voxel spacing:

1. threshold at ``threshold_hu`` (-400 HU; for an already-windowed 8-bit
   volume the threshold is taken from the data by Otsu's method);
2. drop the air connected to the image border (outside the patient);
3. drop, slice by slice, pure gas (the median inside the region is within 5 %
   of the way from air to the threshold, e.g. below -950 HU: bowel gas, the
   stomach; lung parenchyma sits at -900..-800 HU because of its vessels) and
   small air regions on the body's midline (trachea, main bronchi, oesophagus);
4. keep the 3D components of at least ``min_volume_ml`` that are not gas;
5. trim the lung's first and last slices where only a partial-volume sliver
   remains;
6. split left from right: two components are two lungs; one component that
   holds both (they touch at the anterior junction) is eroded in-plane until
   it falls apart, and every voxel goes to the nearer part;
7. fill holes (vessels) slice by slice.

Labels follow :mod:`~napari_samlung.core.labels`: in radiological display the
patient's left lung (1) lies right of the body's midline.

This applies to CT only.  X-rays have no Hounsfield units and the lungs
overlap the ribs and heart in projection: :func:`find_lung_candidates`
refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..errors import ShapeMismatchError
from .labels import LEFT_LUNG, RIGHT_LUNG, side_of_midline
from .windowing import is_prewindowed

#: Lung is below this density; soft tissue, blood and bone are above it.
AIR_THRESHOLD_HU = -400.0
#: Pure air in Hounsfield units.
AIR_HU = -1000.0
#: Tissue below this still holds air: ground glass, consolidation with air bronchograms.
PARTLY_AERATED_HU = -200.0
#: A region whose median lies this fraction of the way from pure air to the
#: threshold, or closer to air, is gas rather than lung (-950 HU at -400).
GAS_FRACTION = 50.0 / 600.0
#: Air regions this small (cm², in one slice) on the body's midline, and nearly
#: pure air, are airway (trachea, main bronchi) or oesophagus; a lung apex is
#: lateral and denser (-900..-750 HU).
AIRWAY_MAX_AREA_CM2 = 5.0
#: "On the midline": within this fraction of the body's width of its centre column.
MIDLINE_BAND_FRACTION = 0.06
#: Airway lumen is denser than this fraction of the way from air to the threshold.
AIRWAY_FRACTION = 100.0 / 600.0
#: 3D components smaller than this are not lungs.
MIN_LUNG_VOLUME_ML = 5.0
#: In a single slice, regions smaller than this are not lungs.
MIN_LUNG_AREA_CM2 = 0.5
#: An end slice whose lung area is below this fraction of its neighbour's is a sliver.
END_SLICE_RATIO = 0.3
#: ... or below this area in mm².
END_SLICE_MIN_MM2 = 30.0
#: Holes up to this area (mm², in one slice) are vessels and airway walls: filled.  Larger
#: ones are the heart or the liver dome that the lung wraps around in a slice.
MAX_HOLE_MM2 = 400.0
#: In-plane erosion tried, at most, to part two lungs that touch.
MAX_SPLIT_EROSION_MM = 15.0

_CROSS_2D = ndi.generate_binary_structure(2, 1)
_CROSS_3D = ndi.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class LungCandidates:
    """What :func:`find_lung_candidates` found.

    Attributes
    ----------
    lung_labels
        uint8, the input's shape ``(slice, row, col)`` or ``(row, col)``:
        0 background, 1 left lung, 2 right lung.
    body
        bool, same shape: the patient (everything not connected to the
        outside air).
    threshold
        The air threshold used, in the input's units (HU, or grey levels for
        windowed 8-bit input).
    partly_aerated
        The (low, high) density range of tissue that holds air but is not pure
        air (gas), in the same units (:func:`partly_aerated_level`; for
        :func:`~.refine.refine_with_candidates`).
    """

    lung_labels: np.ndarray
    body: np.ndarray
    threshold: float
    partly_aerated: tuple[float, float] = (-950.0, PARTLY_AERATED_HU)

    def slices_with_lung(self) -> np.ndarray:
        """Indices of the slices (axis 0 of a volume) that hold candidate lung."""
        labels = self.lung_labels if self.lung_labels.ndim == 3 else self.lung_labels[None]
        return np.flatnonzero(labels.reshape(len(labels), -1).any(axis=1))


def air_threshold(volume: np.ndarray, windowed: bool) -> tuple[float, float]:
    """The (air threshold, pure-air level) of a CT, in its own units.

    Hounsfield units use the fixed -400 / -1000 HU.  An already-windowed
    8-bit volume has no HU: the threshold is Otsu's between the dark (air)
    and bright (tissue) modes, and pure air is the 1st percentile.
    """
    if not windowed:
        return AIR_THRESHOLD_HU, AIR_HU
    from skimage.filters import threshold_otsu

    values = np.asarray(volume, np.float32)
    return float(threshold_otsu(values)), float(np.percentile(values, 1))


def partly_aerated_level(threshold: float, air: float) -> tuple[float, float]:
    """Density range of tissue that holds air but is not gas: (-950, -200) HU at -400 HU.

    Expressed on the way from pure air to the threshold, so it carries over to
    windowed 8-bit data: -950 HU lies 1/12 and -200 HU 4/3 of that way.
    """
    high = (PARTLY_AERATED_HU - AIR_HU) / (AIR_THRESHOLD_HU - AIR_HU)
    return air + GAS_FRACTION * (threshold - air), air + high * (threshold - air)


def body_midline_col(body_2d: np.ndarray) -> float:
    """Column (in pixels) of the body's centre in one slice; the image centre if empty."""
    cols = np.flatnonzero(body_2d.any(axis=0))
    if cols.size == 0:
        return (body_2d.shape[1] - 1) / 2.0
    return float(np.argwhere(body_2d)[:, 1].mean())


def slice_midline_col(slice_2d: np.ndarray, windowed: bool | None = None) -> float:
    """The body's midline column in one CT slice (HU, or windowed 8-bit).

    The body is everything not connected to the outside air; the image's
    centre column when the slice holds no body.
    """
    data = np.asarray(slice_2d, np.float32)[None]
    if windowed is None:
        windowed = is_prewindowed(slice_2d)
    threshold, _ = air_threshold(data, windowed)
    return body_midline_col(~_border_connected(data < threshold)[0])


def find_lung_candidates(
    volume: np.ndarray,
    spacing_zyx_mm: tuple[float, ...] | None = None,
    *,
    windowed: bool | None = None,
    modality: str = "ct",
    threshold_hu: float = AIR_THRESHOLD_HU,
) -> LungCandidates:
    """Candidate left and right lungs of a CT volume (or one CT slice) from its air.

    Parameters
    ----------
    volume
        CT in Hounsfield units, or already windowed to 8 bits, shaped
        ``(slice, row, col)`` in radiological display, or ``(row, col)``.
    spacing_zyx_mm
        Voxel spacing in mm, one entry per axis (``(row, col)`` for 2D);
        1 mm where ``None``.
    windowed
        Whether the grey values are windowed 8-bit rather than HU; by default
        True for uint8 input.
    modality
        ``"ct"``; ``"xray"`` is refused (no Hounsfield units in a projection).
    threshold_hu
        The air threshold for HU input.

    Returns
    -------
    LungCandidates
        Lung labels (0/1/2), the body mask and the threshold used.
    """
    if modality == "xray":
        raise ValueError(
            "finding lungs from air density applies to CT only: an X-ray has no Hounsfield "
            "units and its lungs overlap the ribs and heart; prompt the X-ray with boxes instead"
        )
    data = np.asarray(volume)
    if data.ndim not in (2, 3) or min(data.shape) == 0:
        raise ShapeMismatchError(f"expected a 2D slice or 3D volume, got shape {data.shape}")
    flat = data.ndim == 2 or data.shape[0] == 1  # one slice: the 2D rules (areas, no ends)
    if windowed is None:
        windowed = is_prewindowed(data)
    vol = np.asarray(data if data.ndim == 3 else data[None], np.float32)
    spacing = spacing_3d(spacing_zyx_mm, data.ndim)
    if windowed:
        threshold, air = air_threshold(vol, True)
    else:
        threshold, air = float(threshold_hu), AIR_HU
    gas_level = air + GAS_FRACTION * (threshold - air)
    airway_level = air + AIRWAY_FRACTION * (threshold - air)

    air_mask = vol < threshold
    outside = _border_connected(air_mask)
    body = ~outside
    inside = air_mask & body
    _drop_gas_and_airway(inside, vol, body, (gas_level, airway_level), spacing)
    min_size = MIN_LUNG_AREA_CM2 * 100.0 if flat else MIN_LUNG_VOLUME_ML * 1000.0
    lungs = _lung_components(inside, vol, gas_level, spacing, min_size_mm3=min_size)
    if not flat:
        lungs = _trim_end_slices(lungs, spacing)
    labels = _split_left_right(lungs, body, spacing)
    labels = _fill_holes_per_slice(labels, MAX_HOLE_MM2 / (spacing[1] * spacing[2]))
    level = partly_aerated_level(threshold, air)
    if data.ndim == 2:
        return LungCandidates(labels[0], body[0], threshold, level)
    return LungCandidates(labels, body, threshold, level)


# --------------------------------------------------------------------------- steps


def spacing_3d(spacing_zyx_mm: tuple[float, ...] | None, ndim: int) -> np.ndarray:
    """Voxel spacing (slice, row, col) in mm for data of ``ndim`` dimensions.

    ``None`` means 1 mm; a (row, col) spacing of a single slice, also when the
    slice is held as a one-slice volume, gets a 1 mm slice axis.  Raises
    ValueError for anything else than positive finite numbers.
    """
    if spacing_zyx_mm is None:
        return np.ones(3)
    spacing = np.asarray(spacing_zyx_mm, float).reshape(-1)
    if (
        spacing.size not in (2, 3)
        or spacing.size > max(ndim, 2)
        or not (np.all(np.isfinite(spacing)) and np.all(spacing > 0))
    ):
        raise ValueError(f"spacing_zyx_mm must hold {ndim} positive numbers, got {spacing_zyx_mm}")
    return np.concatenate([[1.0], spacing]) if spacing.size == 2 else spacing


def _border_connected(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` connected (in 3D) to the in-plane border of any slice."""
    labels, _ = ndi.label(mask)
    edge = np.concatenate(
        [
            labels[:, 0].ravel(),
            labels[:, -1].ravel(),
            labels[:, :, 0].ravel(),
            labels[:, :, -1].ravel(),
        ]
    )
    touching = np.unique(edge[edge > 0])
    return np.isin(labels, touching)


def _core_median(values: np.ndarray, mask: np.ndarray, structure: np.ndarray) -> float:
    """Median of ``values`` inside ``mask`` eroded once (partial-volume edges left out)."""
    core = ndi.binary_erosion(mask, structure)
    return float(np.median(values[core] if core.sum() >= 4 else values[mask]))


def _drop_gas_and_airway(
    inside: np.ndarray,
    vol: np.ndarray,
    body: np.ndarray,
    levels: tuple[float, float],
    spacing: np.ndarray,
) -> None:
    """Remove, in place and slice by slice, gas pockets and midline airway.

    ``levels`` are the (gas, airway) median levels in the volume's units.
    """
    gas_level, airway_level = levels
    pixel_cm2 = spacing[1] * spacing[2] / 100.0
    for z in range(inside.shape[0]):
        if not inside[z].any():
            continue
        body_cols = np.flatnonzero(body[z].any(axis=0))
        width = body_cols[-1] - body_cols[0] + 1 if body_cols.size else inside.shape[2]
        midline = body_midline_col(body[z])
        regions, n = ndi.label(inside[z], _CROSS_2D)
        for index, region_slice in enumerate(ndi.find_objects(regions), start=1):
            region = regions[region_slice] == index
            values = vol[z][region_slice]
            area_cm2 = region.sum() * pixel_cm2
            centre_col = np.argwhere(region)[:, 1].mean() + region_slice[1].start
            median = _core_median(values, region, _CROSS_2D)
            airway = (
                area_cm2 < AIRWAY_MAX_AREA_CM2
                and abs(centre_col - midline) < MIDLINE_BAND_FRACTION * width
                and median < airway_level
            )
            if airway or median < gas_level:
                inside[z][region_slice][region] = False


def _lung_components(
    inside: np.ndarray,
    vol: np.ndarray,
    gas_level: float,
    spacing: np.ndarray,
    *,
    min_size_mm3: float,
) -> np.ndarray:
    """The 3D components large enough and dense enough (not gas) to be lung."""
    labels, n = ndi.label(inside)
    if n == 0:
        return inside
    sizes_mm3 = np.bincount(labels.ravel(), minlength=n + 1)[1:] * float(np.prod(spacing))
    keep = []
    for index, where in enumerate(ndi.find_objects(labels), start=1):
        if sizes_mm3[index - 1] < min_size_mm3:
            continue
        component = labels[where] == index
        if _core_median(vol[where], component, _CROSS_3D) >= gas_level:
            keep.append(index)
    return np.isin(labels, keep)


def _trim_end_slices(lungs: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Drop partial-volume slivers at the top and bottom of each lung component."""
    pixel_mm2 = spacing[1] * spacing[2]
    labels, n = ndi.label(lungs)
    out = lungs.copy()
    for index in range(1, n + 1):
        component = labels == index
        areas = component.reshape(len(component), -1).sum(axis=1) * pixel_mm2
        present = np.flatnonzero(areas)
        lo, hi = int(present[0]), int(present[-1])
        while lo < hi and _is_sliver(areas[lo], areas[lo + 1]):
            out[lo][component[lo]] = False
            lo += 1
        while hi > lo and _is_sliver(areas[hi], areas[hi - 1]):
            out[hi][component[hi]] = False
            hi -= 1
    return out


def _is_sliver(area_mm2: float, neighbour_mm2: float) -> bool:
    return area_mm2 < END_SLICE_MIN_MM2 or area_mm2 < END_SLICE_RATIO * neighbour_mm2


def _split_left_right(lungs: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Label lung voxels 1 (left) / 2 (right), parting lungs that touch."""
    labels, n = ndi.label(lungs)
    out = np.zeros(lungs.shape, np.uint8)
    if n == 0:
        return out
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(sizes)[::-1] + 1
    if n == 1 or sizes[order[1] - 1] < 0.1 * sizes[order[0] - 1]:
        parts = _erode_apart(labels == order[0], spacing)
        if parts is not None:
            labels = np.where(labels == order[0], parts, np.where(labels > 0, labels + 2, 0))
            sizes = np.bincount(labels.ravel(), minlength=labels.max() + 1)[1:]
            order = np.argsort(sizes)[::-1] + 1
    midline = float(np.mean([body_midline_col(b) for b in body if b.any()] or [lungs.shape[2] / 2]))
    lungs_two = order[:2]
    centre = {i: np.argwhere(labels == i)[:, 2].mean() for i in lungs_two}
    if len(lungs_two) == 2:
        left_id = max(lungs_two, key=lambda i: centre[i])
        right_id = min(lungs_two, key=lambda i: centre[i])
        out[labels == left_id] = LEFT_LUNG
        out[labels == right_id] = RIGHT_LUNG
        rest = (labels > 0) & ~np.isin(labels, lungs_two)
        if rest.any():  # smaller pieces join the lung whose centre column is nearer
            cols = np.indices(lungs.shape)[2]
            nearer_left = np.abs(cols - centre[left_id]) < np.abs(cols - centre[right_id])
            out[rest & nearer_left] = LEFT_LUNG
            out[rest & ~nearer_left] = RIGHT_LUNG
    else:  # one lung only (e.g. a slab at the apex): its side of the midline decides
        out[lungs] = side_of_midline(lungs.any(axis=0), midline)
    return out


def _erode_apart(component: np.ndarray, spacing: np.ndarray) -> np.ndarray | None:
    """Label 1/2 the two halves of a component that holds both lungs, or None.

    Erodes in-plane, one pixel at a time up to :data:`MAX_SPLIT_EROSION_MM`,
    until the two largest pieces are each at least 10 % of the eroded total;
    then every voxel of the component joins its nearer piece (in mm).
    """
    steps = int(MAX_SPLIT_EROSION_MM / min(spacing[1], spacing[2]))
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = _CROSS_2D
    eroded = component
    for _ in range(steps):
        eroded = ndi.binary_erosion(eroded, structure)
        pieces, n = ndi.label(eroded)
        if n < 2:
            if not eroded.any():
                return None
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        top = np.argsort(sizes)[::-1][:2] + 1
        if sizes[top[1] - 1] >= 0.1 * sizes[top - 1].sum():
            seeds = np.where(np.isin(pieces, top), pieces, 0)
            _, nearest = ndi.distance_transform_edt(
                seeds == 0, sampling=spacing, return_indices=True
            )
            owner = seeds[tuple(nearest)]
            parts = np.zeros(component.shape, np.int32)
            parts[component & (owner == top[0])] = 1
            parts[component & (owner == top[1])] = 2
            return parts
    return None


def _fill_holes_per_slice(labels: np.ndarray, max_hole_px: float) -> np.ndarray:
    """Fill each lung's holes of at most ``max_hole_px`` pixels, slice by slice."""
    out = labels.copy()
    for z in range(len(labels)):
        for lung in (LEFT_LUNG, RIGHT_LUNG):
            mask = labels[z] == lung
            if not mask.any():
                continue
            holes, n = ndi.label(ndi.binary_fill_holes(mask) & ~mask)
            if n == 0:
                continue
            sizes = np.bincount(holes.ravel())
            small = (sizes <= max_hole_px) & (np.arange(n + 1) > 0)
            out[z][small[holes] & (out[z] == 0)] = lung
    return out
