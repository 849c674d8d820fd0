"""Reading chest CT volumes (NIfTI, .npy) and chest X-rays (PNG/JPEG), images and masks.

Array conventions
-----------------
CT volumes come back as ``(slice, row, col)`` in *radiological display*:

- the slice index increases toward the patient's superior (head),
- the row index increases toward posterior (anterior at the top of the image),
- the column index increases toward the patient's left (the patient's right
  is on the image's left).

This is the orientation code ``("S", "P", "L")`` of :mod:`nibabel.orientations`
and it is reached from any stored orientation (RAS, LAS, LPS, transposed axes,
...) with a pure permutation/flip of the voxel array: no resampling.  What is
needed to write a mask back onto the source grid, in the source orientation,
is kept in :attr:`ImageData.meta` (see :data:`NIFTI_META_KEYS`).

2D images (X-rays, exported CT slices) come back as ``(row, col)`` exactly as
stored; no re-orientation is possible without a header.

Intensity conventions
---------------------
- 8-bit PNG/JPEG stay uint8.  16-bit (and 32-bit integer) PNGs are linearly
  min-max scaled to uint8 over the whole image.  RGB is converted to grey with
  Pillow's ITU-R 601-2 luma transform; an alpha channel is dropped (not
  composited) before that.
- NIfTI voxels keep their stored type after scaling (int16 stays int16,
  scaled or float data becomes float32).  NaN/Inf voxels are replaced by the
  minimum finite value of the volume, with a warning.
- ``.npy``: int16 Hounsfield slices stay int16, uint8 (already windowed)
  slices stay uint8; both are modality ``"ct"``.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import tokenize
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from PIL import Image, UnidentifiedImageError

from ..core.labels import LEFT_LUNG, RIGHT_LUNG, to_lung_labels
from ..core.windowing import Window, window_to_uint8
from ..errors import InputFileError, ShapeMismatchError

#: Largest image accepted, in voxels (512 Mi voxels: 1 GiB as int16).  Checked
#: from the header before any voxel is loaded.
MAX_VOXELS = 1024**3 // 2
#: Largest accepted size of any single image dimension, in voxels/pixels.
MAX_DIM = 8192

NIFTI_SUFFIXES = (".nii.gz", ".nii")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)
#: Every suffix :func:`read_image` understands (matched case-insensitively).
IMAGE_SUFFIXES = NIFTI_SUFFIXES + RASTER_SUFFIXES + NPY_SUFFIXES

#: Orientation of our CT arrays: axis 0 -> Superior, axis 1 -> Posterior, axis 2 -> Left.
DISPLAY_AXCODES = ("S", "P", "L")
DISPLAY_ORNT = nio.axcodes2ornt(DISPLAY_AXCODES)

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

#: Two affines are "the same grid" when the world positions of every corner
#: voxel agree to within this fraction of the smallest voxel spacing.
GRID_TOLERANCE_VOXELS = 0.1

_MASK_TOKENS = frozenset(
    {"mask", "masks", "msk", "seg", "segs", "segmentation", "segmentations", "label", "labels"}
)


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


# --------------------------------------------------------------------------- public API


def read_image(path: str | Path) -> ImageData:
    """Read a CT volume, CT slice or X-ray; dispatches on the file suffix.

    Raises :class:`~napari_samlung.errors.InputFileError` (one line naming the
    file, the problem and the fix) for missing, empty, corrupt, oversized or
    unsupported files.
    """
    path = _check_file(path)
    kind = _kind(path)
    if kind == "nifti":
        return _read_nifti(path)
    if kind == "raster":
        data, meta = _read_raster(path)
        return ImageData(data, (1.0, 1.0), None, path, "xray", meta)
    data = _read_npy(path)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    data = _replace_nonfinite(data, path)
    spacing = (1.0,) * data.ndim
    return ImageData(data, spacing, None, path, "ct", {"windowed": data.dtype == np.uint8})


def read_mask(path: str | Path, like: ImageData | None = None) -> np.ndarray:
    """Read a lung mask as uint8 labels {0 background, 1 left lung, 2 right lung}.

    The mask is placed exactly like :func:`read_image` places an image (same
    orientation code path).  Masks are normalised with
    :func:`~napari_samlung.core.labels.to_lung_labels`; PNG/JPEG masks with
    more than three grey values are taken as anti-aliased and thresholded at
    half their maximum, unless most of their foreground lies at intermediate
    grey values: such a file is a multi-label image (e.g. labels 10..14), not a
    lung mask, and is refused with :class:`~napari_samlung.errors.InputFileError`.

    With ``like``, the mask must have the image's shape, and when both are
    NIfTI, the same world grid; otherwise
    :class:`~napari_samlung.errors.ShapeMismatchError` is raised (masks are
    never resampled).
    """
    path = _check_file(path)
    kind = _kind(path)
    affine: np.ndarray | None = None
    if kind == "nifti":
        image = _read_nifti(path, warn_nonfinite=False)
        raw, affine = image.data, image.affine
    elif kind == "raster":
        raw, _ = _read_raster(path, as_mask=True)
        if len(np.unique(raw)) > 3:
            _refuse_label_image(raw, path)
            raw = raw.astype(np.float32)  # anti-aliased: threshold at half max
    else:
        raw = _read_npy(path)
    labels = to_lung_labels(raw, name=str(path))
    if like is not None:
        check_aligned(labels, path, like, mask_affine=affine)
    return labels


def read_montgomery_mask(left_path: str | Path, right_path: str | Path) -> np.ndarray:
    """Merge Montgomery ``ManualMask/leftMask`` and ``rightMask`` PNGs into lung labels.

    ``leftMask`` (the patient's left lung, on the image's right) becomes 1 and
    ``rightMask`` becomes 2.  Pixels marked in both keep label 1.
    """
    left_path, right_path = _check_file(left_path), _check_file(right_path)
    left, _ = _read_raster(left_path, as_mask=True)
    right, _ = _read_raster(right_path, as_mask=True)
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


def display_affine(
    spacing_zyx_mm: tuple[float, ...], origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """The 4x4 affine of a ``(slice, row, col)`` array in radiological display orientation.

    Index ``(z, y, x)`` maps to RAS world millimetres: the slice axis points
    superior, rows point posterior, columns point to the patient's left.
    ``origin_mm`` is the world position of voxel ``(0, 0, 0)``.
    """
    sz, sy, sx = (float(s) for s in spacing_zyx_mm)
    affine = np.eye(4)
    affine[:3, :3] = [[0.0, 0.0, -sx], [0.0, -sy, 0.0], [sz, 0.0, 0.0]]
    affine[:3, 3] = origin_mm
    return affine


def check_aligned(
    labels: np.ndarray,
    mask_path: str | Path,
    like: ImageData,
    mask_affine: np.ndarray | None = None,
) -> None:
    """Raise ShapeMismatchError unless a mask lies on ``like``'s grid (shape; affine if known)."""
    image_name = like.source_path if like.source_path is not None else "the image"
    if labels.shape != like.data.shape:
        raise ShapeMismatchError(
            f"mask {mask_path} has shape {labels.shape} but image {image_name} has shape "
            f"{like.data.shape}; use the mask that belongs to this image"
        )
    if (
        mask_affine is not None
        and like.affine is not None
        and not same_grid(mask_affine, like.affine, labels.shape)
    ):
        raise ShapeMismatchError(
            f"mask {mask_path} and image {image_name} are in different orientation/space "
            "(their affines differ); resample the mask onto the image grid first "
            "(napari-samlung refuses to resample)"
        )


