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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.labels import LEFT_LUNG, RIGHT_LUNG, to_lung_labels
from ..errors import InputFileError, ShapeMismatchError
from .checks import replace_nonfinite
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
    if path.is_dir() and is_dicom_folder(path):
        return _read_dicom(path)
    path = _check_file(path)
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
    Masks are normalised with :func:`~napari_samlung.core.labels.to_lung_labels`;
    PNG/JPEG masks with more than three grey values are taken as anti-aliased
    and thresholded at half their maximum, unless most of their foreground
    lies at intermediate grey values: such a file is a multi-label image
    (e.g. labels 10..14), not a lung mask, and is refused with
    :class:`~napari_samlung.errors.InputFileError`.

    With ``like``, the mask must have the image's shape, and when both are
    NIfTI, the same world grid; otherwise
    :class:`~napari_samlung.errors.ShapeMismatchError` is raised (masks are
    never resampled).
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
        if len(np.unique(raw)) > 3:
            _refuse_label_image(raw, path)
            raw = raw.astype(np.float32)  # anti-aliased: threshold at half max
    else:
        raw = read_npy(path)
    labels = to_lung_labels(raw, name=str(path))
    if like is not None:
        check_aligned(labels, path, like, mask_affine=affine)
    return labels


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
    path = Path(path).expanduser()
    if not path.exists():
        raise InputFileError(f"{path}: file not found; check the path and spelling")
    if path.is_dir():
        raise InputFileError(
            f"{path}: is a folder, not an image file (and holds no DICOM slices); pass a file "
            "inside it"
        )
    if path.stat().st_size == 0:
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
