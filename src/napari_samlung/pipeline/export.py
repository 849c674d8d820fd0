"""What a segmentation run writes besides scores: the labels (NIfTI, PNG or DICOM SEG) and
the lung-volume statistics JSON.

- :func:`check_label_output`: before any work, refuse a ``.dcm`` output for an
  input that is not DICOM (a SEG must reference a source series);
- :func:`write_label_file`: ``.dcm`` -> DICOM SEG
  (:func:`~napari_samlung.io.dicom_seg.write_dicom_seg`), anything else ->
  :func:`~napari_samlung.io.write_labels` (NIfTI stays the default);
- :func:`measure`, :func:`measure_result` and :func:`write_stats`: per-lung and total volumes, slice
  ranges and HU statistics (:func:`~napari_samlung.core.volumes.lung_volumes`),
  with the relative volume error where a ground truth exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.volumes import LungVolumes, lung_volumes
from ..core.windowing import is_prewindowed
from ..errors import SamlungError
from ..io import ImageData, read_mask, write_labels
from ..io.atomic import Inputs, atomic_write_text
from ..io.dicom import is_dicom_file, is_dicom_folder
from ..io.dicom_seg import write_dicom_seg
from ..io.names import image_suffix
from ..io.outputs import check_output
from ..io.writers import LABEL_SUFFIXES

#: Suffix of a DICOM SEG output.
SEG_SUFFIX = ".dcm"


def is_seg_path(path: str | Path) -> bool:
    """True for an output named ``*.dcm``: a DICOM SEG."""
    return Path(path).name.lower().endswith(SEG_SUFFIX)


def is_dicom_input(path: str | Path | None) -> bool:
    """True when ``path`` is a DICOM file or a folder of DICOM slices."""
    if path is None:
        return False
    path = Path(path).expanduser()
    return is_dicom_folder(path) if path.is_dir() else is_dicom_file(path)


def check_output_fits(output: str | Path, image) -> None:
    """Refuse, once the image is read and before any model call, a 2D output type (PNG)
    for a volume of several slices."""
    data = np.asarray(image.data)
    if image_suffix(output) == ".png" and data.ndim == 3 and data.shape[0] > 1:
        raise SamlungError(
            f"{output}: a PNG holds one 2D image, but the input has {data.shape[0]} slices; "
            "write the labels as .nii.gz"
        )


def check_label_output(output: str | Path, image_path: str | Path) -> None:
    """Refuse, before any work, an output type no writer has, and a DICOM SEG output for an
    input that is not DICOM.

    Raises
    ------
    SamlungError
        Naming the output, why, and the fix (write ``.nii.gz``).
    """
    suffix = SEG_SUFFIX if is_seg_path(output) else image_suffix(output)
    if suffix not in (*LABEL_SUFFIXES, SEG_SUFFIX):
        raise SamlungError(
            f"{output}: cannot write this file type; use one of "
            f"{', '.join((*LABEL_SUFFIXES, SEG_SUFFIX))}"
        )
    if is_seg_path(output) and not is_dicom_input(image_path):
        raise SamlungError(
            f"{output}: a DICOM SEG (.dcm) output needs a DICOM input (a folder of slices), "
            f"but {image_path} is not DICOM; write the labels as .nii.gz"
        )


def write_label_file(
    output: str | Path,
    labels: np.ndarray,
    image: ImageData,
    overwrite: bool = False,
    automatic: bool = False,
    inputs: Inputs = (),
) -> Path:
    """Write lung labels on the image's grid: DICOM SEG for ``.dcm``, else NIfTI/PNG.

    ``output`` is never one of ``inputs`` (:func:`~napari_samlung.io.outputs.check_output`).
    """
    if is_seg_path(output):
        check_output(output, overwrite=overwrite, inputs=inputs)
        return write_dicom_seg(output, labels, image, overwrite=overwrite, automatic=automatic)
    return write_labels(output, labels, like=image, overwrite=overwrite, inputs=inputs)


def measure(labels: np.ndarray, image: ImageData, truth: np.ndarray | None = None) -> LungVolumes:
    """Volumes (areas in 2D), slice ranges and, on CT in HU, HU mean/std of each lung."""
    data = np.asarray(image.data)
    hu = data if image.modality == "ct" and not is_prewindowed(data) else None
    labels = np.asarray(labels).reshape(data.shape)
    if truth is not None:
        truth = np.asarray(truth).reshape(data.shape)
    return lung_volumes(labels, image.spacing_zyx_mm, image=hu, truth=truth)


def measure_result(result, truth_path: str | Path | None = None) -> LungVolumes:
    """:func:`measure` of a :class:`~napari_samlung.pipeline.segment.SegmentResult`.

    ``truth_path`` (the ``--prompts-from`` or ``--seed-from`` mask) adds the true
    volumes and the relative volume error.
    """
    truth = read_mask(truth_path, like=result.image) if truth_path is not None else None
    return measure(result.labels, result.image, truth)


def stats_payload(volumes: LungVolumes, image: ImageData, dice: float | None = None) -> dict:
    """The ``--stats`` JSON: the image, its spacing, the per-lung measures and Dice."""
    payload = {
        "image": None if image.source_path is None else str(image.source_path),
        "shape": list(np.shape(image.data)),
        "series_uid": image.meta.get("series_uid"),
        **volumes.to_dict(),
    }
    if dice is not None:
        payload["dice_mean"] = dice
    return payload


def write_stats(
    path: str | Path, payload: dict, overwrite: bool = False, inputs: Inputs = ()
) -> Path:
    """Write the stats JSON atomically (never over one of ``inputs``); returns the path."""
    text = json.dumps(payload, indent=2) + "\n"
    return atomic_write_text(Path(path).expanduser(), text, overwrite, inputs)
