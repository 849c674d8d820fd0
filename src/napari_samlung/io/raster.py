"""Reading PNG/JPEG X-rays and masks as 2D arrays.

- 8-bit images stay uint8.  16-bit (and 32-bit integer) PNGs are linearly
  min-max scaled to uint8 over the whole image.
- Colour is converted to grey with
  :func:`~napari_samlung.core.windowing.rgb_to_grey` (ITU-R 601-2 luma, as
  Pillow); an alpha channel is dropped (not composited) before that.
- Masks keep their raw grey values, so the caller can tell labels from
  anti-aliasing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..core.windowing import Window, rgb_to_grey, window_to_uint8
from ..errors import InputFileError
from .checks import check_size, error_reason

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def read_raster(path: Path, as_mask: bool = False) -> tuple[np.ndarray, dict]:
    """Read a PNG/JPEG as a 2D ``(row, col)`` array.

    Parameters
    ----------
    path : Path
        An existing, readable image file.
    as_mask : bool
        Keep the raw grey values of 16/32-bit files (int64, or float32 for
        mode ``F``) instead of scaling them to uint8.

    Returns
    -------
    data : ndarray, shape (row, col)
        uint8 grey values (or raw values of a high-depth mask).
    meta : dict
        ``mode`` and ``format`` as Pillow reports them, and ``bit_depth``.

    Raises
    ------
    InputFileError
        For files that are not images, truncated, corrupt or too large.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            check_size(path, (height, width))
            img.load()
            mode = img.mode
            meta = {"mode": mode, "format": img.format}
            if mode in _HIGH_DEPTH_MODES:
                raw = np.asarray(img)
                meta["bit_depth"] = 16 if mode.startswith("I;16") else 32
                if as_mask:
                    return raw.astype(np.int64 if mode != "F" else np.float32), meta
                return window_to_uint8(raw.astype(np.float32), Window(None, None)), meta
            meta["bit_depth"] = 8
            if mode == "L":
                return np.array(img, dtype=np.uint8), meta
            # palette, 1-bit, CMYK, grey+alpha...: via RGB, which drops alpha without compositing
            return rgb_to_grey(np.asarray(img.convert("RGB"))), meta
    except InputFileError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputFileError(
            f"{path}: image is too large to read safely; downsample it first"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputFileError(
            f"{path}: not a PNG/JPEG image (the content is not a recognised image format); "
            "check that the file really is an image"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputFileError(
            f"{path}: image is truncated or corrupt ({error_reason(exc)}); re-export it"
        ) from exc
