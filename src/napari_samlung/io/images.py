"""Reading chest CT volumes (NIfTI, .npy) and chest X-rays (PNG/JPEG), images and masks.

Array conventions
-----------------
CT volumes come back as ``(slice, row, col)`` in *radiological display*
(see :mod:`napari_samlung.io.geometry`).  What is needed to write a mask back
onto the source grid, in the source orientation, is kept in
:attr:`ImageData.meta` (see :data:`~napari_samlung.io.nifti.NIFTI_META_KEYS`).
2D images (X-rays, exported CT slices) come back as ``(row, col)`` exactly as
stored; no re-orientation is possible without a header.

Intensity conventions
---------------------
- PNG/JPEG: see :mod:`napari_samlung.io.raster` (uint8 grey; 16-bit min-max
  scaled; colour to grey with
  :func:`~napari_samlung.core.windowing.rgb_to_grey`).
- NIfTI: see :mod:`napari_samlung.io.nifti` (stored type kept after scaling;
  NaN/Inf replaced by the minimum finite value, with a warning).
- ``.npy``: int16 Hounsfield slices stay int16, uint8 (already windowed)
  slices stay uint8; both are modality ``"ct"``.

The parsers live in :mod:`~napari_samlung.io.nifti`,
:mod:`~napari_samlung.io.raster` and :mod:`~napari_samlung.io.npy`; this
module holds the image record and the three public readers.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..core.labels import LEFT_LUNG, RIGHT_LUNG, to_lung_labels
from ..errors import InputFileError, ShapeMismatchError
from .checks import check_slice_shape, replace_nonfinite, stat_input, to_float32
from .dicom import is_dicom_file, is_dicom_folder, read_dicom
from .geometry import check_aligned
from .names import IMAGE_SUFFIXES, NIFTI_SUFFIXES, NPY_SUFFIXES, RASTER_SUFFIXES, image_suffix
from .nifti import read_nifti
from .npy import read_npy
from .raster import read_raster


@dataclass
class ImageData:
    """An image or volume with its geometry.

    ``data`` is ``(slice, row, col)`` for volumes and ``(row, col)`` for 2D
    images; ``spacing_zyx_mm`` has one entry per axis of ``data`` (1.0 where
    unknown).  ``affine`` maps our array indices ``(z, y, x)`` to world
    millimetres (RAS) and is ``None`` when the source has no world
    coordinates (PNG, JPEG, .npy).
    """

    data: np.ndarray
    spacing_zyx_mm: tuple[float, ...]
    affine: np.ndarray | None
    source_path: Path | None
    modality: str
    meta: dict = field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        """True for 3D ``(slice, row, col)`` data."""
        return self.data.ndim == 3


def read_image(path: str | Path) -> ImageData:
    """Read a CT volume, CT slice or X-ray; dispatches on the file suffix.

    Parameters
    ----------
    path : str or Path
        A ``.nii``/``.nii.gz`` (modality ``"ct"``), ``.png``/``.jpg``/``.jpeg``
        (``"xray"``) or ``.npy`` (``"ct"``) file; the suffix is matched
        case-insensitively.  A folder of DICOM slices, or one DICOM file
        (``.dcm``, or any name with the DICM marker), reads a CT series
        (:func:`~napari_samlung.io.dicom.read_dicom`; needs pydicom).

    Returns
    -------
    ImageData
        ``(slice, row, col)`` volumes in radiological display, ``(row, col)``
        2D images; spacing in millimetres (1.0 where the file has none).

    Raises
    ------
    InputFileError
        One line naming the file, the problem and the fix, for missing,
        empty, corrupt, oversized or unsupported files.
    """
    path = Path(path).expanduser()
    info = stat_input(path)
    if info is not None and stat.S_ISDIR(info.st_mode) and is_dicom_folder(path):
        image = _read_dicom(path)
    else:
        image = _read_image_file(_check_file(path))
    check_slice_shape(path, image.data.shape)
    return image


def _read_image_file(path: Path) -> ImageData:
    kind = _kind(path)
    if kind == "nifti":
        data, spacing, affine, meta = read_nifti(path)
        return ImageData(data, spacing, affine, path, "ct", meta)
    if kind == "dicom":
        return _read_dicom(path)
    if kind == "raster":
        data, meta = read_raster(path)
        return ImageData(data, (1.0, 1.0), None, path, "xray", meta)
    data = read_npy(path)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    data = replace_nonfinite(data, path)
    spacing = (1.0,) * data.ndim
    return ImageData(data, spacing, None, path, "ct", {"windowed": data.dtype == np.uint8})


def read_mask(path: str | Path, like: ImageData | None = None) -> np.ndarray:
    """Read a lung mask as uint8 labels {0 background, 1 left lung, 2 right lung}.

    The mask is placed exactly like :func:`read_image` places an image (same
    orientation code path), so it is ``(slice, row, col)`` or ``(row, col)``.
    Its values are read by the one rule of :func:`mask_to_labels` (the same for
    NIfTI, PNG/JPEG and ``.npy``; the table is in ``docs/masks.md``).

    With ``like``, the mask must have the image's shape, and when both are
    NIfTI, the same world grid; otherwise
    :class:`~napari_samlung.errors.ShapeMismatchError` is raised (masks are
    never resampled).

    Raises
    ------
    InputFileError
        For unreadable files, and masks whose values do not say which pixels are lung
        (multi-label images, a region labelled with a value the rule would drop).
    ShapeMismatchError
        For masks that do not fit ``like``, and integer label images with other labels.
    """
    path = _check_file(path)
    kind = _kind(path)
    affine: np.ndarray | None = None
    if kind == "dicom":
        raise InputFileError(
            f"{path}: DICOM masks are not read; give the lung mask as NIfTI, PNG or .npy"
        )
    if kind == "nifti":
        raw, _spacing, affine, _meta = read_nifti(path, warn_nonfinite=False)
    elif kind == "raster":
        raw, _ = read_raster(path, as_mask=True)
    else:
        raw = read_npy(path)
    labels = mask_to_labels(raw, path, grey_image=kind == "raster")
    if like is not None:
        check_aligned(labels, path, like, mask_affine=affine)
    return labels


#: Values under this fraction of a mask's top value are numerical noise, never a region.
_NOISE_FRACTION = 1e-3
#: Float masks with values beyond this are scaled down before thresholding (same result).
_LARGE_VALUE = 1e6
#: Values within this distance of a whole number count as that whole number (float masks).
_WHOLE_TOLERANCE = 1e-3
#: A value under the threshold is a region of its own, not an edge, when it holds at least
#: this fraction of the mask's kept pixels (and :data:`_REGION_MIN_PIXELS`) ...
_REGION_FRACTION = 0.01
_REGION_MIN_PIXELS = 16
#: ... and most of its pixels lie further than this from the kept mask, in-plane (anti-aliased
#: edges, JPEG blocks and interpolation ringing all lie within a few pixels of it).
_EDGE_PIXELS = 8


def mask_to_labels(
    raw: np.ndarray, path: str | Path = "mask", *, grey_image: bool = False
) -> np.ndarray:
    """The one rule that turns the stored values of a mask file into lung labels.

    ====================================================  ===================================
    stored values (NaN/Inf, and negatives in a float      read as
    file, are background)
    ====================================================  ===================================
    whole numbers within {0, 1, 2} with a 1 or 2, any      labels as stored: 1 left, 2 right
    dtype (uint8, int16, float32 ``{0., 1., 2.}``)         (only {0, 1}: one mask, split)
    bool, or a single positive value (0/1, 0/255, 0/3)     one mask, split into the two lungs
    many grey values: anti-aliased or JPEG 0..255,         thresholded at half the foreground
    interpolation ringing (-115..342), soft 0..1           level (half the median of the values
                                                           over a quarter of the top, rounded
                                                           down on 0..255 scales): 127 for
                                                           0..255 masks
    several labels, most of the mask below the top value   refused: a multi-label image
    (organs 10..14, lobes)
    a value under the threshold covering a region of its   refused: which lung it is is unclear
    own, away from the rest ({0, 3, 255})
    negative whole numbers in an integer file              refused
    ====================================================  ===================================

    Values under the threshold within 8 pixels of the kept mask are edges (background);
    the same table is in ``docs/masks.md``.

    Parameters
    ----------
    raw : ndarray
        The stored values, ``(row, col)`` or ``(slice, row, col)``.
    path : str or Path
        Named in error messages.
    grey_image : bool
        The values are the grey levels of a PNG/JPEG, where anti-aliasing and JPEG
        compression spread the top value: a multi-label image is then told by most of its
        mask lying between 10% and 90% of the top value.  Otherwise (NIfTI, ``.npy``) an
        integer mask with more than three values is a label image unless at least half
        of its foreground is at the top value.

    Returns
    -------
    ndarray of uint8
        Labels 0 background, 1 left lung, 2 right lung, the shape of ``raw``.

    Raises
    ------
    InputFileError, ShapeMismatchError
        One line naming ``path``, the values and the fix, for the refused rows above.
    """
    raw = np.asarray(raw)
    if raw.dtype == bool or raw.size == 0:
        return to_lung_labels(raw, name=str(path))
    if np.issubdtype(raw.dtype, np.floating):
        raw = to_float32(raw)
        raw = np.where(np.isfinite(raw), raw, np.float32(0))
        if _whole_labels(raw):
            raw = np.rint(raw).astype(np.uint8)  # float label maps: {0., 1., 2.} keep both lungs
        else:
            peak = float(np.abs(raw).max()) if raw.size else 0.0
            if peak > _LARGE_VALUE:  # the rule is relative: scale so its sums cannot overflow
                raw = (raw / np.float32(peak)).astype(np.float32)
    if grey_image and np.issubdtype(raw.dtype, np.integer) and len(np.unique(raw)) > 3:
        _refuse_label_image(raw, Path(path))
        raw = raw.astype(np.float32)  # anti-aliased or JPEG: the top value is spread
    labels = to_lung_labels(raw, name=str(path))
    _refuse_dropped_region(raw, labels, Path(path))
    return labels


def _whole_labels(raw: np.ndarray) -> bool:
    """True when every value of a float mask is (within rounding) 0, 1 or 2, and one is 1 or 2."""
    low, high = float(raw.min()), float(raw.max())
    # at least one lung label: a mask of only tiny values is a (faint) mask, not all zeros
    if low < -_WHOLE_TOLERANCE or not 1 - _WHOLE_TOLERANCE <= high <= 2 + _WHOLE_TOLERANCE:
        return False
    return bool((np.abs(raw - np.rint(raw)) <= _WHOLE_TOLERANCE).all())


def _refuse_dropped_region(raw: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Refuse a mask whose threshold would drop a whole region stored at a low value.

    Thresholding is right for anti-aliased edges, JPEG noise and interpolation ringing:
    their values under the threshold lie next to the kept mask.  A value that covers an
    area of its own away from it (a lung stored as 3 beside one stored as 255) is a label,
    and dropping it would silently lose a lung.
    """
    top = float(raw.max())
    # values under a thousandth of the top are numerical noise (denormals in float masks)
    dropped = (raw > _NOISE_FRACTION * top) & (labels == 0)
    if top <= 0 or not dropped.any():
        return
    kept = labels > 0
    values, counts = np.unique(raw[dropped], return_counts=True)
    floor = max(_REGION_MIN_PIXELS, _REGION_FRACTION * max(int(np.count_nonzero(kept)), 1))
    suspects = values[counts >= floor]
    if not len(suspects):
        return
    structure = np.ones((3,) * raw.ndim, bool)
    if raw.ndim == 3:
        structure[0] = structure[2] = False  # in-plane: slices of a volume may be far apart
    near = ndi.binary_dilation(kept, structure, iterations=_EDGE_PIXELS) if kept.any() else kept
    for value in suspects:
        region = raw == value
        apart = int(np.count_nonzero(region & ~near))
        if apart * 2 > int(np.count_nonzero(region)):
            kept_values = np.unique(raw[kept]) if kept.any() else np.array([])
            raise InputFileError(
                f"{path}: mask value {_fmt(value)} covers {apart} pixels apart from the rest "
                f"of the mask (values {_value_list(kept_values)}) and would be read as "
                "background, so which lung it is is unclear; save the mask as 0 background "
                "/ 1 left lung / 2 right lung, or as a binary 0/255 mask"
            )


