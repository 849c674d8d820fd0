"""Orientation and world grids: the one place that decides how voxels are laid out.

Our CT arrays are ``(slice, row, col)`` in *radiological display*
orientation, nibabel axis codes ``("S", "P", "L")``:

- the slice index increases toward the patient's superior (head),
- the row index increases toward posterior (anterior at the top of the image),
- the column index increases toward the patient's left (the patient's right
  is on the image's left).

Any stored orientation (RAS, LAS, LPS, transposed axes, ...) is brought to
it, and back, with a pure permutation/flip of the voxel array: no
resampling.  Affines map array indices to RAS world millimetres.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from nibabel import orientations as nio

from ..errors import ShapeMismatchError

if TYPE_CHECKING:
    from .images import ImageData

#: Orientation of our CT arrays: axis 0 -> Superior, axis 1 -> Posterior, axis 2 -> Left.
DISPLAY_AXCODES = ("S", "P", "L")
DISPLAY_ORNT = nio.axcodes2ornt(DISPLAY_AXCODES)
#: Storage orientation of NIfTI files written without a NIfTI source: RAS+.
RAS_ORNT = nio.axcodes2ornt(("R", "A", "S"))
#: Two affines are "the same grid" when the world positions of every corner
#: voxel agree to within this fraction of the smallest voxel spacing.
GRID_TOLERANCE_VOXELS = 0.1
#: Maps RAS world axes to the (superior, posterior, left) axes of our arrays.
_RAS_TO_SPL = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]])


def display_affine(
    spacing_zyx_mm: tuple[float, ...], origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """The 4x4 affine of a ``(slice, row, col)`` array in radiological display orientation.

    Parameters
    ----------
    spacing_zyx_mm : tuple of 3 floats
        Voxel spacing along (slice, row, col), in millimetres.
    origin_mm : tuple of 3 floats
        RAS world position of voxel ``(0, 0, 0)``, in millimetres.

    Returns
    -------
    ndarray, shape (4, 4)
        Maps index ``(z, y, x)`` to RAS world millimetres: the slice axis
        points superior, rows point posterior, columns point to the
        patient's left.
    """
    sz, sy, sx = (float(s) for s in spacing_zyx_mm)
    affine = np.eye(4)
    affine[:3, :3] = [[0.0, 0.0, -sx], [0.0, -sy, 0.0], [sz, 0.0, 0.0]]
    affine[:3, 3] = origin_mm
    return affine


def display_origin_mm(affine: np.ndarray) -> tuple[float, float, float]:
    """World position of voxel 0 in the (superior, posterior, left) frame of our arrays.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        Index -> RAS world millimetres, as in :attr:`ImageData.affine`.

    Returns
    -------
    tuple of 3 floats
        Millimetres along (superior, posterior, left): what napari's
        ``translate`` needs so that arrays on the same grid overlay.
    """
    origin = _RAS_TO_SPL @ np.asarray(affine, float)[:3, 3]
    return tuple(float(v) for v in origin)


def to_display(
    data: np.ndarray, source_affine: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], np.ndarray]:
    """Re-orient a stored 3D voxel array to radiological display, by permutation/flip only.

    Parameters
    ----------
    data : ndarray, shape (i, j, k)
        Voxels in the stored axis order.
    source_affine : ndarray, shape (4, 4)
        The stored index -> RAS world millimetres affine.

    Returns
    -------
    oriented : ndarray, shape (slice, row, col)
        C-contiguous voxels in display orientation.
    affine : ndarray, shape (4, 4)
        Index ``(z, y, x)`` of ``oriented`` -> RAS world millimetres.
    spacing_zyx_mm : tuple of 3 floats
        Voxel spacing along (slice, row, col), from the affine, in millimetres.
    source_ornt : ndarray, shape (3, 2)
        nibabel orientation of the stored axes (for :func:`from_display`).

    Raises
    ------
    ValueError
        When a voxel axis is too short (nearly degenerate) to be given a direction.
    """
    source_affine = np.asarray(source_affine, dtype=float)
    source_ornt = nio.io_orientation(source_affine)
    if np.isnan(source_ornt).any():
        raise ValueError("the affine has a (nearly) degenerate voxel axis")
    transform = nio.ornt_transform(source_ornt, DISPLAY_ORNT)
    oriented = np.ascontiguousarray(nio.apply_orientation(data, transform))
    affine = source_affine @ nio.inv_ornt_aff(transform, data.shape)
    zooms = np.sqrt((source_affine[:3, :3] ** 2).sum(axis=0))
    spacing = [0.0, 0.0, 0.0]
    for axis, (new_axis, _flip) in enumerate(transform):
        spacing[int(new_axis)] = float(zooms[axis])
    return oriented, affine, (spacing[0], spacing[1], spacing[2]), source_ornt


def from_display(array: np.ndarray, source_ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`to_display`: a ``(slice, row, col)`` array back in the stored axis order.

    Parameters
    ----------
    array : ndarray, shape (slice, row, col)
        Voxels in display orientation.
    source_ornt : ndarray, shape (3, 2)
        The stored orientation returned by :func:`to_display`.
    """
    transform = nio.ornt_transform(DISPLAY_ORNT, source_ornt)
    return np.asarray(nio.apply_orientation(array, transform))


