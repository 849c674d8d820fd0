"""CT intensity windowing: Hounsfield units -> the uint8 RGB image a SAM encoder sees.

Two normalisations are offered:

``fixed``
    The window ``[level - width/2, level + width/2]`` maps linearly and
    always the same way onto ``[0, 255]``.  Tissue keeps the same grey level
    on every slice, which is what a radiologist expects.
``per-slice``
    Reproduces the paper's code: clip to the window, then min-max scale each
    slice to ``[0, 255]``.

Data that is already 8-bit (X-rays, the pre-windowed "radiopaedia" CT
subset) is not windowed at all: the grey values are used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Normalization = Literal["fixed", "per-slice"]

#: Named (level, width) presets in Hounsfield units.  ``none`` means "use the
#: grey values as they are" (only valid for data that is already 8-bit).
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "paper": (-650.0, 1500.0),
    "lung": (-600.0, 1500.0),
    "narrow-lung": (-500.0, 1000.0),
    "mediastinum": (40.0, 400.0),
    "none": None,
}


@dataclass(frozen=True)
class Window:
    """A CT window.  ``level``/``width`` of ``None`` means no windowing."""

    level: float | None = -500.0
    width: float | None = 1000.0
    normalization: Normalization = "fixed"

    def __post_init__(self) -> None:
        if (self.level is None) != (self.width is None):
            raise ValueError("window level and width must both be given or both be None")
        if self.width is not None and not (np.isfinite(self.width) and self.width > 0):
            raise ValueError(f"window width must be a positive number, got {self.width!r}")
        if self.level is not None and not np.isfinite(self.level):
            raise ValueError(f"window level must be a finite number, got {self.level!r}")
        if self.normalization not in ("fixed", "per-slice"):
            raise ValueError(
                f"normalization must be 'fixed' or 'per-slice', got {self.normalization!r}"
            )

    @property
    def is_none(self) -> bool:
        return self.level is None

    @property
    def limits_hu(self) -> tuple[float, float] | None:
        """The (low, high) HU limits, e.g. for napari contrast limits."""
        if self.level is None or self.width is None:
            return None
        return (self.level - self.width / 2.0, self.level + self.width / 2.0)

    @classmethod
    def preset(cls, name: str, normalization: Normalization = "fixed") -> Window:
        """Build a window from a preset name (see :data:`WINDOW_PRESETS`)."""
        if name not in WINDOW_PRESETS:
            raise ValueError(
                f"unknown window preset {name!r}; choose one of {', '.join(WINDOW_PRESETS)}"
            )
        values = WINDOW_PRESETS[name]
        if values is None:
            return cls(None, None, normalization)
        return cls(values[0], values[1], normalization)

    def describe(self) -> str:
        """Short text used in cache keys, logs and metadata."""
        if self.is_none:
            return "none"
        return f"L{self.level:g}/W{self.width:g}/{self.normalization}"


def is_prewindowed(image: np.ndarray) -> bool:
    """True when ``image`` is already 8-bit display data and must not be windowed."""
    return np.asarray(image).dtype == np.uint8


def window_to_uint8(image: np.ndarray, window: Window) -> np.ndarray:
    """Map a 2D or 3D intensity array to uint8 with ``window``.

    uint8 input is returned unchanged (already windowed).  With
    ``window.is_none`` other input is min-max scaled over the whole array
    (e.g. 16-bit X-rays).  With ``per-slice`` normalisation, a 3D array is
    scaled slice by slice along axis 0.
    """
    image = np.asarray(image)
    if is_prewindowed(image):
        return image
    data = image.astype(np.float32, copy=False)
    if window.is_none:
        return _minmax_uint8(data)
    low, high = window.limits_hu  # type: ignore[misc]
    if np.isnan(data).any():  # NaN voxels show as the window's low end; +-Inf clip
        data = np.where(np.isnan(data), low, data)
    clipped = np.clip(data, low, high)
    if window.normalization == "fixed":
        scaled = (clipped - low) * (255.0 / (high - low))
        return np.rint(scaled).astype(np.uint8)
    if clipped.ndim == 2:
        return _minmax_uint8(clipped)
    return np.stack([_minmax_uint8(s) for s in clipped])


def _minmax_uint8(data: np.ndarray) -> np.ndarray:
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, np.uint8)
    lo = float(data[finite].min())
    hi = float(data[finite].max())
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    scaled = (np.where(finite, data, lo) - lo) * (255.0 / (hi - lo))
    return np.rint(scaled).astype(np.uint8)


def to_rgb(slice_2d: np.ndarray, window: Window) -> np.ndarray:
    """The encoder input of one slice: windowed and stacked to three channels.

    Parameters
    ----------
    slice_2d : np.ndarray
        (rows, cols) intensities (Hounsfield units for CT), or a (rows, cols, 3)
        uint8 slice that is already the encoder input (returned as it is).
    window : Window
        How to map intensities to 0..255; 8-bit data is never windowed
        (:func:`is_prewindowed`).

    Returns
    -------
    np.ndarray
        (rows, cols, 3) uint8.
    """
    slice_2d = np.asarray(slice_2d)
    if slice_2d.ndim == 3 and slice_2d.shape[-1] == 3 and is_prewindowed(slice_2d):
        return slice_2d
    if slice_2d.ndim != 2:
        raise ValueError(f"expected a 2D slice (rows, cols), got shape {slice_2d.shape}")
    gray = window_to_uint8(slice_2d, window)
    return np.repeat(gray[:, :, None], 3, axis=2)


def rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an RGB(A) image, bit-identical to Pillow's ``convert("L")``.

    The one RGB-to-grey conversion of the package (readers and napari layers).

    Parameters
    ----------
    rgb : ndarray, shape (..., row, col, 3 or 4)
        Channel values in 0..255.  uint8 is used as is; other dtypes are
        rounded and clipped to 0..255 first.  An alpha channel is dropped,
        not composited.

    Returns
    -------
    ndarray of uint8, shape (..., row, col)
        ``(299 R + 587 G + 114 B) / 1000`` in Pillow's 16-bit fixed point,
        rounded half up.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"rgb must have 3 or 4 channels last, got shape {rgb.shape}")
    channels = rgb[..., :3]
    if channels.dtype != np.uint8:
        channels = np.clip(np.rint(channels.astype(np.float64)), 0, 255)
    channels = channels.astype(np.uint32)
    luma = channels[..., 0] * 19595 + channels[..., 1] * 38470 + channels[..., 2] * 7471
    return ((luma + 0x8000) >> 16).astype(np.uint8)