def _fmt(value: float) -> str:
    return f"{float(value):g}"


def _value_list(values: np.ndarray, limit: int = 6) -> str:
    if len(values) > limit:
        return f"{_fmt(values[0])}..{_fmt(values[-1])}"
    return ", ".join(_fmt(v) for v in values)


def read_montgomery_mask(left_path: str | Path, right_path: str | Path) -> np.ndarray:
    """Merge Montgomery ``ManualMask/leftMask`` and ``rightMask`` PNGs into lung labels.

    Returns a ``(row, col)`` uint8 array: ``leftMask`` (the patient's left
    lung, on the image's right) becomes 1 and ``rightMask`` becomes 2.
    Pixels marked in both keep label 1.  Each mask is thresholded at half its
    maximum.
    """
    left_path, right_path = _check_file(left_path), _check_file(right_path)
    left, _ = read_raster(left_path, as_mask=True)
    right, _ = read_raster(right_path, as_mask=True)
    if left.shape != right.shape:
        raise ShapeMismatchError(
            f"{left_path} has shape {left.shape} but {right_path} has shape {right.shape}; "
            "the left and right lung masks must come from the same X-ray"
        )
    labels = np.zeros(left.shape, np.uint8)
    if right.max() > 0:
        labels[right > right.max() / 2.0] = RIGHT_LUNG
    if left.max() > 0:
        labels[left > left.max() / 2.0] = LEFT_LUNG
    return labels


