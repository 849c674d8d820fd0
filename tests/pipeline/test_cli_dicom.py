"""The console script on DICOM: a series as IMAGE, ``-o OUT.dcm`` (DICOM SEG) and
``--stats FILE.json`` (lung volumes); the same Dice as the same run on the NIfTI; one-line
refusals."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import (  # noqa: F401 (the ct and xray fixtures)
    ct_fixture,
    refused,
    run_cli,
    segment_args,
    xray_fixture,
)

from conftest import DATA_DIR, requires_data
from dicom_series import pydicom, seg_frame_sources, series_from_nifti, write_series

hd = pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (napari-samlung[dicom])")

CT128 = DATA_DIR / "ct_volumes_128"


@pytest.mark.slow
@requires_data("ct_volumes_128")
def test_dicom_run_matches_the_nifti_run(tmp_path, capsys):
    """lite_medsam from the ground truth: same Dice and volumes on the series as on the NIfTI.

    (About 4 minutes a run on two CPU cores.)
    """
    nifti, mask = CT128 / "id003-128x128x64.nii.gz", CT128 / "id003-128x128x64-msk.nii.gz"
    files = series_from_nifti(nifti, tmp_path / "series", seed=11)
    runs = {}
    for kind, image, out in (
        ("dicom", tmp_path / "series", tmp_path / "lungs.dcm"),
        ("nifti", nifti, tmp_path / "lungs.nii.gz"),
    ):
        stats = tmp_path / f"{kind}.json"
        args = ["segment", image, "--prompts-from", mask, "-o", out, "--stats", stats]
        code, stdout, err = run_cli(capsys, args)
        assert code == 0, err
        assert "volume mL: left" in stdout and "error vs truth" in stdout
        runs[kind] = json.loads(stats.read_text())
    dicom, reference = runs["dicom"], runs["nifti"]
    assert dicom["dice_mean"] == pytest.approx(reference["dice_mean"], abs=2e-3)
    assert dicom["dice_mean"] > 0.8
    assert dicom["series_uid"] and reference["series_uid"] is None
    for lung in ("left", "right", "total"):
        assert dicom[lung]["size"] == pytest.approx(reference[lung]["size"], rel=0.01)
        assert dicom[lung]["true_size"] == pytest.approx(reference[lung]["true_size"])

    # the volumes by hand, from the written NIfTI labels and the NIfTI's voxel size
    img = nib.load(str(tmp_path / "lungs.nii.gz"))
    written = np.asarray(img.dataobj)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
    assert reference["unit"] == "mL"
    assert reference["left"]["size"] == pytest.approx(np.count_nonzero(written == 1) * voxel_ml)
    assert reference["right"]["size"] == pytest.approx(np.count_nonzero(written == 2) * voxel_ml)
    assert reference["total"]["hu_mean"] < -500  # lungs are air
    assert reference["left"]["first_slice"] <= reference["left"]["last_slice"]

    # the SEG: on the source series, only the slices with lung
    seg = hd.seg.segread(tmp_path / "lungs.dcm")
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    with_lung = {uids[k] for k in range(len(files)) if written[:, :, k].any()}
    assert set(seg_frame_sources(seg)) == with_lung


@requires_data("nifti_examples")
def test_int16_series_gives_exactly_the_nifti_run(tmp_path, capsys):
    """The micro model on an int16 CT (no rounding): the same labels and Dice, bit for bit."""
    nifti = DATA_DIR / "nifti_examples" / "example_ct_sm.nii.gz"
    series_from_nifti(nifti, tmp_path / "series")
    mask = tmp_path / "mask.nii.gz"
    img = nib.load(str(nifti))
    lungs = (np.asarray(img.dataobj) < -400).astype(np.uint8)  # the air: a crude "mask"
    lungs[:, :, : lungs.shape[2] // 3] = 0
    nib.save(nib.Nifti1Image(lungs, img.affine), str(mask))
    stats = {}
    for kind, image, out in (
        ("dicom", tmp_path / "series", tmp_path / "o.dcm"),
        ("nifti", nifti, tmp_path / "o.nii.gz"),
    ):
        target = tmp_path / f"{kind}.json"
        code, _, err = run_cli(capsys, segment_args(image, mask, out, "--stats", target))
        assert code == 0, err
        stats[kind] = json.loads(target.read_text())
    assert stats["dicom"]["dice_mean"] == stats["nifti"]["dice_mean"]
    for lung in ("left", "right"):
        assert stats["dicom"][lung]["voxels"] == stats["nifti"][lung]["voxels"]
        assert stats["dicom"][lung]["hu_mean"] == pytest.approx(stats["nifti"][lung]["hu_mean"])


def test_seg_output_needs_a_dicom_input(ct, tmp_path, capsys):
    image, mask = ct
    line = refused(capsys, segment_args(image, mask, tmp_path / "lungs.dcm"))
    assert "needs a DICOM input" in line and "write the labels as .nii.gz" in line
    assert not (tmp_path / "lungs.dcm").exists()


def test_bad_series_is_one_line(tmp_path, capsys):
    volume = np.full((32, 32, 4), -900.0, np.float32)
    files = write_series(volume, np.eye(4), tmp_path / "s")
    ds = pydicom.dcmread(files[1])
    ds.Rows, ds.Columns = 16, 64
    ds.save_as(files[1])
    labels = np.zeros((4, 32, 32), np.uint8)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(tmp_path / "m.nii.gz"))
    line = refused(capsys, segment_args(tmp_path / "s", tmp_path / "m.nii.gz", tmp_path / "o.dcm"))
    assert "mixes slice sizes" in line


def test_stats_on_the_micro_model(ct, xray, tmp_path, capsys):
    image, mask = ct
    stats = tmp_path / "stats.json"
    code, stdout, err = run_cli(
        capsys, segment_args(image, mask, tmp_path / "o.nii.gz", "--stats", stats)
    )
    assert code == 0, err
    payload = json.loads(stats.read_text())
    assert payload["unit"] == "mL" and payload["spacing_mm"] == [5.0, 2.0, 2.0]
    assert set(payload) >= {"left", "right", "total", "dice_mean", "image", "shape"}
    assert payload["total"]["true_size"] == pytest.approx(
        np.count_nonzero(nib.load(str(mask)).dataobj) * 0.02
    )
    # an X-ray: areas in cm2; an existing stats file is refused before any work
    xray_image, xray_mask = xray
    code, stdout, err = run_cli(
        capsys,
        segment_args(xray_image, xray_mask, tmp_path / "x.png", "--stats", tmp_path / "x.json"),
    )
    assert code == 0, err
    assert json.loads((tmp_path / "x.json").read_text())["unit"] == "cm2"
    line = refused(capsys, segment_args(image, mask, tmp_path / "o2.nii.gz", "--stats", stats))
    assert "exists; pass --overwrite" in line and not (tmp_path / "o2.nii.gz").exists()
