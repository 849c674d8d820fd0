"""Lung label images: conventions, normalisation of masks, left/right splitting.

Convention (COVID-19-CT-Seg): 0 background, 1 left lung, 2 right lung.  In
radiological display (patient's right on the image's left) the patient's left
lung lies on the image's *right*, i.e. at larger column indices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import ShapeMismatchError

LEFT_LUNG = 1
RIGHT_LUNG = 2

#: Integer masks with more distinct values than this are not treated as lung labels.
MAX_LABEL_VALUES = 3


def lung_union(lung_labels: np.ndarray) -> np.ndarray:
    """Binary mask of all lungs together."""
    return np.asarray(lung_labels) > 0


def split_lungs(binary: np.ndarray) -> np.ndarray:
    """Split a merged two-lung mask into left (1) and right (2) lung labels.

    Works on 2D (rows, cols) and 3D (slice, rows, cols) masks.  The two
    largest connected components define the dividing column (midway between
    their column centroids); every foreground pixel right of it in the image
    is the patient's left lung (1), the rest the right lung (2).  A mask with
    a single component (one lung visible, e.g. at an apex) becomes one lung,
    chosen by the side of the image's centre column it lies on.
    """
    binary = np.asarray(binary).astype(bool)
    out = np.zeros(binary.shape, np.uint8)
    if not binary.any():
        return out
    components, n = ndi.label(binary)
    cols = np.indices(binary.shape)[-1] if binary.ndim <= 3 else None
    if cols is None:  # pragma: no cover - guarded by callers
        raise ShapeMismatchError(f"masks must be 2D or 3D, got {binary.ndim}D")
    if n >= 2:
        sizes = ndi.sum_labels(np.ones_like(binary, np.float32), components, range(1, n + 1))
        largest = np.argsort(sizes)[::-1][:2] + 1
        centroids = ndi.mean(cols, components, largest)
        divide = float(np.mean(centroids))
    else:
        divide = (binary.shape[-1] - 1) / 2.0
    left = binary & (cols > divide)
    out[left] = LEFT_LUNG
    out[binary & ~left] = RIGHT_LUNG
    return out


def side_of_midline(mask_2d: np.ndarray, midline_col: float) -> int:
    """The label of a one-lung mask: the left lung (1) lies right of the midline in the image.

    Radiological display puts the patient's left on the image's right
    (larger column indices).
    """
    cols = np.argwhere(mask_2d)[:, 1]
    if cols.size == 0:
        raise ValueError("side_of_midline needs a non-empty mask")
    return LEFT_LUNG if cols.mean() > midline_col else RIGHT_LUNG


def to_lung_labels(mask: np.ndarray, *, name: str = "mask") -> np.ndarray:
    """Normalise any supported lung mask to uint8 labels {0, 1, 2}.

    - integer images whose values are within {0, 1, 2} and contain 2 are kept;
    - integer {0, 1} masks and non-label masks (float, 0/255, anti-aliased
      0..255 whose foreground is mostly at the maximum, interpolation ringing)
      are binarised at half their nominal foreground level (see
      :func:`nominal_foreground`) and split into lungs;
    - integer images with other label values (multi-organ segmentations) are
      refused: the caller must pick the lung labels.
    """
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return split_lungs(mask)
    if mask.size == 0:
        raise ShapeMismatchError(f"{name}: the mask is empty (shape {mask.shape})")
    if np.issubdtype(mask.dtype, np.integer):
        values = np.unique(mask)
        if values.min() >= 0 and values.max() <= 2:
            if 2 in values:
                return mask.astype(np.uint8)
            return split_lungs(mask > 0)
        foreground = mask[mask > 0]
        if values.min() >= 0 and (
            len(values) <= MAX_LABEL_VALUES
            or np.count_nonzero(foreground == values.max()) >= 0.5 * foreground.size
        ):
            # 0/255 masks, and anti-aliased ones whose foreground is mostly at the maximum
            return split_lungs(mask > half_level(mask))
        raise ShapeMismatchError(
            f"{name}: label values {_short_list(values)} are not lung labels; expected 0 "
            "background, 1 left lung, 2 right lung, or a binary mask. Save only the lung labels "
            "first, e.g. numpy.isin(mask, [L1, L2])."
        )
    data = mask.astype(np.float32)
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    if float(data.max()) <= 0:
        return np.zeros(mask.shape, np.uint8)
    return split_lungs(data > half_level(data))


def half_level(mask: np.ndarray) -> float:
    """Binarisation threshold: half the nominal foreground, rounded down on 0..255-like
    scales (127 for 0/255 masks, as the data's README prescribes)."""
    half = nominal_foreground(mask) / 2.0
    return float(np.floor(half)) if half >= 1.0 else half


def nominal_foreground(mask: np.ndarray) -> float:
    """The foreground level of a non-label mask: the median of its clearly-on values.

    Robust to interpolation ringing: a 0/255 mask resampled with overshoot to
    ~340 still has its plateau at 255, so it is thresholded at 127.5, not at
    half the overshoot.
    """
    data = np.asarray(mask, np.float32)
    peak = float(data.max())
    if peak <= 0:
        return 0.0
    return float(np.median(data[data > peak / 4.0]))


def select_labels(mask: np.ndarray, lung_label_values: list[int]) -> np.ndarray:
    """Keep only ``lung_label_values`` of a multi-label image, as a merged binary mask."""
    return np.isin(np.asarray(mask), lung_label_values)


def _short_list(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"