def looks_like_mask(array: np.ndarray) -> bool:
    """True for bool arrays and integer arrays with at most three distinct values."""
    array = np.asarray(array)
    if array.dtype == bool:
        return True
    if not np.issubdtype(array.dtype, np.integer):
        return False
    return len(np.unique(array)) <= 3


# --------------------------------------------------------------------------- helpers


def _read_dicom(path: Path) -> ImageData:
    """A DICOM series, placed like a NIfTI of the same scan (same ImageData, same geometry)."""
    data, spacing, affine, meta = read_dicom(path)
    return ImageData(data, spacing, affine, path, "ct", meta)


def _check_file(path: str | Path) -> Path:
    """``path`` when it is a readable, non-empty file; else one :class:`InputFileError` line."""
    path = Path(path).expanduser()
    info = stat_input(path)
    if info is None:
        if path.is_symlink():
            raise InputFileError(
                f"{path}: is a symbolic link to a file that does not exist; point it at "
                "the real file"
            )
        raise InputFileError(f"{path}: file not found; check the path and spelling")
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(
            f"{path}: is a folder, not an image file (and holds no DICOM slices); pass a file "
            "inside it"
        )
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(
            f"{path}: is not a regular file (a device, pipe or socket); save the image to "
            "a file and pass that"
        )
    if info.st_size == 0:
        raise InputFileError(f"{path}: file is empty (0 bytes); re-export or re-download it")
    if not os.access(path, os.R_OK):
        raise InputFileError(
            f"{path}: permission denied (the file cannot be read); check its permissions, "
            "e.g. chmod u+r"
        )
    return path


