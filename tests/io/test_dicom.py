"""Reading DICOM CT series: the same volume and geometry as the NIfTI of the scan, and
one-line refusals for every bad series.

The series are written by ``dicom_series.py`` from the real ``ct_volumes_128``
volumes (shuffled file names, InstanceNumber reversed), and pydicom's own
bundled CT slice checks a scanner's header.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import DATA_DIR, requires_data
from dicom_series import INTERCEPT, pydicom, series_from_nifti, write_series
from napari_samlung.errors import InputFileError
from napari_samlung.io import read_image, read_mask
from napari_samlung.io.dicom import is_dicom_file, is_dicom_folder

CT128 = DATA_DIR / "ct_volumes_128"
VOLUMES = sorted(CT128.glob("id00?-128x128x64.nii.gz")) or [CT128 / "id001-128x128x64.nii.gz"]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message, message
    return message


def _read_quiet(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean series reads without a warning
        return read_image(path)


@requires_data("ct_volumes_128")
@pytest.mark.parametrize("nifti", VOLUMES, ids=lambda p: p.name[:5])
def test_series_reads_like_its_nifti(nifti, tmp_path):
    series_from_nifti(nifti, tmp_path / "series", seed=len(nifti.name))
    dicom, reference = _read_quiet(tmp_path / "series"), read_image(nifti)
    assert dicom.data.shape == reference.data.shape and dicom.is_volume
    assert dicom.data.dtype == np.int16  # slope 1, whole intercept: stored HU
    # int16 storage at slope 1: HU rounded to the nearest whole number
    expected = np.clip(reference.data, -32768 + INTERCEPT, 32767 + INTERCEPT)
    assert np.abs(dicom.data - expected).max() <= 0.5 + 1e-3
    np.testing.assert_allclose(dicom.affine, reference.affine, atol=1e-4)
    np.testing.assert_allclose(dicom.spacing_zyx_mm, reference.spacing_zyx_mm, rtol=1e-6)
    assert dicom.modality == "ct" and len(dicom.meta["dicom_files"]) == reference.data.shape[0]
    assert dicom.meta["series_uid"] == dicom.meta["dicom_series"][0]["uid"]


@requires_data("nifti_examples")
def test_int16_nifti_comes_back_exactly_and_a_file_reads_its_series(tmp_path):
    nifti = DATA_DIR / "nifti_examples" / "example_ct_sm.nii.gz"  # R,A,S, int16
    files = series_from_nifti(nifti, tmp_path / "s")
    reference = read_image(nifti)
    for path in (tmp_path / "s", files[7]):  # the folder, or any one of its slices
        dicom = _read_quiet(path)
        np.testing.assert_array_equal(dicom.data, reference.data)
        np.testing.assert_allclose(dicom.affine, reference.affine, atol=1e-4)


@pytest.mark.parametrize("axes", [(0, 2, 1), (2, 1, 0)], ids=["coronal", "sagittal"])
def test_any_slice_direction_lands_in_the_same_display(tmp_path, axes):
    """Coronal or sagittal slices of one volume show exactly like its axial NIfTI."""
    rng = np.random.default_rng(1)
    volume = rng.integers(-1000, 1500, (12, 10, 8)).astype(np.int16)
    affine = np.diag([-0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = [40.0, -20.0, 100.0]
    nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "axial.nii.gz"))
    permuted = volume.transpose(axes)
    permuted_affine = affine.copy()
    permuted_affine[:, :3] = affine[:, list(axes)]
    write_series(permuted, permuted_affine, tmp_path / "s")
    dicom, reference = _read_quiet(tmp_path / "s"), read_image(tmp_path / "axial.nii.gz")
    np.testing.assert_array_equal(dicom.data, reference.data)
    np.testing.assert_allclose(dicom.affine, reference.affine, atol=1e-4)


def test_rescale_slope_gives_float_hu(tmp_path):
    volume = np.linspace(-1000, 400, 6 * 5 * 4).reshape(6, 5, 4)
    write_series(volume, np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "s", slope=0.5, intercept=-1000)
    image = _read_quiet(tmp_path / "s")
    assert image.data.dtype == np.float32
    assert np.abs(np.sort(image.data.ravel()) - np.sort(volume.ravel())).max() <= 0.25 + 1e-6


def test_pydicom_bundled_ct_slice(tmp_path):
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    if source is None:
        pytest.skip("this pydicom ships no CT_small.dcm")
    shutil.copy(source, tmp_path / "CT_small.dcm")
    ds = pydicom.dcmread(source)
    image = _read_quiet(tmp_path / "CT_small.dcm")
    assert image.data.shape == (1, int(ds.Rows), int(ds.Columns))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # axial, rows toward posterior, columns toward the patient's left: already display order
    np.testing.assert_array_equal(image.data[0], expected)
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    assert image.spacing_zyx_mm == pytest.approx((float(ds.SliceThickness), row_mm, col_mm))
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    np.testing.assert_allclose(image.affine[:3, 3], [-x, -y, z], atol=1e-4)  # LPS -> RAS
    assert image.meta["dicom_series"][0]["modality"] == "CT"
    # the same slice as an old file without the part-10 header (no preamble, no DICM)
    del ds.file_meta
    ds.preamble = None
    (tmp_path / "old").mkdir()
    pydicom.dcmwrite(tmp_path / "old" / "raw.dcm", ds, implicit_vr=True, little_endian=True)
    np.testing.assert_array_equal(_read_quiet(tmp_path / "old").data, image.data)


def test_detection(tmp_path):
    write_series(np.zeros((4, 4, 3)), np.eye(4), tmp_path / "a" / "b")
    assert is_dicom_folder(tmp_path) and is_dicom_folder(tmp_path / "a" / "b")
    files = sorted((tmp_path / "a" / "b").iterdir())
    assert all(is_dicom_file(f) for f in files)  # .dcm, or the DICM marker without a suffix
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes").write_text("x" * 200)
    assert not is_dicom_folder(tmp_path / "c") and not is_dicom_file(tmp_path / "c" / "notes")


# --------------------------------------------------------------------------- series problems


def _volume(n=8):
    return np.random.default_rng(2).integers(-1000, 500, (6, 5, n)).astype(np.float32)


def test_several_series_pick_the_largest_and_say_so(tmp_path):
    write_series(_volume(8), np.eye(4), tmp_path / "big", description="LUNG 1mm")
    write_series(_volume(3), np.eye(4), tmp_path / "small", description="SCOUT")
    with pytest.warns(
        UserWarning,
        match=r"2 series found; reading the largest CT series .*"
        r"\(LUNG 1mm\), 8 slices",
    ) as record:
        image = read_image(tmp_path)
    assert all("\n" not in str(w.message) for w in record)
    assert image.data.shape[0] == 8
    listed = {s["description"]: s["slices"] for s in image.meta["dicom_series"]}
    assert listed == {"LUNG 1mm": 8, "SCOUT": 3}
    small_file = next((tmp_path / "small").iterdir())
    assert read_image(small_file).data.shape[0] == 3  # a file chooses its own series


def test_missing_slices_warn_naming_the_gap(tmp_path):
    write_series(_volume(10), np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "s", skip=(4, 5))
    with pytest.warns(
        UserWarning,
        match=r"missing slices: 6\.00 mm between slices 3 and 4 "
        r"\(positions 6\.00 and 12\.00 mm, about 2 missing\)",
    ) as record:
        image = read_image(tmp_path / "s")
    assert "\n" not in str(record[0].message)
    assert image.data.shape[0] == 8 and image.spacing_zyx_mm[0] == pytest.approx(2.0)


def test_an_unreadable_file_is_left_out_with_a_warning(tmp_path):
    files = write_series(_volume(5), np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "s")
    files[2].write_bytes(files[2].read_bytes()[:300])  # cut inside the header
    with pytest.warns(UserWarning) as record:
        image = read_image(tmp_path / "s")
    messages = [str(w.message) for w in record]
    assert any(
        f"1 DICOM file(s) cannot be read and are left out ({files[2]}" in m for m in messages
    )
    assert any("missing slices" in m for m in messages)  # and it shows as a gap
    assert image.data.shape[0] == 4


def _edit(folder: Path, index: int, **attributes) -> None:
    path = sorted(p for p in folder.iterdir())[index]
    ds = pydicom.dcmread(path)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _mixed_orientation(t: Path) -> Path:
    write_series(_volume(), np.eye(4), t / "s")
    _edit(t / "s", 2, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])
    return t / "s"


def _mixed_size(t: Path) -> Path:
    write_series(_volume(), np.eye(4), t / "s")
    _edit(t / "s", 3, PixelSpacing=[0.5, 0.5])
    return t / "s"


def _duplicate(t: Path) -> Path:
    write_series(_volume(), np.eye(4), t / "s")
    first = sorted((t / "s").iterdir())[0]
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(t / "s" / "copy.dcm")
    return t / "s"


def _compressed(t: Path) -> Path:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1, RLELossless

    syntax = next(
        (s for s in (JPEGLosslessSV1, RLELossless) if not get_decoder(s).is_available), None
    )
    if syntax is None:
        pytest.skip("every tested compressed syntax has a decoder installed here")
    write_series(_volume(3), np.eye(4), t / "s")
    for path in (t / "s").iterdir():
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not decodable \xff\xd9"])
        ds["PixelData"].VR = "OB"
        ds.save_as(path, enforce_file_format=True)
    return t / "s"


def _no_slices(t: Path) -> Path:
    (t / "s").mkdir()
    (t / "s" / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 10)
    return t / "s"


def _junk_file(t: Path) -> Path:
    (t / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 3)
    return t / "x.dcm"


def _not_a_slice(t: Path) -> Path:
    from pydicom.data import get_testdata_file

    source = get_testdata_file("rtstruct.dcm")  # a structure set: no image geometry
    if source is None:
        pytest.skip("this pydicom ships no rtstruct.dcm")
    shutil.copy(source, t / "rtstruct.dcm")
    return t / "rtstruct.dcm"


def _truncated_pixels(t: Path) -> Path:
    files = write_series(_volume(3), np.eye(4), t / "s")
    files[1].write_bytes(files[1].read_bytes()[:-20])
    return t / "s"


BAD_SERIES = {
    "mixed_orientation": (_mixed_orientation, "mixes slice orientations.*own series"),
    "mixed_size": (_mixed_size, r"mixes slice sizes.*\[0\.5, 0\.5\] mm"),
    "duplicate_position": (_duplicate, "2 slices share a position.*one file per position"),
    "compressed": (_compressed, r"compressed \(.*\).*pip install pylibjpeg.*python-gdcm"),
    "no_slices": (_no_slices, "no DICOM image slices"),
    "junk_file": (_junk_file, r"not a readable DICOM image \(no SeriesInstanceUID"),
    "not_a_slice": (_not_a_slice, "not a CT slice.*open a CT slice or its folder"),
    "truncated_pixels": (_truncated_pixels, "(not a readable DICOM file|cannot be decoded)"),
}


@pytest.mark.filterwarnings("ignore:1 DICOM file")
@pytest.mark.parametrize("case", sorted(BAD_SERIES))
def test_bad_series_one_line(tmp_path, case):
    make, pattern = BAD_SERIES[case]
    with pytest.raises(InputFileError, match=pattern) as exc:
        read_image(make(tmp_path))
    _one_line(exc)


def test_without_pydicom_the_pip_command(tmp_path, monkeypatch):
    write_series(_volume(3), np.eye(4), tmp_path / "s")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(InputFileError, match=r"pip install 'napari-samlung\[dicom\]'") as exc:
        read_image(tmp_path / "s")
    _one_line(exc)


def test_a_dicom_mask_is_refused(tmp_path):
    files = write_series(_volume(3), np.eye(4), tmp_path / "s")
    dcm = next(f for f in files if f.suffix == ".dcm")
    with pytest.raises(InputFileError, match="DICOM masks are not read") as exc:
        read_mask(dcm)
    _one_line(exc)
