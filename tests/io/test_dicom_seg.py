"""DICOM SEG output: a round trip through highdicom lands every frame on the right source
slice with exactly the labels written, only slices with lung, two coded lung segments;
and one-line refusals (no DICOM source, a source slice as output, no lung)."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from conftest import DATA_DIR, requires_data
from dicom_series import pydicom, seg_frame_sources, seg_labels_on, series_from_nifti, write_series
from napari_samlung.errors import InputFileError, SamlungError
from napari_samlung.io import read_image, read_mask, write_labels
from napari_samlung.io.dicom_seg import write_dicom_seg

hd = pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (napari-samlung[dicom])")

CT128 = DATA_DIR / "ct_volumes_128"


@requires_data("ct_volumes_128")
def test_seg_round_trip_on_the_source_slices(tmp_path):
    nifti = CT128 / "id002-128x128x64.nii.gz"
    files = series_from_nifti(nifti, tmp_path / "series", seed=5)  # files[k]: NIfTI slice k
    image = read_image(tmp_path / "series")
    labels = read_mask(CT128 / "id002-128x128x64-msk.nii.gz", like=read_image(nifti))
    assert set(np.unique(labels)) == {0, 1, 2}
    out = write_dicom_seg(tmp_path / "lungs.dcm", labels, image)

    # the expected frames, by an independent path: the NIfTI writer's stored (i, j, k) order
    write_labels(tmp_path / "lungs.nii.gz", labels, like=read_image(nifti))
    stored = np.asarray(nib.load(str(tmp_path / "lungs.nii.gz")).dataobj)
    expected = {
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): stored[:, :, k].T
        for k, f in enumerate(files)
    }
    with_lung = {uid for uid, frame in expected.items() if frame.any()}

    seg = hd.seg.segread(out)
    assert str(seg.Modality) == "SEG"
    assert seg.SeriesInstanceUID != image.meta["series_uid"]
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == image.meta["series_uid"]
    assert set(seg_frame_sources(seg)) == with_lung  # only the slices with lung
    assert len(with_lung) < len(files)
    uids = sorted(with_lung)
    np.testing.assert_array_equal(seg_labels_on(seg, uids), np.stack([expected[u] for u in uids]))

    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert segments[1].SegmentLabel == "Left lung" and segments[2].SegmentLabel == "Right lung"
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "44029006"
    assert segments[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "3341006"
    assert all(
        s.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        for s in segments.values()
    )


def _small(tmp_path):
    volume = np.random.default_rng(3).integers(-1000, 400, (10, 8, 4)).astype(np.float32)
    files = write_series(volume, np.diag([0.8, 0.8, 3.0, 1.0]), tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(tmp_path / "s")
    labels = np.zeros(image.data.shape, np.uint8)
    labels[1, 2:5, 1:4] = 2
    labels[1:3, 2:5, 6:9] = 1
    return files, image, labels


def _message(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_refusals_are_one_line(tmp_path):
    files, image, labels = _small(tmp_path)
    with pytest.raises(InputFileError, match="one of the source DICOM slices") as exc:
        write_dicom_seg(files[0], labels, image, overwrite=True)
    _message(exc)
    with pytest.raises(InputFileError, match="hold no lung") as exc:
        write_dicom_seg(tmp_path / "empty.dcm", np.zeros_like(labels), image)
    _message(exc)
    with pytest.raises(SamlungError, match="do not match image") as exc:
        write_dicom_seg(tmp_path / "x.dcm", labels[:1], image)
    _message(exc)
    write_dicom_seg(tmp_path / "seg.dcm", labels, image)
    with pytest.raises(InputFileError, match="exists; pass --overwrite") as exc:
        write_dicom_seg(tmp_path / "seg.dcm", labels, image)
    _message(exc)
    write_dicom_seg(tmp_path / "seg.dcm", labels, image, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@requires_data("ct_volumes_128")
def test_a_nifti_image_has_no_series_to_reference(tmp_path):
    image = read_image(CT128 / "id001-128x128x64.nii.gz")
    labels = np.zeros(image.data.shape, np.uint8)
    labels[30, 40:50, 40:50] = 1
    with pytest.raises(InputFileError, match="not DICOM; write the labels as .nii.gz") as exc:
        write_dicom_seg(tmp_path / "x.dcm", labels, image)
    _message(exc)


def test_moved_source_series_is_named(tmp_path):
    files, image, labels = _small(tmp_path)
    files[1].unlink()
    with pytest.raises(InputFileError, match="keep the series where it was read from") as exc:
        write_dicom_seg(tmp_path / "seg.dcm", labels, image)
    _message(exc)


def test_without_highdicom_the_pip_command(tmp_path, monkeypatch):
    import sys

    files, image, labels = _small(tmp_path)
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(InputFileError, match=r"pip install 'napari-samlung\[dicom\]'") as exc:
        write_dicom_seg(tmp_path / "seg.dcm", labels, image)
    _message(exc)