def _refuse_label_image(raw: np.ndarray, path: Path) -> None:
    """Refuse a raster mask whose foreground is mostly at intermediate grey values.

    An anti-aliased (or JPEG-compressed) binary mask has its foreground near the
    maximum and only its edges in between; a multi-label image (labels 10..14,
    organs 1..5) has most of its foreground at values well below the maximum.
    """
    if not np.issubdtype(raw.dtype, np.integer):
        return
    top = float(raw.max())
    foreground = raw > 0.1 * top
    between = foreground & (raw < 0.9 * top)
    if top <= 0 or np.count_nonzero(between) <= 0.5 * np.count_nonzero(foreground):
        return
    values = np.unique(raw)
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise InputFileError(
        f"{path}: mask has {len(values)} grey values [{shown}] and most of it lies between "
        "0 and the maximum, so it looks like a multi-label image, not a lung mask; save "
        "only the lungs, as 0 background / 1 left lung / 2 right lung or a binary 0/255 mask"
    )


def _kind(path: Path) -> str:
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in RASTER_SUFFIXES:
        return "raster"
    if suffix in NPY_SUFFIXES:
        return "npy"
    if is_dicom_file(path):
        return "dicom"
    raise InputFileError(
        f"{path}: unsupported file type; use one of {', '.join(IMAGE_SUFFIXES)}, .dcm "
        "or a folder of DICOM slices"
    )
