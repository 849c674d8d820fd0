"""Checks every reader shares: the input path, size limits, non-finite voxels, and one-line
error reasons."""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputFileError

#: Largest image accepted, in voxels (512 Mi voxels: 1 GiB as int16).  Checked
#: from the header before any voxel is loaded.
MAX_VOXELS = 1024**3 // 2
#: Largest accepted size of any single image dimension, in voxels/pixels.
MAX_DIM = 8192
#: The longer side of a slice may be at most this many times its shorter side.  The model
#: scales the longer side to its input size (256 pixels for LiteMedSAM), so a thinner image
#: would be squeezed to a few pixels (or none) across.
MAX_ASPECT = 16


def stat_input(path: Path) -> os.stat_result | None:
    """``os.stat`` of an input path; None when nothing is there.

    Raises
    ------
    InputFileError
        One line for a symbolic link loop, a name too long for the file system, or a
        folder on the way that cannot be searched, instead of an ``OSError`` traceback.
    """
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise input_path_error(path, exc) from None
    except ValueError as exc:  # e.g. an embedded NUL character
        raise InputFileError(
            f"{path!r}: not a usable path ({error_reason(exc)}); check the name"
        ) from None


def input_path_error(path: Path, exc: OSError) -> InputFileError:
    """The one-line :class:`InputFileError` for an ``OSError`` met while looking up an input."""
    if exc.errno == errno.ELOOP:
        return InputFileError(
            f"{path}: is a symbolic link loop (the link leads back to itself); point it at "
            "the real file or give the file's own path"
        )
    if exc.errno == errno.ENAMETOOLONG:
        longest = max((len(part) for part in Path(path).parts), default=0)
        return InputFileError(
            f"{_shorten(path)}: the path is too long for the file system (a name of "
            f"{longest} characters, {len(str(path))} in all); rename the file or move it "
            "to a shorter path"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return InputFileError(
            f"{path}: permission denied (a folder on the path cannot be searched); check "
            "the folder's permissions, e.g. chmod u+x"
        )
    return InputFileError(f"{path}: cannot be read ({error_reason(exc)}); check the path")


def _shorten(path: Path, limit: int = 120) -> str:
    """A path cut to ``limit`` characters (its start and its end), for one-line messages."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"


def check_slice_shape(path: Path, shape_rc: tuple[int, ...]) -> None:
    """Refuse a slice whose longer side is over :data:`MAX_ASPECT` times its shorter side.

    Raises
    ------
    InputFileError
        Naming ``path``, the slice size and the fix (an X-ray only a few pixels high).
    """
    rows, cols = (int(n) for n in shape_rc[-2:])
    short, long = min(rows, cols), max(rows, cols)
    if short < 1 or long > MAX_ASPECT * short:
        raise InputFileError(
            f"{path}: slices of {rows} x {cols} pixels are too thin to segment (the longer "
            f"side may be at most {MAX_ASPECT} times the shorter); check that this is the "
            "whole image, not a strip of it"
        )


def check_size(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse an image over :data:`MAX_DIM` along any axis or over :data:`MAX_VOXELS` in all.

    Raises
    ------
    InputFileError
        Naming ``path``, the shape or voxel count, and the fix.
    """
    if any(int(n) < 1 for n in shape):
        raise InputFileError(
            f"{path}: image shape {tuple(int(n) for n in shape)} has an empty dimension; "
            "re-export the image"
        )
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


def to_float32(data: np.ndarray) -> np.ndarray:
    """Any float array as float32; values beyond float32's range are clipped to it (no numpy
    overflow warning), NaN/Inf kept for :func:`replace_nonfinite`."""
    if data.dtype == np.float32:
        return data
    big = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore", invalid="ignore"):
        clipped = np.where(np.isfinite(data), np.clip(data, -big, big), data)
        return clipped.astype(np.float32)


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
