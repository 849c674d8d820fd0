"""Reading and writing chest CT volumes, X-rays and lung masks; dataset layouts.

- :mod:`.names`: image suffixes, stems, mask words in file names;
- :mod:`.geometry`: display orientation, affines, grid checks;
- :mod:`.nifti`, :mod:`.raster`, :mod:`.npy`, :mod:`.dicom` (+ :mod:`.dicom_pixels`):
  the format parsers (DICOM needs the optional pydicom);
- :mod:`.images`: :class:`ImageData` and the three public readers;
- :mod:`.datasets`: dataset layouts -> cases, and loading one case;
- :mod:`.writers`, :mod:`.atomic`: atomic writers that never overwrite unasked;
- :mod:`.dicom_seg`: lung labels as a DICOM SEG of their source series (needs highdicom);
- :mod:`.tables`: the per-slice scores CSV and the prompts JSON;
- :mod:`.phantom`: a synthetic chest CT for tests and demos.
"""

from __future__ import annotations

from .checks import MAX_DIM, MAX_VOXELS
from .datasets import Case, find_cases, load_case, match_key
from .geometry import check_aligned, display_affine, same_grid
from .images import ImageData, looks_like_mask, read_image, read_mask, read_montgomery_mask
from .names import IMAGE_SUFFIXES, is_mask_path
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
    "load_case",
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
