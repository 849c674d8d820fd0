"""Reading ``.npy`` CT slices and volumes (plain numeric arrays, never pickles)."""

from __future__ import annotations

import tokenize
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from .checks import check_size, error_reason, to_float32


def read_npy(path: Path) -> np.ndarray:
    """Read a 2D ``(row, col)`` slice or 3D ``(slice, row, col)`` volume from ``.npy``.

    The header is checked (dimensions, numeric dtype, size limits) from a
    memory map before the voxels are loaded.  float64/float16/longdouble become float32;
    other dtypes are kept (int16 Hounsfield units, uint8 windowed, bool); complex arrays
    are refused.

    Raises
    ------
    InputFileError
        For corrupt, truncated, pickled, non-numeric, complex, oversized or non-2D/3D arrays.
    """
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        # a corrupt header is parsed as a Python literal: it can fail in the tokenizer
        raise InputFileError(
            f"{path}: not a readable .npy array, or truncated ({error_reason(exc)}); save it "
            "again with numpy.save as a plain numeric array"
        ) from exc
    if not isinstance(mapped, np.ndarray) or mapped.ndim not in (2, 3):
        shape = getattr(mapped, "shape", None)
        raise InputFileError(
            f"{path}: .npy array of shape {shape} is not supported; save a 2D (row, col) "
            "slice or a 3D (slice, row, col) volume"
        )
    if not (np.issubdtype(mapped.dtype, np.number) or mapped.dtype == bool):
        raise InputFileError(
            f"{path}: .npy array has non-numeric dtype {mapped.dtype}; save a numeric array"
        )
    if np.issubdtype(mapped.dtype, np.complexfloating):
        raise InputFileError(
            f"{path}: .npy array holds complex numbers ({mapped.dtype}); CT intensities and "
            "masks are real numbers: save the magnitude or the real part (numpy.abs, .real)"
        )
    check_size(path, mapped.shape)
    try:
        data = np.array(mapped)
    except (ValueError, OSError) as exc:  # pragma: no cover - truncated after the header
        raise InputFileError(
            f"{path}: .npy file is truncated ({error_reason(exc)}); save it again with numpy.save"
        ) from exc
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        data = to_float32(data)  # float64, float16, longdouble
    return data
