"""The console script on inputs that were read wrong or ended in a traceback (issue 13,
sections 2-4, input side): each is now read right, or refused in one line before any
model work.  The conventions and helpers are in ``cli_helpers.py``.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import (  # noqa: F401 (the xray fixture)
    SIZE,
    TINY,
    refused,
    run_cli,
    save_nifti,
    segment_args,
    skipped_lines,
    two_lungs,
    xray_fixture,
)
from PIL import Image

from conftest import save_png
from napari_samlung.cli import EXIT_SKIPPED
from napari_samlung.io.tables import read_scores_csv


def test_a_float32_label_map_scores_both_lungs(tmp_path, capsys):
    labels = np.zeros((4, SIZE, SIZE), np.uint8)
    labels[2] = two_lungs()
    volume = np.where(labels > 0, -850, 40).astype(np.int16)
    ct = save_nifti(tmp_path / "ct.nii.gz", volume)
    mask = save_nifti(tmp_path / "ct_mask.nii.gz", labels.astype(np.float32))
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, ["evaluate", ct, mask, "--out", out, *TINY])
    assert code == 0, err
    (row,) = read_scores_csv(out / "per_slice.csv")
    assert set(row.dice_per_lung) == {1, 2}  # lung 1 was lost by the old rule


def test_a_mask_with_a_lung_at_value_3_is_skipped_with_the_reason(tmp_path, xray, capsys):
    lungs = two_lungs()
    odd = np.select([lungs == 1, lungs == 2], [3, 255], 0).astype(np.uint8)
    mask = save_png(tmp_path / "odd_mask.png", odd)
    code, _, err = run_cli(capsys, ["evaluate", xray[0], mask, *TINY])
    assert code == EXIT_SKIPPED
    (line,) = skipped_lines(err)
    assert "odd_mask.png: mask value 3 covers" in line
    assert "0 background / 1 left lung / 2 right lung" in line


def test_segment_refuses_the_ambiguous_mask_before_any_model_work(tmp_path, xray, capsys):
    lungs = two_lungs()
    odd = np.select([lungs == 1, lungs == 2], [1, 255], 0).astype(np.uint8)
    mask = save_png(tmp_path / "odd_mask.png", odd)
    out = tmp_path / "pred.png"
    line = refused(capsys, segment_args(xray[0], mask, out))
    assert "mask value 1 covers" in line and not out.exists()


def test_an_exif_rotated_jpeg_is_turned_and_said(tmp_path, capsys):
    lungs = np.zeros((48, SIZE), np.uint8)
    lungs[4:44, 3:14], lungs[4:44, 18:29] = 2, 1
    upright = np.where(lungs > 0, 40, 200).astype(np.uint8)
    stored = Image.fromarray(np.rot90(upright, 1))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "chest.jpg", exif=exif.tobytes(), quality=95)
    mask = save_png(tmp_path / "chest_mask.png", np.where(lungs > 0, 255, 0).astype(np.uint8))
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"EXIF orientation \(rotated 90 degrees clockwise\)"):
        code, _, err = run_cli(
            capsys, ["evaluate", tmp_path / "chest.jpg", mask, "--out", out, *TINY]
        )
    assert code == 0, err  # shapes agree once the orientation is applied
    (row,) = read_scores_csv(out / "per_slice.csv")
    assert np.isfinite(row.dice)


@pytest.mark.parametrize("shape", [(4, 1000), (2, 300)])
def test_a_strip_thin_xray_is_refused_in_one_line(tmp_path, capsys, shape):
    strip = save_png(tmp_path / "strip.png", np.full(shape, 128, np.uint8))
    out = tmp_path / "pred.png"
    line = refused(capsys, ["segment", strip, "--auto", "-o", out, *TINY])
    assert f"strip.png: slices of {shape[0]} x {shape[1]} pixels are too thin" in line


def test_complex_and_rgb_nifti_are_one_line_without_numpy_warnings(tmp_path, capsys):
    complex_ct = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.full((SIZE, SIZE, 3), 1 + 2j, np.complex64), np.eye(4)),
             complex_ct)  # fmt: skip
    line = refused(capsys, ["segment", complex_ct, "--auto", "-o", tmp_path / "p.nii.gz", *TINY])
    assert "complex-valued voxels" in line and "ComplexWarning" not in line
    rgb = np.zeros((SIZE, SIZE, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb_ct = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), rgb_ct)
    line = refused(capsys, ["segment", rgb_ct, "--auto", "-o", tmp_path / "p.nii.gz", *TINY])
    assert "rgb24 colour voxels" in line


def test_symlink_loop_and_long_name_as_the_image(tmp_path, capsys):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    a.symlink_to(b)
    b.symlink_to(a)
    line = refused(capsys, ["segment", a, "--auto", "-o", tmp_path / "p.nii.gz", *TINY])
    assert "symbolic link loop" in line
    long = tmp_path / ("c" * 300 + ".nii.gz")
    line = refused(capsys, ["segment", long, "--auto", "-o", tmp_path / "p.nii.gz", *TINY])
    assert "too long for the file system" in line


@pytest.mark.parametrize(
    "entry,expected",
    [
        ({"slice": 0, "boxes_xyxy": [[2, 2, 14, 29]], "box_labels": [7]}, "is not null or 1 or 2"),
        ({"slice": 0, "boxes_xyxy": [[0, 0, 1e300, 1e300]]}, "beyond 1e+06 pixels"),
        ({"slice": 0, "points_rc": [[10, 5]], "point_labels": [1, 1]}, "2 point_labels"),
        ({"slice": "0", "points_rc": [[10, 5]]}, "'slice' must be a whole number"),
    ],
)
def test_prompts_files_the_entry_check_missed(tmp_path, xray, capsys, entry, expected):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"slices": [entry]}))
    out = tmp_path / "pred.png"
    line = refused(capsys, ["segment", xray[0], "--propagate-from", prompts, "-o", out, *TINY])
    assert "prompts.json" in line and expected in line and not out.exists()