def same_grid(affine_a: np.ndarray, affine_b: np.ndarray, shape: tuple[int, ...]) -> bool:
    """True when two index->world affines place every corner of ``shape`` at the same point.

    The tolerance is :data:`GRID_TOLERANCE_VOXELS` of the smallest voxel spacing.
    """
    corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in shape[:3]], indexing="ij"))
    corners = corners.reshape(3, -1)
    homogeneous = np.vstack([corners, np.ones(corners.shape[1])])
    world_a = (np.asarray(affine_a) @ homogeneous)[:3]
    world_b = (np.asarray(affine_b) @ homogeneous)[:3]
    spacing = np.sqrt((np.asarray(affine_b)[:3, :3] ** 2).sum(axis=0))
    tolerance = GRID_TOLERANCE_VOXELS * float(spacing.min())
    return bool(np.abs(world_a - world_b).max() <= tolerance)


def is_mask_path(path: str | Path) -> bool:
    """True when the file name (or its folder's name) marks it as a mask.

    A mask carries a token such as ``mask``, ``masks``, ``msk``, ``seg`` or
    ``label`` (case-insensitive), separated by ``_``, ``-``, ``.``, digits or
    a camelCase boundary: ``id001-msk.nii.gz``, ``case_seg.nii``,
    ``coronacases_001_masks_slice_110.npy``, ``ManualMask/leftMask/x.png``,
    ``masks/x.png``.  ``segment.png`` or ``Maskell.png`` are not masks.
    """
    path = Path(path)
    name = strip_suffix(path.name)
    return has_mask_token(name) or has_mask_token(path.parent.name)


def looks_like_mask(array: np.ndarray) -> bool:
    """True for bool arrays and integer arrays with at most three distinct values."""
    array = np.asarray(array)
    if array.dtype == bool:
        return True
    if not np.issubdtype(array.dtype, np.integer):
        return False
    return len(np.unique(array)) <= 3


