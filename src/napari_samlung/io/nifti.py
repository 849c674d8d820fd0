"""Reading NIfTI volumes (``.nii``, ``.nii.gz``) into display orientation.

Voxels keep their stored type after scaling (int16 stays int16; scaled,
float64, float16 or float128 data becomes float32).  RGB, RGBA and complex
voxels are refused before any voxel is loaded.  NaN/Inf voxels are replaced by the
minimum finite value of the volume, with a warning.  What nibabel's header
checks log is collected and turned into one warning each, instead of being
printed on stderr.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio

from ..errors import InputFileError
from .checks import check_size, error_reason, replace_nonfinite, to_float32
from .geometry import to_display

#: Keys of :attr:`ImageData.meta` for NIfTI sources:
#: ``nifti_header`` (a copy of the source header), ``source_affine`` (its 4x4
#: affine), ``source_shape`` (the spatial shape as stored), ``source_ornt``
#: (nibabel orientation of the stored axes), ``source_axcodes`` (e.g.
#: ``("R", "A", "S")``), ``added_axes`` (1 when a 2D NIfTI was read as a
#: single slice, else 0) and ``volume_index`` (which volume of a 4D file).
NIFTI_META_KEYS = (
    "nifti_header",
    "source_affine",
    "source_shape",
    "source_ornt",
    "source_axcodes",
    "added_axes",
    "volume_index",
)

_NIFTI_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    OverflowError,  # e.g. a corrupt header whose sizes overflow numpy.memmap
    zlib.error,
    gzip.BadGzipFile,
    nib.filebasedimages.ImageFileError,
    nib.spatialimages.HeaderDataError,
)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _nibabel_messages():
    """Collect what nibabel's header checks log (it prints them on stderr by default)."""
    logger = nib.imageglobals.logger
    saved = list(logger.handlers)
    collect = _Collect()
    for handler in saved:
        logger.removeHandler(handler)
    logger.addHandler(collect)
    try:
        yield collect.messages
    finally:
        logger.removeHandler(collect)
        for handler in saved:
            logger.addHandler(handler)


def _check_dtype(path: Path, img: nib.spatialimages.SpatialImage) -> None:
    """Refuse voxel types that are not one real number per voxel (RGB, complex), before loading.

    Raises
    ------
    InputFileError
        Naming the file, the stored type and the fix.
    """
    dtype = np.dtype(img.get_data_dtype())
    if dtype.names is not None:
        code = img.header.get("datatype") if hasattr(img.header, "get") else None
        kind = _DATATYPE_NAMES.get(int(code), "structured") if code is not None else "structured"
        raise InputFileError(
            f"{path}: NIfTI holds {kind} colour voxels ({', '.join(dtype.names)} per voxel), "
            "not one value per voxel; save it as a greyscale volume (Hounsfield units, or "
            "labels for a mask)"
        )
    if np.issubdtype(dtype, np.complexfloating):
        raise InputFileError(
            f"{path}: NIfTI holds complex-valued voxels ({dtype.name}); CT intensities and "
            "masks are real numbers: save the magnitude or the real part as a real-valued volume"
        )
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
        raise InputFileError(
            f"{path}: NIfTI voxel type {dtype} is not numeric; save a numeric volume"
        )


#: NIfTI datatype codes of the colour types, for messages.
_DATATYPE_NAMES = {128: "rgb24", 2304: "rgba32"}


