"""File-name rules: which suffixes are images, a name's stem, and which names mark a mask.

Every place that strips an image suffix or looks for a mask word in a file
name calls these functions, so ``case.nii.gz`` is ``case`` and
``case-msk.nii.gz`` is a mask everywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
NPY_SUFFIXES = (".npy",)
#: Every suffix :func:`~napari_samlung.io.read_image` understands (matched case-insensitively).
IMAGE_SUFFIXES = NIFTI_SUFFIXES + RASTER_SUFFIXES + NPY_SUFFIXES
#: DICOM slices: read as a series (their folder), never as cases of a dataset folder;
#: files without a suffix are DICOM when they carry the ``DICM`` marker
#: (:func:`~napari_samlung.io.dicom.is_dicom_file`).
DICOM_SUFFIXES = (".dcm",)

#: Words that mark a mask in a file or folder name (see :func:`has_mask_token`).
MASK_TOKENS = frozenset(
    {"mask", "masks", "msk", "seg", "segs", "segmentation", "segmentations", "label", "labels"}
)
#: Words that mark an image (dropped when matching an image to its mask).
IMAGE_TOKENS = frozenset({"image", "images", "img", "imgs"})


def image_suffix(path: str | Path) -> str | None:
    """The supported image suffix of a file name.

    Parameters
    ----------
    path : str or Path
        A file name or path; only its last component is looked at.

    Returns
    -------
    str or None
        One of :data:`IMAGE_SUFFIXES`, in lower case (``.nii.gz`` counts as
        one suffix), or None when the name has none of them.
    """
    lower = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def strip_suffix(name: str) -> str:
    """A file name without its image suffix (``.nii.gz`` counts as one suffix).

    A name without a supported image suffix loses its last suffix, like
    :attr:`pathlib.Path.stem`.
    """
    suffix = image_suffix(name)
    if suffix is not None:
        return name[: -len(suffix)]
    return Path(name).stem


def name_tokens(name: str) -> list[str]:
    """Split a file stem into lower-case word/number tokens (``_ - .``, digits, camelCase)."""
    return [t.lower() for t in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]


def has_mask_token(name: str) -> bool:
    """True when a file stem carries a mask word (``mask``, ``msk``, ``seg``, ``label``...)."""
    return any(t in MASK_TOKENS or t.endswith(("mask", "masks")) for t in name_tokens(name))


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