def strip_suffix(name: str) -> str:
    """A file name without its image suffix (``.nii.gz`` counts as one suffix)."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def image_suffix(path: str | Path) -> str | None:
    """The supported image suffix of ``path`` (lower case), or None."""
    lower = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def name_tokens(name: str) -> list[str]:
    """Split a file stem into lower-case word/number tokens (``_ - .``, digits, camelCase)."""
    return [t.lower() for t in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]


# --------------------------------------------------------------------------- helpers


def has_mask_token(name: str) -> bool:
    """True when a file stem carries a mask word (``mask``, ``msk``, ``seg``, ``label``...)."""
    return any(t in _MASK_TOKENS or t.endswith(("mask", "masks")) for t in name_tokens(name))


def _check_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputFileError(f"{path}: file not found; check the path and spelling")
    if path.is_dir():
        raise InputFileError(f"{path}: is a folder, not an image file; pass a file inside it")
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
    raise InputFileError(f"{path}: unsupported file type; use one of {', '.join(IMAGE_SUFFIXES)}")


def _check_size(path: Path, shape: tuple[int, ...]) -> None:
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


def _replace_nonfinite(data: np.ndarray, path: Path, warn: bool = True) -> np.ndarray:
    """Replace NaN/Inf voxels by the minimum finite value (0 if none is finite)."""
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


# NIfTI ----------------------------------------------------------------------------------

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


def _read_nifti(path: Path, warn_nonfinite: bool = True) -> ImageData:
    try:
        with _nibabel_messages() as messages:
            img = nib.load(str(path))
    except _NIFTI_READ_ERRORS as exc:
        raise InputFileError(
            f"{path}: not a readable NIfTI file ({_reason(exc)}); re-export or re-download it"
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
    _check_size(path, shape)

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
            f"{path}: NIfTI file is truncated or corrupt ({_reason(exc)}); "
            "re-export or re-download it"
        ) from exc
    data = np.asarray(data)
    if data.dtype == np.float64 or data.dtype == np.float16:
        data = data.astype(np.float32)
    added_axes = 0
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
        added_axes = 1
    data = _replace_nonfinite(data, path, warn=warn_nonfinite)

    source_ornt = nio.io_orientation(source_affine)
    if np.isnan(source_ornt).any():  # an axis too short to be given a direction
        raise InputFileError(
            f"{path}: the header's affine has a (nearly) degenerate voxel axis, so the "
            "orientation cannot be worked out; fix the qform/sform in the header before loading"
        )
    transform = nio.ornt_transform(source_ornt, DISPLAY_ORNT)
    oriented = np.ascontiguousarray(nio.apply_orientation(data, transform))
    affine = source_affine @ nio.inv_ornt_aff(transform, data.shape)
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
    spacing = [0.0, 0.0, 0.0]
    for axis, (new_axis, _flip) in enumerate(transform):
        spacing[int(new_axis)] = float(affine_zooms[axis])
    meta = {
        "nifti_header": img.header.copy(),
        "source_affine": source_affine,
        "source_shape": shape,
        "source_ornt": source_ornt,
        "source_axcodes": nio.ornt2axcodes(source_ornt),
        "added_axes": added_axes,
        "volume_index": volume_index,
    }
    return ImageData(oriented, tuple(spacing), affine, path, "ct", meta)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


# PNG / JPEG -----------------------------------------------------------------------------


def _read_raster(path: Path, as_mask: bool = False) -> tuple[np.ndarray, dict]:
    """Read a PNG/JPEG as a 2D array: uint8 grey (X-ray) or raw grey values (mask)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            _check_size(path, (height, width))
            img.load()
            mode = img.mode
            meta = {"mode": mode, "format": img.format}
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                raw = np.asarray(img)
                meta["bit_depth"] = 16 if mode.startswith("I;16") else 32
                if as_mask:
                    return raw.astype(np.int64 if mode != "F" else np.float32), meta
                return window_to_uint8(raw.astype(np.float32), Window(None, None)), meta
            meta["bit_depth"] = 8
            if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                mode == "P" and "transparency" in img.info
            ):
                img = img.convert("RGB")  # drops alpha without compositing
            gray = img if img.mode == "L" else img.convert("L")
            return np.array(gray, dtype=np.uint8), meta
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
            f"{path}: image is truncated or corrupt ({_reason(exc)}); re-export it"
        ) from exc


def _read_npy(path: Path) -> np.ndarray:
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        # a corrupt header is parsed as a Python literal: it can fail in the tokenizer
        raise InputFileError(
            f"{path}: not a readable .npy array, or truncated ({_reason(exc)}); save it "
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
    _check_size(path, mapped.shape)
    try:
        data = np.array(mapped)
    except (ValueError, OSError) as exc:  # pragma: no cover - truncated after the header
        raise InputFileError(
            f"{path}: .npy file is truncated ({_reason(exc)}); save it again with numpy.save"
        ) from exc
    if data.dtype == np.float64 or data.dtype == np.float16:
        data = data.astype(np.float32)
    return data
