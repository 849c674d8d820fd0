"""Writing a NIfTI CT volume as a DICOM CT series with pydicom, for the DICOM tests.

The files get realistic headers (CT Image Storage, rescale slope/intercept to
Hounsfield units, int16 stored values, ImageOrientationPatient and
ImagePositionPatient from the NIfTI affine) and shuffled names that say
nothing of their order.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="DICOM tests need pydicom (napari-samlung[dicom])")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

#: Stored value = HU - INTERCEPT (slope 1), the usual CT encoding.
INTERCEPT = -1024.0


def write_series(
    volume: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    *,
    seed: int = 0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "CHEST",
    slope: float = 1.0,
    intercept: float = INTERCEPT,
    skip: tuple[int, ...] = (),
) -> list[Path]:
    """Write ``volume`` (i, j, k voxels, ``affine`` index -> RAS mm) as one slice per k.

    Slices are single-frame CT files named by a random number (shuffled); the
    ``k`` in ``skip`` are left out (a gap).  Returns the files in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)
    col_dir, row_dir, step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    col_mm, row_mm = float(np.linalg.norm(col_dir)), float(np.linalg.norm(row_dir))
    iop = [*(col_dir / col_mm), *(row_dir / row_mm)]
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    names = np.random.default_rng(seed).permutation(10 * volume.shape[2])
    stored = np.round((np.asarray(volume, np.float64) - intercept) / slope)
    stored = np.clip(stored, -32768, 32767).astype(np.int16)
    files = []
    for k in range(volume.shape[2]):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Test^Lung"
        ds.PatientID = "LUNG001"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyID = "1"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 3
        ds.SeriesDescription = description
        ds.Modality = "CT"
        ds.Manufacturer = "pydicom test"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = int(volume.shape[2] - k)  # reversed: never sort by it
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, 3] + k * step]
        ds.PixelSpacing = [f"{row_mm:.8f}", f"{col_mm:.8f}"]
        ds.SliceThickness = f"{float(np.linalg.norm(step)):.6f}"
        ds.KVP = "120"
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "HU"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[0])
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # (row, col)
        path = folder / f"{names[k]:05d}"
        if k % 2:
            path = path.with_suffix(".dcm")  # both kinds of names: .dcm and the DICM marker
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files


def series_from_nifti(nifti: Path, folder: Path, **kwargs) -> list[Path]:
    """A NIfTI file written as a DICOM series (see :func:`write_series`)."""
    img = nib.load(str(nifti))
    return write_series(np.asarray(img.dataobj, np.float32), img.affine, folder, **kwargs)


def seg_frame_sources(seg) -> list[str]:
    """The source SOPInstanceUID each frame of a DICOM SEG lies on, frame by frame."""
    return [
        str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for item in seg.PerFrameFunctionalGroupsSequence
    ]


def seg_labels_on(seg, source_uids: list[str]) -> np.ndarray:
    """The SEG's label map (segment numbers) on each source instance, ``(frame, row, col)``."""
    return np.asarray(
        seg.get_pixels_by_source_instance(
            source_sop_instance_uids=source_uids,
            combine_segments=True,
            ignore_spatial_locations=True,
            skip_overlap_checks=True,
        )
    )
