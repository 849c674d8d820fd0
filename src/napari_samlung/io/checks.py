"""Checks every reader shares: size limits, non-finite voxels, and one-line error reasons."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..errors import InputFileError

#: Largest image accepted, in voxels (512 Mi voxels: 1 GiB as int16).  Checked
#: from the header before any voxel is loaded.
MAX_VOXELS = 1024**3 // 2
#: Largest accepted size of any single image dimension, in voxels/pixels.
MAX_DIM = 8192


def check_size(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse an image over :data:`MAX_DIM` along any axis or over :data:`MAX_VOXELS` in all.

    Raises
    ------
    InputFileError
        Naming ``path``, the shape or voxel count, and the fix.
    """
    if any(int(n) > MAX_DIM for n in shape):
        raise InputFileError(
            f"{path}: image shape {tuple(int(n) for n in shape)} has a dimension over "
            f"{MAX_DIM}; crop or downsample it first"
        )
    voxels = int(np.prod([int(n) for n in shape], dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise InputFileError(
            f"{path}: image has {voxels} voxels, more than the limit of {MAX_VOXELS}; "
            "crop or downsample it first"
        )


def replace_nonfinite(data: np.ndarray, path: Path, warn: bool = True) -> np.ndarray:
    """Replace NaN/Inf voxels by the minimum finite value (0 if none is finite).

    Integer arrays are returned unchanged.  With ``warn``, a :class:`UserWarning`
    names ``path`` and the number of voxels replaced.
    """
    if not np.issubdtype(data.dtype, np.floating):
        return data
    finite = np.isfinite(data)
    if finite.all():
        return data
    count = int(data.size - finite.sum())
    fill = float(data[finite].min()) if finite.any() else 0.0
    if warn:
        warnings.warn(
            f"{path}: {count} NaN/Inf voxels replaced by the minimum finite value {fill:g}",
            UserWarning,
            stacklevel=3,
        )
    return np.where(finite, data, np.asarray(fill, dtype=data.dtype))


def error_reason(exc: BaseException) -> str:
    """``"TypeName: first line of the message"`` of an exception, for one-line errors."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__
