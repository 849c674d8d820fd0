"""NIfTI files for the reader tests: one asymmetric object stored in any orientation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def grid_affine(axcodes: str, shape_xyz: tuple[int, int, int], spacing=(2.0, 3.0, 4.0)):
    """Affine of a grid stored with ``axcodes`` that covers the same world box for any codes."""
    ornt = nio.axcodes2ornt(tuple(axcodes))
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    for axis, (world_axis, flip) in enumerate(ornt):
        world_axis = int(world_axis)
        affine[world_axis, axis] = flip * spacing[world_axis]
        n = shape_xyz[world_axis]
        # world coordinate of index 0 so that every grid spans [0, (n-1)*spacing]
        affine[world_axis, 3] = 0.0 if flip > 0 else (n - 1) * spacing[world_axis]
    return affine


def world_phantom(world_xyz: np.ndarray) -> np.ndarray:
    """Asymmetric test object defined in RAS world mm: a marker at patient's right/anterior/top."""
    x, y, z = world_xyz
    values = np.zeros(x.shape, np.int16)
    values[x > 30] = 10  # patient's right half (RAS: +x is Right)
    values[(x > 30) & (y > 40) & (z > 20)] = 100  # right, anterior, superior corner
    values[(x < 10) & (y < 10)] = 50  # patient's left, posterior
    return values


def sample_nifti(axcodes: str, box_shape_xyz=(20, 18, 8)) -> tuple[np.ndarray, np.ndarray]:
    ornt = nio.axcodes2ornt(tuple(axcodes))
    stored_shape = tuple(box_shape_xyz[int(world_axis)] for world_axis, _ in ornt)
    affine = grid_affine(axcodes, box_shape_xyz)
    idx = np.indices(stored_shape).reshape(3, -1)
    world = (affine @ np.vstack([idx, np.ones(idx.shape[1])]))[:3]
    return world_phantom(world).reshape(stored_shape), affine
