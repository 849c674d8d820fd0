"""Writing lung labels as a DICOM Segmentation (SEG) of their source CT series, with highdicom.

The SEG references the source series (its study, frame of reference and each
source instance), holds two segments, "Left lung" (SNOMED CT 44029006) and
"Right lung" (3341006), and only the frames of source slices that have lung.
The labels are ``(slice, row, col)`` in display orientation; they are mapped
back onto the source slices by the inverse of the reader's re-orientation
(:func:`~napari_samlung.io.dicom.source_frames`).  The file is written with
:func:`~napari_samlung.io.atomic.atomic_write`, never over one of the source
slices.  highdicom is an optional dependency (``napari-samlung[dicom]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import __version__
from ..core.labels import LEFT_LUNG, RIGHT_LUNG
from ..errors import InputFileError, ShapeMismatchError
from .atomic import atomic_write, check_writable
from .checks import error_reason
from .dicom import DICOM_INSTALL, import_pydicom, source_frames
from .images import ImageData

#: Segment number (= label value), label, SNOMED CT code and meaning, display colour (CIELab).
SEGMENTS = (
    (LEFT_LUNG, "Left lung", "44029006", "Left lung"),
    (RIGHT_LUNG, "Right lung", "3341006", "Right lung"),
)


def is_dicom_image(image: ImageData | None) -> bool:
    """True when ``image`` was read from a DICOM series (so a SEG can reference it)."""
    return image is not None and bool(image.meta.get("dicom_files"))


def write_dicom_seg(
    path: str | Path,
    labels: np.ndarray,
    like: ImageData,
    overwrite: bool = False,
    automatic: bool = False,
) -> Path:
    """Write lung labels {0, 1 left, 2 right} as a DICOM SEG of ``like``'s series; return the path.

    Parameters
    ----------
    path : str or Path
        The ``.dcm`` file to write (not one of the source slices).
    labels : ndarray, shape (slice, row, col)
        Lung labels in display orientation, shaped like ``like.data``.
    like : ImageData
        The image read from the DICOM series (its ``meta`` names the slices).
    overwrite : bool
        Replace an existing file (never a source slice).
    automatic : bool
        Segments made without a person's prompts (AUTOMATIC, else SEMIAUTOMATIC).

    Raises
    ------
    InputFileError
        When ``like`` is not from a DICOM series, its slices cannot be read,
        ``path`` is a source slice or cannot be written, or highdicom is missing.
    ShapeMismatchError
        When the labels are not shaped like the image.
    """
    path = Path(path).expanduser()
    if not is_dicom_image(like):
        name = like.source_path if like is not None else "the image"
        raise InputFileError(
            f"{path}: a DICOM SEG needs a DICOM source series, but {name} is not DICOM; "
            "write the labels as .nii.gz"
        )
    sources = [Path(f) for f in like.meta["dicom_files"]]
    if any(path.resolve() == f.resolve() for f in sources):
        raise InputFileError(f"{path} is one of the source DICOM slices; choose another name")
    check_writable(path, overwrite)
    labels = np.asarray(labels)
    if labels.shape != like.data.shape:
        raise ShapeMismatchError(
            f"{path}: labels of shape {labels.shape} do not match image {like.source_path} "
            f"of shape {like.data.shape}; write labels of this image"
        )
    frames = source_frames(labels, like.meta).astype(np.uint8)
    if not frames.any():
        raise InputFileError(f"{path}: the labels hold no lung; nothing to write as DICOM SEG")
    if frames.max() > RIGHT_LUNG:
        raise ShapeMismatchError(
            f"{path}: labels up to {int(frames.max())}; a lung SEG holds 0, 1 (left) and 2 (right)"
        )
    seg = _build(frames, _read_sources(sources), automatic)
    return atomic_write(path, lambda tmp: seg.save_as(tmp), overwrite)


def _import_highdicom():
    try:
        import highdicom
    except ImportError:
        raise InputFileError(
            f"writing DICOM SEG needs highdicom, which is not installed; {DICOM_INSTALL}"
        ) from None
    return highdicom


def _read_sources(files: list[Path]) -> list:
    pydicom = import_pydicom()
    out = []
    for f in files:
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=True))
        except (OSError, Exception) as exc:  # a moved or changed source slice
            raise InputFileError(
                f"{f}: source DICOM slice cannot be read ({error_reason(exc)}); the SEG must "
                "reference its series: keep the series where it was read from"
            ) from None
    return out


def _build(frames: np.ndarray, sources: list, automatic: bool):
    """The highdicom Segmentation (label map ``frames`` on ``sources``, same order)."""
    hd = _import_highdicom()
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = hd.AlgorithmIdentificationSequence(
        name="napari-samlung",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=hd.sr.CodedConcept(code, "SCT", meaning),
            algorithm_type="AUTOMATIC" if automatic else "SEMIAUTOMATIC",
            algorithm_identification=algorithm,
        )
        for number, label, code, meaning in SEGMENTS
    ]
    try:
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=900,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="napari-samlung",
            manufacturer_model_name="napari-samlung",
            software_versions=__version__,
            device_serial_number="none",
            series_description="Lungs (napari-samlung)",
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputFileError(
            f"the source series cannot be referenced by a DICOM SEG ({error_reason(exc)}); "
            "check that its slices carry the standard CT image attributes"
        ) from None
