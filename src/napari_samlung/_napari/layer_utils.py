"""Geometry and data shared by the reader, the writer and the widget.

- :func:`placement` turns an :class:`~napari_samlung.io.ImageData` into napari
  layer keyword arguments (``scale``, ``translate``, ``metadata``), so an image
  and a mask read from files on the same grid land on the same place.
- :func:`like_from_metadata` rebuilds, from a layer's metadata, the
  :class:`~napari_samlung.io.ImageData` the writer needs to put a mask back on
  its source grid.
- :func:`volume_from_image_layer` checks an Image layer and returns its voxels
  as a ``(slice, row, col)`` array (a 2D image becomes a one-slice volume).

No Qt here: everything is testable without a viewer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.windowing import WINDOW_PRESETS
from ..errors import SamlungError, ShapeMismatchError
from ..io import ImageData

#: Key of our entry in a layer's ``metadata``.
META_KEY = "samlung"
#: Maps RAS world axes to the (superior, posterior, left) axes of our arrays.
_RAS_TO_SPL = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])
#: ITU-R 601-2 luma weights, for RGB image layers.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def placement(image: ImageData, role: str = "image") -> dict:
    """napari layer kwargs placing ``image``'s array in world millimetres.

    ``scale`` is the voxel spacing.  ``translate`` is the world position of
    voxel 0 in the (superior, posterior, left) frame of our arrays when the
    source has an affine, so files on the same grid overlay; otherwise 0.
    ``metadata`` keeps the affine and the source header for the writer.
    """
    ndim = image.data.ndim
    scale = tuple(float(s) for s in image.spacing_zyx_mm[-ndim:])
    translate = (0.0,) * ndim
    if image.affine is not None and ndim == 3:
        origin = _RAS_TO_SPL @ np.asarray(image.affine, float)[:3, 3]
        translate = tuple(float(v) for v in origin)
    meta = {
        "role": role,
        "spacing_zyx_mm": scale,
        "affine": None if image.affine is None else np.asarray(image.affine, float),
        "modality": image.modality,
        "source_path": None if image.source_path is None else str(image.source_path),
        "shape": tuple(int(n) for n in image.data.shape),
        "meta": dict(image.meta),
    }
    return {"scale": scale, "translate": translate, "metadata": {META_KEY: meta}}


def samlung_meta(metadata: dict | None) -> dict | None:
    """Our entry of a layer's metadata, or None."""
    if not metadata:
        return None
    entry = metadata.get(META_KEY)
    return entry if isinstance(entry, dict) else None


def like_from_metadata(shape: tuple[int, ...], metadata: dict | None, scale=None) -> ImageData:
    """An :class:`ImageData` stand-in (no voxels) describing where labels of ``shape`` belong.

    Uses the geometry our reader stored in the layer metadata when its shape
    matches; otherwise the layer's ``scale`` as the spacing and no affine.
    """
    shape = tuple(int(n) for n in shape)
    entry = samlung_meta(metadata)
    stand_in = np.broadcast_to(np.zeros((), np.uint8), shape)
    if entry is not None and tuple(entry.get("shape", ())) == shape:
        source = entry.get("source_path")
        return ImageData(
            stand_in,
            tuple(entry["spacing_zyx_mm"]),
            entry.get("affine"),
            Path(source) if source else None,
            entry.get("modality", "ct"),
            dict(entry.get("meta") or {}),
        )
    spacing = tuple(float(s) for s in scale) if scale is not None else (1.0,) * len(shape)
    return ImageData(stand_in, spacing[-len(shape) :], None, None, "ct", {})


def ct_contrast_limits(data: np.ndarray) -> tuple[float, float] | None:
    """The lung window as contrast limits for CT in Hounsfield units, else None."""
    if data.dtype == np.uint8 or data.size == 0:
        return None
    low = float(np.min(data))
    if low > -500:  # not Hounsfield units (no air): keep napari's automatic limits
        return None
    level, width = WINDOW_PRESETS["lung"]  # type: ignore[misc]
    return (level - width / 2.0, level + width / 2.0)


def volume_from_image_layer(layer) -> tuple[np.ndarray, bool]:
    """``(volume, is_2d)`` for an Image layer: ``(slice, row, col)`` voxels.

    RGB(A) layers are converted to grey (uint8; float RGB in 0..1 is scaled to 0..255).  Raises
    :class:`~napari_samlung.errors.SamlungError` with what to do for
    multiscale, 4D+ or 1D data.
    """
    name = getattr(layer, "name", "the image")
    if getattr(layer, "multiscale", False):
        raise SamlungError(
            f"layer {name!r} is multiscale; open the full-resolution image as a plain layer"
        )
    data = layer.data
    if getattr(layer, "rgb", False):
        rgb = np.asarray(data)[..., :3].astype(np.float32)
        if np.issubdtype(np.asarray(data).dtype, np.floating) and rgb.size and rgb.max() <= 1.0:
            rgb = rgb * 255.0  # napari's float RGB convention: 0..1
        data = np.clip(np.rint(rgb @ _LUMA), 0, 255).astype(np.uint8)
    else:
        data = np.asarray(data)
    if data.ndim == 2:
        return data[None], True
    if data.ndim == 3:
        return data, False
    raise ShapeMismatchError(
        f"layer {name!r} has {data.ndim} dimensions {tuple(data.shape)}; napari-samlung "
        "segments a 2D image or a 3D (slice, row, col) volume: split channels or time "
        "points into separate layers first"
    )
