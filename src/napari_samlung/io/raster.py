"""Reading PNG/JPEG X-rays and masks as 2D arrays.

- 8-bit images stay uint8.  16-bit (and 32-bit integer) PNGs are linearly
  min-max scaled to uint8 over the whole image.
- Colour is converted to grey with
  :func:`~napari_samlung.core.windowing.rgb_to_grey` (ITU-R 601-2 luma, as
  Pillow); an alpha channel is dropped (not composited) before that.
- Masks keep their raw grey values, so the caller can tell labels from
  anti-aliasing.
- An EXIF orientation tag (phones, some viewers' exports) is applied, as image
  viewers do, with a one-line warning that says how the image was turned.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.windowing import Window, rgb_to_grey, window_to_uint8
from ..errors import InputFileError
from .checks import check_size, error_reason

_HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
#: What applying each EXIF orientation (2..8) does to the stored pixels.
EXIF_ORIENTATIONS = {
    2: "mirrored left to right",
    3: "rotated 180 degrees",
    4: "mirrored top to bottom",
    5: "mirrored along its main diagonal",
    6: "rotated 90 degrees clockwise",
    7: "mirrored along its anti-diagonal",
    8: "rotated 90 degrees counter-clockwise",
}
_ORIENTATION_TAG = 0x0112


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation of an image (1, upright, when absent or unreadable)."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block is no reason to refuse the pixels
        return 1
    return value if isinstance(value, int) and value in EXIF_ORIENTATIONS else 1


def _upright(img: Image.Image, path: Path) -> Image.Image:
    """``img`` with its EXIF orientation applied (as viewers show it), and a warning."""
    orientation = _exif_orientation(img)
    if orientation == 1:
        return img
    turned = ImageOps.exif_transpose(img)
    warnings.warn(
        f"{path}: applied its EXIF orientation ({EXIF_ORIENTATIONS[orientation]}), as image "
        "viewers show it; save it upright without the tag to silence this",
        UserWarning,
        stacklevel=3,
    )
    return turned


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
        uint8 grey values (or raw values of a high-depth mask), upright: an EXIF
        orientation tag is applied, with a :class:`UserWarning`.
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
            img = _upright(img, path)
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
