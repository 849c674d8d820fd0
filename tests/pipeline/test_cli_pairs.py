"""Image/mask pairs and dataset folders: masks that do not fit, are empty or are not lung
labels, and messy folders whose unusable files are skipped one line each.

The conventions and helpers are in ``cli_helpers.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import (  # noqa: F401 (the ct and xray fixtures)
    SIZE,
    TINY,
    ct_fixture,
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

# --------------------------------------------------------------------------- image/mask pairs


def test_nifti_mask_of_another_shape(tmp_path, ct, capsys):
    image, _ = ct
    small = save_nifti(tmp_path / "small_mask.nii.gz", np.zeros((3, SIZE, SIZE), np.uint8))
    line = refused(capsys, segment_args(image, small, tmp_path / "pred.nii.gz"))
    assert "small_mask.nii.gz has shape (3, 32, 32)" in line and "ct.nii.gz" in line
    assert "use the mask that belongs to this image" in line


def test_mask_in_another_orientation_is_refused_with_resample(tmp_path, ct, capsys):
    image, mask = ct
    stored = nib.load(str(mask))
    flipped = stored.affine.copy()
    flipped[0, 0] *= -1  # same voxels, x axis mirrored: another place in the world
    other = tmp_path / "flipped_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(stored.dataobj), flipped), str(other))
    line = refused(capsys, segment_args(image, other, tmp_path / "pred.nii.gz"))
    assert "flipped_mask.nii.gz" in line and "ct.nii.gz" in line
    assert "different orientation/space" in line and "resample the mask" in line

    code, _, err = run_cli(capsys, ["evaluate", image, other, *TINY])
    assert code == EXIT_SKIPPED
    assert "resample" in skipped_lines(err)[0]


def _organ_labels() -> np.ndarray:
    labels = np.zeros((SIZE, SIZE), np.uint8)
    for i, value in enumerate(range(10, 15)):
        labels[i * 6 : (i + 1) * 6, 2:30] = value
    return labels


def test_png_mask_with_labels_10_to_14_is_refused(tmp_path, xray, capsys):
    mask = save_png(tmp_path / "organs_mask.png", _organ_labels())
    out = tmp_path / "pred.png"
    line = refused(capsys, segment_args(xray[0], mask, out))
    assert "organs_mask.png" in line and "[0, 10, 11, 12, 13, 14]" in line
    assert "multi-label image" in line and "1 left lung / 2 right lung" in line
    assert not out.exists()


def test_npy_mask_with_labels_10_to_14_is_refused(tmp_path, capsys):
    np.save(tmp_path / "ct.npy", np.full((SIZE, SIZE), -500, np.int16))
    np.save(tmp_path / "organs.npy", _organ_labels().astype(np.int16))
    args = segment_args(tmp_path / "ct.npy", tmp_path / "organs.npy", tmp_path / "pred.png")
    line = refused(capsys, args, check_options=False)
    assert "organs.npy: label values [0, 10, 11, 12, 13, 14] are not lung labels" in line
    assert "expected 0 background, 1 left lung, 2 right lung" in line


def test_npy_label_refusal_suggests_an_existing_option(tmp_path, capsys):
    np.save(tmp_path / "ct.npy", np.full((SIZE, SIZE), -500, np.int16))
    np.save(tmp_path / "organs.npy", _organ_labels().astype(np.int16))
    refused(capsys, segment_args(tmp_path / "ct.npy", tmp_path / "organs.npy", tmp_path / "p.png"))


def test_evaluate_an_empty_mask_reports_zero_scored_slices(tmp_path, xray, capsys):
    empty = save_png(tmp_path / "empty_mask.png", np.zeros((SIZE, SIZE), np.uint8))
    summary = tmp_path / "summary.json"
    code, out, err = run_cli(capsys, ["evaluate", xray[0], empty, "--json", summary, *TINY])
    assert code == EXIT_SKIPPED
    (line,) = skipped_lines(err)
    assert "chest: the mask has no lung on any of its 1 slice" in line
    assert "nothing was scored" in line
    assert "scored slices 0" in out and "skipped (empty ground truth) 1" in out
    result = json.loads(summary.read_text())
    assert (result["slices"], result["skipped_empty"]) == (0, 1)


def test_segment_from_an_empty_mask_says_so(tmp_path, xray, capsys):
    empty = save_png(tmp_path / "empty_mask.png", np.zeros((SIZE, SIZE), np.uint8))
    line = refused(capsys, segment_args(xray[0], empty, tmp_path / "pred.png"))
    assert "empty_mask.png" in line and "no lung" in line


def test_all_foreground_mask_runs_and_is_scored(tmp_path, xray, capsys):
    full = save_png(tmp_path / "full_mask.png", np.full((SIZE, SIZE), 255, np.uint8))
    code, out, err = run_cli(capsys, ["evaluate", xray[0], full, "--out", tmp_path / "run", *TINY])
    assert code == 0, err
    rows = read_scores_csv(tmp_path / "run" / "per_slice.csv")
    assert len(rows) == 1 and 0.0 <= rows[0].dice <= 1.0
    assert "scored slices 1" in out


# --------------------------------------------------------------------------- dataset folders


@pytest.fixture
def messy_dataset(tmp_path) -> Path:
    """images/ + masks/: a and b are good; c has no mask; d is a mask without an image;
    a.png duplicates a.jpg; notes.txt, .DS_Store and Thumbs.db are not images."""
    labels = two_lungs()
    image = np.where(labels > 0, 40, 200).astype(np.uint8)
    mask = np.where(labels > 0, 255, 0).astype(np.uint8)
    root = tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name in ("a", "b", "c"):
        save_png(root / "images" / f"{name}.png", image)
    Image.fromarray(image).save(root / "images" / "a.jpg", quality=95)
    for name in ("a", "b", "d"):
        save_png(root / "masks" / f"{name}.png", mask)
    (root / "images" / "notes.txt").write_text("scanned on tuesday")
    (root / "images" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "masks" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    return root


@pytest.mark.parametrize("layout", ["root", "two_folders"])
def test_messy_dataset_skips_what_it_cannot_use_and_runs_the_rest(
    tmp_path, messy_dataset, capsys, layout
):
    where = (
        [messy_dataset] if layout == "root" else [messy_dataset / "images", messy_dataset / "masks"]
    )
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, ["evaluate", *where, "--out", out, *TINY])
    assert code == EXIT_SKIPPED
    lines = skipped_lines(err)
    expected = [
        r"images/notes.txt: not an image file",
        r"images/\.DS_Store: not an image file",
        r"masks/Thumbs.db: not an image file",
        r"images/a.png: duplicate name \(same case as a.jpg\); ignored, rename one of them",
        r"images/c.png: no matching mask in .*masks; case has no ground truth",
        r"masks/d.png: mask has no matching image; ignored",
    ]
    for pattern in expected:
        assert sum(bool(re.search(pattern, line)) for line in lines) == 1, (pattern, err)
    assert len(lines) == len(expected), err
    assert [r.case for r in read_scores_csv(out / "per_slice.csv")] == ["a", "b"]
    assert "cases 2  scored slices 2" in stdout
