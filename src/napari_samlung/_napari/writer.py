"""npe2 writers: a Labels layer -> NIfTI (on the source image's grid), PNG (2D) or DICOM SEG.

The geometry comes from the layer metadata our reader (or the widget, for
its output layer) stored: a mask of a NIfTI volume is written back in the
source file's orientation, with its affine and header, so it overlays the
source in any NIfTI viewer.  Without that metadata the layer's ``scale`` is
used as the voxel spacing.  A mask of a DICOM series can be saved as a
DICOM SEG (``.dcm``) that references that series.

napari asks before replacing an existing file, so the writers overwrite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import write_labels
from ..io.dicom_seg import write_dicom_seg
from .layers import like_from_metadata


def _like(data: np.ndarray, attributes: dict):
    return like_from_metadata(
        np.shape(data), attributes.get("metadata"), scale=attributes.get("scale")
    )


def write_nifti_labels(path: str, data, attributes: dict) -> list[str]:
    """Write a Labels layer to ``.nii``/``.nii.gz``."""
    data = np.asarray(data)
    out = write_labels(Path(path), data, like=_like(data, attributes), overwrite=True)
    return [str(out)]


def write_png_labels(path: str, data, attributes: dict) -> list[str]:
    """Write a 2D Labels layer (or a one-slice volume) to ``.png``."""
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    out = write_labels(Path(path), data, like=None, overwrite=True)
    return [str(out)]


def write_dicom_seg_labels(path: str, data, attributes: dict) -> list[str]:
    """Write the Labels layer of a DICOM series as a DICOM SEG (``.dcm``) referencing it."""
    data = np.asarray(data)
    out = write_dicom_seg(Path(path), data, _like(data, attributes), overwrite=True)
    return [str(out)]