def read_nifti(
    path: Path, warn_nonfinite: bool = True
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, dict]:
    """Read a NIfTI file as a ``(slice, row, col)`` volume in radiological display.

    Parameters
    ----------
    path : Path
        An existing, readable ``.nii`` or ``.nii.gz`` file.
    warn_nonfinite : bool
        Warn when NaN/Inf voxels are replaced.

    Returns
    -------
    data : ndarray, shape (slice, row, col)
        A 2D file becomes one slice; a 4D file gives its first volume (with a warning).
    spacing_zyx_mm : tuple of 3 floats
        Voxel spacing along (slice, row, col), in millimetres, from the affine.
    affine : ndarray, shape (4, 4)
        Index ``(z, y, x)`` -> RAS world millimetres.
    meta : dict
        What the writers need to put data back on the source grid; keys
        :data:`NIFTI_META_KEYS`.

    Raises
    ------
    InputFileError
        For corrupt, truncated, oversized or unsupported files, and for
        headers with invalid spacing or a singular/degenerate affine.
    """
    try:
        with _nibabel_messages() as messages:
            img = nib.load(str(path))
    except _NIFTI_READ_ERRORS as exc:
        raise InputFileError(
            f"{path}: not a readable NIfTI file ({error_reason(exc)}); re-export or re-download it"
        ) from exc
    shape = tuple(int(n) for n in img.shape)
    # Trailing singleton dimensions beyond 3 (e.g. a 4D file of one volume) are squeezed.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    volume_index = None
    if len(shape) == 4:
        volume_index = 0
        warnings.warn(
            f"{path}: 4D NIfTI with {shape[3]} volumes; only the first volume is used",
            UserWarning,
            stacklevel=3,
        )
        shape = shape[:3]
    if len(shape) > 4 or len(shape) < 2:
        raise InputFileError(
            f"{path}: {len(img.shape)}D NIfTI of shape {img.shape} is not supported; "
            "save a 3D (or 2D) volume"
        )
    check_size(path, shape)
    _check_dtype(path, img)

    spatial = len(shape)
    zooms = np.asarray(img.header.get_zooms()[:spatial], dtype=float)
    if not (np.all(np.isfinite(zooms)) and np.all(zooms > 0)):
        raise InputFileError(
            f"{path}: invalid voxel spacing {tuple(float(z) for z in zooms)} in the header; "
            "fix pixdim in the header (e.g. with nibabel) before loading"
        )
    source_affine = np.asarray(img.affine, dtype=float)
    linear = source_affine[:3, :3]
    if not np.all(np.isfinite(source_affine)) or abs(np.linalg.det(linear)) < 1e-12:
        raise InputFileError(
            f"{path}: the header's affine is singular or not finite; fix the qform/sform "
            "in the header before loading"
        )
    # what nibabel fixed while loading the header, now that the file is known to be usable
    for message in dict.fromkeys(messages):  # once each, in order
        warnings.warn(
            f"{path}: header problem fixed on load: {message}; check the voxel spacing",
            UserWarning,
            stacklevel=3,
        )

    try:
        dataobj = img.dataobj
        index = (slice(None),) * spatial
        if len(img.shape) > spatial:
            index = index + (0,) * (len(img.shape) - spatial)
        data = np.asanyarray(dataobj[index])
    except _NIFTI_READ_ERRORS as exc:
        raise InputFileError(
            f"{path}: NIfTI file is truncated or corrupt ({error_reason(exc)}); "
            "re-export or re-download it"
        ) from exc
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        data = to_float32(data)  # float64, float16, float128
    added_axes = 0
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
        added_axes = 1
    data = replace_nonfinite(data, path, warn=warn_nonfinite)

    try:
        oriented, affine, spacing, source_ornt = to_display(data, source_affine)
    except ValueError:  # an axis too short to be given a direction
        raise InputFileError(
            f"{path}: the header's affine has a (nearly) degenerate voxel axis, so the "
            "orientation cannot be worked out; fix the qform/sform in the header before loading"
        ) from None
    # Spacing is taken from the affine, the geometry that places the voxels; the header's
    # pixdim should agree (nibabel silently turns a zero pixdim into 1).
    affine_zooms = np.sqrt((linear**2).sum(axis=0))
    if not np.allclose(affine_zooms[:spatial], zooms, rtol=1e-3, atol=1e-4):
        warnings.warn(
            f"{path}: header voxel spacing {tuple(round(float(z), 4) for z in zooms)} "
            f"disagrees with the affine {tuple(round(float(z), 4) for z in affine_zooms)}; "
            "using the affine's",
            UserWarning,
            stacklevel=3,
        )
    meta = {
        "nifti_header": img.header.copy(),
        "source_affine": source_affine,
        "source_shape": shape,
        "source_ornt": source_ornt,
        "source_axcodes": nio.ornt2axcodes(source_ornt),
        "added_axes": added_axes,
        "volume_index": volume_index,
    }
    return oriented, spacing, affine, meta
