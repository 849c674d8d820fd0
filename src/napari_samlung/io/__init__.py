"""Reading and writing chest CT volumes, X-rays and lung masks; dataset layouts."""

from __future__ import annotations

from .datasets import Case, find_cases, match_key
from .images import (
    IMAGE_SUFFIXES,
    MAX_DIM,
    MAX_VOXELS,
    ImageData,
    check_aligned,
    display_affine,
    is_mask_path,
    looks_like_mask,
    read_image,
    read_mask,
    read_montgomery_mask,
    same_grid,
)
from .phantom import make_phantom
from .writers import write_image, write_labels

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_DIM",
    "MAX_VOXELS",
    "Case",
    "ImageData",
    "check_aligned",
    "display_affine",
    "find_cases",
    "is_mask_path",
    "looks_like_mask",
    "make_phantom",
    "match_key",
    "read_image",
    "read_mask",
    "read_montgomery_mask",
    "same_grid",
    "write_image",
    "write_labels",
]