def display_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store a ``(slice, row, col)`` array as RAS+ voxels; return ``(voxels, affine)``.

    Parameters
    ----------
    array : ndarray, shape (slice, row, col)
        Voxels whose index -> world mapping is ``affine``.
    affine : ndarray, shape (4, 4)
        Index -> RAS world millimetres of ``array``.

    Returns
    -------
    voxels : ndarray
        C-contiguous voxels with axes along R, A, S.
    stored_affine : ndarray, shape (4, 4)
        Index -> RAS world millimetres of ``voxels``.
    """
    transform = nio.ornt_transform(nio.io_orientation(affine), RAS_ORNT)
    stored = np.ascontiguousarray(nio.apply_orientation(array, transform))
    return stored, affine @ nio.inv_ornt_aff(transform, array.shape)


def check_aligned(
    labels: np.ndarray,
    mask_path: str | Path,
    like: ImageData,
    mask_affine: np.ndarray | None = None,
) -> None:
    """Raise unless a mask lies on ``like``'s grid: same shape, and same world grid if known.

    Parameters
    ----------
    labels : ndarray
        The mask, ``(slice, row, col)`` or ``(row, col)`` like ``like.data``.
    mask_path : str or Path
        The mask's file, named in the error.
    like : ImageData
        The image the mask belongs to.
    mask_affine : ndarray, shape (4, 4), optional
        The mask's index -> world affine; compared with ``like.affine`` when both exist.

    Raises
    ------
    ShapeMismatchError
        When the shapes differ, or the affines place the grids apart (masks are never resampled).
    """
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

    The tolerance is :data:`GRID_TOLERANCE_VOXELS` of the smallest voxel
    spacing of ``affine_b``, in millimetres; ``shape`` is the (slice, row,
    col) shape of the array both affines describe.
    """
    corners = np.array(np.meshgrid(*[[0, max(n - 1, 0)] for n in shape[:3]], indexing="ij"))
    corners = corners.reshape(3, -1)
    homogeneous = np.vstack([corners, np.ones(corners.shape[1])])
    world_a = (np.asarray(affine_a) @ homogeneous)[:3]
    world_b = (np.asarray(affine_b) @ homogeneous)[:3]
    spacing = np.sqrt((np.asarray(affine_b)[:3, :3] ** 2).sum(axis=0))
    tolerance = GRID_TOLERANCE_VOXELS * float(spacing.min())
    return bool(np.abs(world_a - world_b).max() <= tolerance)
