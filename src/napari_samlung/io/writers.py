"""Writing lung labels and images: NIfTI in the source's grid and orientation, 2D PNG.

Every writer is atomic: the file is written to a hidden temporary file in the
target folder and moved into place with :func:`os.replace`, so a crash never
leaves a half-written file under the target name.  An existing file is never
replaced unless ``overwrite=True``.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from ..errors import InputFileError, ShapeMismatchError
from .atomic import Inputs, atomic_write
from .geometry import display_affine, display_to_ras, from_display
from .images import ImageData
from .names import image_suffix

#: Suffixes the writers understand (matched case-insensitively).
LABEL_SUFFIXES = (".nii.gz", ".nii", ".png")


def write_labels(
    path: str | Path,
    labels: np.ndarray,
    like: ImageData | None = None,
    overwrite: bool = False,
    scale_for_display: bool = False,
    inputs: Inputs = (),
) -> Path:
    """Write lung labels (uint8) to ``.nii``/``.nii.gz`` or ``.png``; return the path.

    NIfTI: ``labels`` are ``(slice, row, col)`` as returned by
    :func:`~napari_samlung.io.read_image`.  With a NIfTI ``like``, they are
    written back on the source grid, in the source's axis order and
    orientation, with the source affine and header, so the file overlays the
    source in any NIfTI viewer.  With another ``like`` its ``affine`` (or its
    spacing) is used; without ``like``, 1 mm voxels.  2D labels become one slice.

    PNG: 2D only.  Values are written as they are, so labels 1 and 2 look
    black in an image viewer; ``scale_for_display=True`` stretches them
    (``value * (255 // max)``, e.g. 1 -> 127, 2 -> 254; a binary mask -> 255).
    Such a PNG still reads back as the same lungs with ``read_mask``.

    ``path`` is never one of ``inputs`` (nor of a run's registered inputs),
    whatever ``overwrite`` says (:func:`~napari_samlung.io.outputs.check_output`).
    """
    path = Path(path).expanduser()
    suffix = _suffix(path)
    array = _as_uint8_labels(labels, path)
    if suffix == ".png":
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2:
            raise ShapeMismatchError(
                f"{path}: a PNG holds one 2D image but the labels have shape {array.shape}; "
                "write a .nii.gz for volumes"
            )
        if like is not None and like.data.shape[-2:] != array.shape:
            raise ShapeMismatchError(
                f"{path}: labels of shape {array.shape} do not match image "
                f"{like.source_path} of shape {like.data.shape}; use labels of this image"
            )
        if scale_for_display and array.max() > 0:
            array = array * np.uint8(255 // int(array.max()))
        return atomic_write(path, lambda tmp: _save_png(array, tmp), overwrite, inputs)
    return _write_nifti(path, array, like, overwrite, is_labels=True, inputs=inputs)


def write_image(
    path: str | Path, image: ImageData, overwrite: bool = False, inputs: Inputs = ()
) -> Path:
    """Write an :class:`ImageData` volume to ``.nii``/``.nii.gz`` (or a 2D uint8 one to PNG).

    A NIfTI-sourced image goes back to its source orientation and header;
    otherwise the image's affine (or spacing) is used and the file is stored
    as RAS+.  Reading the file back with ``read_image`` gives the same array.
    """
    path = Path(path).expanduser()
    suffix = _suffix(path)
    if suffix == ".png":
        data = np.asarray(image.data)
        if data.ndim != 2 or data.dtype != np.uint8:
            raise ShapeMismatchError(
                f"{path}: PNG needs a 2D uint8 image, got {data.dtype} of shape {data.shape}; "
                "write a .nii.gz instead"
            )
        return atomic_write(path, lambda tmp: _save_png(data, tmp), overwrite, inputs)
    return _write_nifti(
        path, np.asarray(image.data), image, overwrite, is_labels=False, inputs=inputs
    )


# --------------------------------------------------------------------------- helpers


def _suffix(path: Path) -> str:
    suffix = image_suffix(path)
    if suffix not in LABEL_SUFFIXES:
        raise InputFileError(
            f"{path}: cannot write this file type; use one of {', '.join(LABEL_SUFFIXES)}"
        )
    return suffix


def _as_uint8_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    array = np.asarray(labels)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.size and (
        not np.all(np.isfinite(array))
        or array.min() < 0
        or array.max() > 255
        or not np.array_equal(array, np.round(array))
    ):
        raise ValueError(
            f"{path}: labels must be whole numbers in 0..255, got {array.dtype} values in "
            f"[{array.min()}, {array.max()}]"
        )
    return array.astype(np.uint8)


def _save_png(array: np.ndarray, tmp: Path) -> None:
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(tmp, format="PNG")


def _write_nifti(
    path: Path,
    array: np.ndarray,
    like: ImageData | None,
    overwrite: bool,
    is_labels: bool,
    inputs: Inputs = (),
) -> Path:
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise ShapeMismatchError(
            f"{path}: expected a (slice, row, col) volume, got shape {array.shape}"
        )
    meta = like.meta if like is not None else {}
    if like is not None and like.data.ndim == 3 and like.data.shape != array.shape:
        raise ShapeMismatchError(
            f"{path}: data of shape {array.shape} does not match image {like.source_path} "
            f"of shape {like.data.shape}; write data of this image"
        )
    from_nifti = "nifti_header" in meta
    image = _to_source_nifti(array, meta) if from_nifti else _to_ras_nifti(array, like)
    if is_labels:
        image.header.set_intent("label")
        image.header["cal_min"] = 0
        image.header["cal_max"] = float(array.max()) if array.size else 0.0
        image.header["descrip"] = b"lung labels: 1 left, 2 right (napari-samlung)"
    return atomic_write(path, lambda tmp: nib.save(image, str(tmp)), overwrite, inputs)


def _to_source_nifti(array: np.ndarray, meta: dict) -> nib.Nifti1Image:
    """Undo the read-time re-orientation and wrap with the source affine and header."""
    header = meta["nifti_header"].copy()
    stored = from_display(array, meta["source_ornt"])
    if meta.get("added_axes"):
        stored = stored[..., 0]
    if stored.shape != tuple(meta["source_shape"]):
        raise ShapeMismatchError(
            f"data of shape {array.shape} does not map onto the source grid "
            f"{tuple(meta['source_shape'])}; use data read from that file"
        )
    stored = np.ascontiguousarray(stored)
    header.set_data_dtype(stored.dtype)
    header.set_slope_inter(1.0, 0.0)
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    if not isinstance(header, nib.Nifti1Header):  # e.g. an Analyze-style header
        header = None
    return image_class(stored, meta["source_affine"], header=header)


def _to_ras_nifti(array: np.ndarray, like: ImageData | None) -> nib.Nifti1Image:
    """Store a display-ordered volume as RAS+ with its affine (or a spacing-based one)."""
    if like is not None and like.affine is not None:
        affine = np.asarray(like.affine, dtype=float)
    else:
        spacing = tuple(like.spacing_zyx_mm) if like is not None else (1.0, 1.0, 1.0)
        spacing = (1.0,) * (3 - len(spacing)) + spacing
        affine = display_affine(spacing)
    stored, stored_affine = display_to_ras(array, affine)
    image = nib.Nifti1Image(stored, stored_affine)
    image.set_qform(stored_affine, code=1)
    image.set_sform(stored_affine, code=1)
    image.header.set_xyzt_units("mm")
    return image
