"""Every bad input gets a clear answer from the console script (Qt-free half of the issue).

Each case goes through ``napari_samlung.cli.main``: a refusal is exactly one stderr line
``napari-samlung: error: ...`` naming the file, the problem and the fix, with exit status
2 and no traceback; ``evaluate`` reports each case it could not use as a
``napari-samlung: skipped: ...`` line, processes the rest and exits with 3.  Accepted
oddities (4D NIfTI, NaN voxels, zero spacing) run with a warning.  All runs use the
hidden micro random SAM on 32 x 32 images, so the whole file takes seconds.

Tests marked ``xfail(strict=True, reason="BUG ...")`` pin down bugs whose fix belongs in
``cli.py`` or ``core/`` (see the reason for the proposed patch).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import closed_port, raw_nifti, save_png, serve_bytes
from napari_samlung.cli import EXIT_SKIPPED, EXIT_USAGE, build_parser, main
from napari_samlung.core import models
from napari_samlung.core.prompts import MAX_POINTS_PER_SLICE
from napari_samlung.io import MAX_DIM, MAX_VOXELS, read_image
from napari_samlung.io import writers as writers_module
from napari_samlung.io.tables import read_scores_csv

#: The hidden micro random SAM: the real code paths at a fraction of the cost.
TINY = ["--model", "micro_random", "--precision", "fp32"]
ERROR = "napari-samlung: error: "
SKIPPED = "napari-samlung: skipped: "
SIZE = 32


# --------------------------------------------------------------------------- helpers


def _options(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices[command]._option_string_actions)


def _check_options(line: str, command: str) -> None:
    """A fix that names an option must name one the command has."""
    for option in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", line):
        assert option in _options(command), f"{option} is not an option of {command}: {line}"


def _cli(capsys, args: list) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


def _error(capsys, args: list, check_options: bool = True) -> str:
    """Run a command that must be refused; return its one stderr line."""
    code, _, err = _cli(capsys, args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_USAGE, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), lines[0]
    if check_options:
        _check_options(lines[0], str(args[0]))
    return lines[0]


def _skipped(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and all(line.startswith(SKIPPED) for line in lines), err
    return lines


def _two_lungs(shape=(SIZE, SIZE)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    rows, cols = shape
    labels[rows // 8 : rows - rows // 8, cols // 10 : cols // 2 - 2] = 2  # right lung
    labels[rows // 8 : rows - rows // 8, cols // 2 + 2 : cols - cols // 10] = 1  # left lung
    return labels


def _nifti(path: Path, zyx: np.ndarray, affine=None) -> Path:
    """Save a (slice, row, col) volume as a RAS NIfTI whose display is ``zyx`` itself."""
    stored = np.ascontiguousarray(np.transpose(zyx, (2, 1, 0))[::-1, ::-1])
    nib.save(
        nib.Nifti1Image(stored, np.diag([2.0, 2.0, 5.0, 1.0]) if affine is None else affine),
        str(path),
    )
    return path


@pytest.fixture
def xray(tmp_path) -> tuple[Path, Path]:
    """A 32 x 32 X-ray-like PNG and its 0/255 two-lung mask."""
    labels = _two_lungs()
    image = np.full(labels.shape, 200, np.uint8)
    image[labels > 0] = 40
    return (
        save_png(tmp_path / "chest.png", image),
        save_png(tmp_path / "chest_mask.png", np.where(labels > 0, 255, 0).astype(np.uint8)),
    )


@pytest.fixture
def ct(tmp_path) -> tuple[Path, Path]:
    """A 4-slice 32 x 32 CT NIfTI (lung on slices 1-2) and its 0/1/2 labels."""
    labels = np.zeros((4, SIZE, SIZE), np.uint8)
    labels[1:3] = _two_lungs()
    volume = np.full(labels.shape, 40, np.int16)
    volume[labels > 0] = -850
    return _nifti(tmp_path / "ct.nii.gz", volume), _nifti(tmp_path / "ct_mask.nii.gz", labels)


def _segment(image: Path, mask: Path, out: Path, *extra) -> list:
    return ["segment", image, "--prompts-from", mask, "-o", out, *TINY, *extra]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- bad image files


def _text_png(t: Path) -> Path:
    (t / "notes.png").write_text("this is not an image\n")
    return t / "notes.png"


def _empty(t: Path) -> Path:
    (t / "empty.nii.gz").write_bytes(b"")
    return t / "empty.nii.gz"


def _folder(t: Path) -> Path:
    (t / "scan.nii.gz").mkdir()
    return t / "scan.nii.gz"


def _truncated(t: Path) -> Path:
    data = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 8), dtype=np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(t / "full.nii.gz"))
    content = (t / "full.nii.gz").read_bytes()
    (t / "cut.nii.gz").write_bytes(content[: len(content) // 2])
    return t / "cut.nii.gz"


def _corrupt_gz(t: Path) -> Path:
    (t / "junk.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip" * 20)
    return t / "junk.nii.gz"


def _five_d(t: Path) -> Path:
    nib.save(
        nib.Nifti1Image(np.zeros((SIZE, SIZE, 4, 2, 2), np.int16), np.eye(4)),
        str(t / "series5d.nii.gz"),
    )
    return t / "series5d.nii.gz"


def _nan_spacing(t: Path) -> Path:
    return raw_nifti(t / "nanspacing.nii", np.zeros((SIZE, SIZE, 4), np.int16), (np.nan, 1, 1))


def _singular(t: Path) -> Path:
    srow = np.array([[0.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    return raw_nifti(t / "singular.nii", np.zeros((SIZE, SIZE, 4), np.int16), (0.0, 1, 1), srow)


def _unknown_suffix(t: Path) -> Path:
    (t / "scan.dcm").write_bytes(b"DICM" * 10)
    return t / "scan.dcm"


BAD_IMAGES = {
    "missing": (lambda t: t / "nothere.nii.gz", "file not found; check the path"),
    "folder": (_folder, "is a folder, not an image file"),
    "empty": (_empty, r"file is empty \(0 bytes\); re-export"),
    "text_png": (_text_png, "not a PNG/JPEG image.*check that the file really is an image"),
    "truncated_nii_gz": (_truncated, "(truncated or corrupt|not a readable NIfTI).*re-download"),
    "corrupt_gzip": (_corrupt_gz, "not a readable NIfTI file.*re-download"),
    "5d_nifti": (_five_d, r"5D NIfTI of shape \(32, 32, 4, 2, 2\) is not supported; save a 3D"),
    "nan_spacing": (_nan_spacing, r"invalid voxel spacing \(nan, 1.0, 1.0\).*fix pixdim"),
    "singular_affine": (_singular, "affine is singular or not finite; fix the qform/sform"),
    "unknown_suffix": (_unknown_suffix, r"unsupported file type; use one of \.nii\.gz"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_segment_refuses_a_bad_image_file(tmp_path, xray, capsys, case):
    make, expected = BAD_IMAGES[case]
    bad = make(tmp_path)
    out = tmp_path / "pred.nii.gz"
    line = _error(capsys, _segment(bad, xray[1], out))
    assert bad.name in line and re.search(expected, line), line
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "empty", "text_png", "truncated_nii_gz"])
def test_segment_refuses_a_bad_mask_file(tmp_path, xray, capsys, case):
    make, expected = BAD_IMAGES[case]
    bad = make(tmp_path)
    out = tmp_path / "pred.png"
    line = _error(capsys, _segment(xray[0], bad, out))
    assert bad.name in line and re.search(expected, line), line
    assert not out.exists()


def test_evaluate_skips_a_case_whose_image_is_not_an_image(tmp_path, xray, capsys):
    bad = _text_png(tmp_path)
    code, out, err = _cli(capsys, ["evaluate", bad, xray[1], *TINY])
    assert code == EXIT_SKIPPED
    (line,) = _skipped(err)
    assert "notes.png: not a PNG/JPEG image" in line
    assert "scored slices 0" in out


@pytest.mark.skipif(
    getattr(os, "geteuid", lambda: 1)() == 0,
    reason="runs as root: chmod 000 does not stop root (the next test forces the check)",
)
def test_unreadable_image_chmod_000(xray, tmp_path, capsys):
    image, mask = xray
    image.chmod(0)
    try:
        line = _error(capsys, _segment(image, mask, tmp_path / "pred.png"))
    finally:
        image.chmod(0o644)
    assert "chest.png: permission denied" in line


def test_unreadable_image_is_named_permission_denied(xray, tmp_path, capsys, monkeypatch):
    image, mask = xray
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if Path(p) == image else real_access(p, mode, **kw),
    )
    line = _error(capsys, _segment(image, mask, tmp_path / "pred.png"))
    assert "chest.png: permission denied (the file cannot be read); check its permissions" in line


# --------------------------------------------------------------------------- huge images


def _huge_png(path: Path, width: int, height: int) -> Path:
    """A 1 x 1 PNG whose header (IHDR) claims ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _no_voxel_loading(monkeypatch) -> None:
    """Fail loudly if any voxel data is read: huge files must be refused from the header."""

    def forbidden(*args, **kwargs):
        raise AssertionError("voxel data was loaded before the size check")

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__getitem__", forbidden)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", forbidden)
    monkeypatch.setattr(Image.Image, "load", forbidden)


def test_huge_nifti_is_refused_from_its_header(tmp_path, xray, capsys, monkeypatch):
    slices = MAX_VOXELS // (MAX_DIM * MAX_DIM) + 1
    huge = raw_nifti(
        tmp_path / "huge.nii", np.zeros((2, 2, 2), np.int16), shape=(MAX_DIM, MAX_DIM, slices)
    )
    wide = raw_nifti(
        tmp_path / "wide.nii", np.zeros((2, 2, 2), np.int16), shape=(MAX_DIM + 1, 2, 2)
    )
    _no_voxel_loading(monkeypatch)
    line = _error(capsys, _segment(huge, xray[1], tmp_path / "pred.nii.gz"))
    assert "huge.nii" in line and f"more than the limit of {MAX_VOXELS}" in line
    assert "crop or downsample it first" in line

    line = _error(capsys, _segment(wide, xray[1], tmp_path / "pred.nii.gz"))
    assert "wide.nii" in line and f"dimension over {MAX_DIM}" in line


def test_huge_png_is_refused_from_its_header(tmp_path, xray, capsys, monkeypatch):
    huge = _huge_png(tmp_path / "huge.png", MAX_DIM + 1, 16)
    _no_voxel_loading(monkeypatch)
    line = _error(capsys, _segment(huge, xray[1], tmp_path / "pred.png"))
    assert f"huge.png: image shape (16, {MAX_DIM + 1}) has a dimension over {MAX_DIM}" in line


def test_huge_npy_is_refused_before_it_is_copied(tmp_path, xray, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((MAX_DIM + 1, 2), np.int16))
    line = _error(capsys, _segment(tmp_path / "wide.npy", xray[1], tmp_path / "pred.png"))
    assert "wide.npy" in line and f"dimension over {MAX_DIM}" in line


# --------------------------------------------------------------------------- accepted oddities


def test_4d_nifti_uses_the_first_volume_with_a_warning(tmp_path, ct, capsys):
    image, mask = ct
    volume = np.asanyarray(nib.load(str(image)).dataobj)
    series = np.stack([volume, volume + 500, volume + 900], axis=-1)
    four_d = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(series, nib.load(str(image)).affine), str(four_d))
    out = tmp_path / "pred.nii.gz"
    with pytest.warns(UserWarning, match="series.nii.gz: 4D NIfTI with 3 volumes; only the first"):
        code, _, err = _cli(capsys, _segment(four_d, mask, out))
    assert code == 0, err
    written = nib.load(str(out))
    assert written.shape == volume.shape  # one 3D mask on the source grid
    np.testing.assert_allclose(written.affine, nib.load(str(image)).affine)


def test_2d_nifti_is_one_slice_and_written_back_2d(tmp_path, capsys):
    labels = _two_lungs()
    image = np.where(labels > 0, -850, 40).astype(np.int16)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(image.T.copy(), affine), str(tmp_path / "slice.nii.gz"))
    nib.save(nib.Nifti1Image(labels.T.copy(), affine), str(tmp_path / "slice_mask.nii.gz"))
    out = tmp_path / "pred.nii.gz"
    args = _segment(tmp_path / "slice.nii.gz", tmp_path / "slice_mask.nii.gz", out)
    code, stdout, err = _cli(capsys, args)
    assert code == 0, err
    assert "scored slices 1" in stdout
    assert nib.load(str(out)).shape == (SIZE, SIZE)


@pytest.mark.parametrize("kind", ["rgba", "16bit"])
def test_rgba_and_16_bit_png_run(tmp_path, xray, capsys, kind):
    grey = np.asarray(Image.open(xray[0]))
    if kind == "rgba":
        array = np.dstack([grey, grey, grey, np.full_like(grey, 100)])
    else:
        array = grey.astype(np.uint16) * 257 + 1000
    image = save_png(tmp_path / f"{kind}.png", array)
    assert Image.open(image).mode == ("RGBA" if kind == "rgba" else "I;16")
    out = tmp_path / "pred.png"
    code, stdout, err = _cli(capsys, _segment(image, xray[1], out))
    assert code == 0, err
    assert "scored slices 1" in stdout
    pred = np.asarray(Image.open(out))
    assert pred.shape == (SIZE, SIZE) and set(np.unique(pred)) <= {0, 1, 2}


def test_nan_and_inf_voxels_run_with_a_warning_and_finite_input(tmp_path, ct, capsys):
    image, mask = ct
    stored = np.asanyarray(nib.load(str(image)).dataobj).astype(np.float32)
    stored[0, 0, 0], stored[5, 5, 1], stored[9, 9, 2] = np.nan, np.inf, -np.inf
    nan_file = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(stored, nib.load(str(image)).affine), str(nan_file))
    out = tmp_path / "pred.nii.gz"
    with pytest.warns(UserWarning, match=r"nan.nii.gz: 3 NaN/Inf voxels replaced by the minimum"):
        code, stdout, err = _cli(capsys, _segment(nan_file, mask, out))
    assert code == 0, err
    assert "scored slices 2" in stdout
    with pytest.warns(UserWarning, match="NaN/Inf"):
        assert np.isfinite(read_image(nan_file).data).all()
    assert set(np.unique(np.asanyarray(nib.load(str(out)).dataobj))) <= {0, 1, 2}


def test_zero_spacing_uses_the_affine_with_a_warning(tmp_path, capsys):
    """pixdim 0 but a valid sform: documented as 'warn and use the affine's spacing'."""
    labels = np.zeros((SIZE, SIZE, 3), np.uint8)
    labels[4:28, 3:14, 1] = 1
    labels[4:28, 18:29, 1] = 2
    srow = np.array([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 4.0, 0]])
    image = raw_nifti(
        tmp_path / "zero.nii",
        np.where(labels > 0, -850, 40).astype(np.int16),
        (0.0, 3.0, 4.0),
        srow,
    )
    mask = raw_nifti(tmp_path / "zero_mask.nii", labels, (0.0, 3.0, 4.0), srow)
    out = tmp_path / "pred.nii.gz"
    with pytest.warns(UserWarning, match="disagrees with the affine.*using the affine's"):
        code, _, err = _cli(capsys, _segment(image, mask, out))
    assert code == 0, err
    np.testing.assert_allclose(nib.load(str(out)).affine[:3, :3], srow[:, :3])


def test_zero_spacing_without_affine_is_fixed_with_a_warning_not_a_print(tmp_path, capfd):
    """nibabel turns pixdim 0 into 1 mm and prints that itself; we warn instead."""
    labels = _two_lungs()
    image = raw_nifti(
        tmp_path / "nosform.nii",
        np.where(labels > 0, -850, 40).astype(np.int16),
        (0.0, 1.0, 1.0),
        sform_code=0,
    )
    mask = raw_nifti(tmp_path / "nosform_mask.nii", labels, (0.0, 1.0, 1.0), sform_code=0)
    out = tmp_path / "pred.nii.gz"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in _segment(image, mask, out)])
    assert code == 0
    assert capfd.readouterr().err == ""
    messages = [str(w.message) for w in caught]
    for name in ("nosform.nii", "nosform_mask.nii"):
        assert any(
            f"{name}: header problem fixed on load" in m and "non-zero" in m for m in messages
        ), messages


def test_a_warning_is_one_napari_samlung_line_on_the_console(tmp_path, ct):
    image, mask = ct
    volume = np.asanyarray(nib.load(str(image)).dataobj)
    four_d = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([volume] * 2, -1), nib.load(str(image)).affine), str(four_d))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_samlung.cli",
            *map(str, _segment(four_d, mask, tmp_path / "p.nii.gz")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-samlung: warning: "), proc.stderr
    assert "4D NIfTI with 2 volumes; only the first volume is used" in lines[0]


# --------------------------------------------------------------------------- image/mask pairs


def test_nifti_mask_of_another_shape(tmp_path, ct, capsys):
    image, _ = ct
    small = _nifti(tmp_path / "small_mask.nii.gz", np.zeros((3, SIZE, SIZE), np.uint8))
    line = _error(capsys, _segment(image, small, tmp_path / "pred.nii.gz"))
    assert "small_mask.nii.gz has shape (3, 32, 32)" in line and "ct.nii.gz" in line
    assert "use the mask that belongs to this image" in line


def test_mask_in_another_orientation_is_refused_with_resample(tmp_path, ct, capsys):
    image, mask = ct
    stored = nib.load(str(mask))
    flipped = stored.affine.copy()
    flipped[0, 0] *= -1  # same voxels, x axis mirrored: another place in the world
    other = tmp_path / "flipped_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(stored.dataobj), flipped), str(other))
    line = _error(capsys, _segment(image, other, tmp_path / "pred.nii.gz"))
    assert "flipped_mask.nii.gz" in line and "ct.nii.gz" in line
    assert "different orientation/space" in line and "resample the mask" in line

    code, _, err = _cli(capsys, ["evaluate", image, other, *TINY])
    assert code == EXIT_SKIPPED
    assert "resample" in _skipped(err)[0]


def _organ_labels() -> np.ndarray:
    labels = np.zeros((SIZE, SIZE), np.uint8)
    for i, value in enumerate(range(10, 15)):
        labels[i * 6 : (i + 1) * 6, 2:30] = value
    return labels


def test_png_mask_with_labels_10_to_14_is_refused(tmp_path, xray, capsys):
    mask = save_png(tmp_path / "organs_mask.png", _organ_labels())
    out = tmp_path / "pred.png"
    line = _error(capsys, _segment(xray[0], mask, out))
    assert "organs_mask.png" in line and "[0, 10, 11, 12, 13, 14]" in line
    assert "multi-label image" in line and "1 left lung / 2 right lung" in line
    assert not out.exists()


def test_npy_mask_with_labels_10_to_14_is_refused(tmp_path, capsys):
    np.save(tmp_path / "ct.npy", np.full((SIZE, SIZE), -500, np.int16))
    np.save(tmp_path / "organs.npy", _organ_labels().astype(np.int16))
    args = _segment(tmp_path / "ct.npy", tmp_path / "organs.npy", tmp_path / "pred.png")
    line = _error(capsys, args, check_options=False)
    assert "organs.npy: label values [0, 10, 11, 12, 13, 14] are not lung labels" in line
    assert "expected 0 background, 1 left lung, 2 right lung" in line


def test_npy_label_refusal_suggests_an_existing_option(tmp_path, capsys):
    np.save(tmp_path / "ct.npy", np.full((SIZE, SIZE), -500, np.int16))
    np.save(tmp_path / "organs.npy", _organ_labels().astype(np.int16))
    _error(capsys, _segment(tmp_path / "ct.npy", tmp_path / "organs.npy", tmp_path / "p.png"))


def test_evaluate_an_empty_mask_reports_zero_scored_slices(tmp_path, xray, capsys):
    empty = save_png(tmp_path / "empty_mask.png", np.zeros((SIZE, SIZE), np.uint8))
    summary = tmp_path / "summary.json"
    code, out, err = _cli(capsys, ["evaluate", xray[0], empty, "--json", summary, *TINY])
    assert code == EXIT_SKIPPED
    (line,) = _skipped(err)
    assert "chest: the mask has no lung on any of its 1 slice" in line
    assert "nothing was scored" in line
    assert "scored slices 0" in out and "skipped (empty ground truth) 1" in out
    result = json.loads(summary.read_text())
    assert (result["slices"], result["skipped_empty"]) == (0, 1)


def test_segment_from_an_empty_mask_says_so(tmp_path, xray, capsys):
    empty = save_png(tmp_path / "empty_mask.png", np.zeros((SIZE, SIZE), np.uint8))
    line = _error(capsys, _segment(xray[0], empty, tmp_path / "pred.png"))
    assert "empty_mask.png" in line and "no lung" in line


def test_all_foreground_mask_runs_and_is_scored(tmp_path, xray, capsys):
    full = save_png(tmp_path / "full_mask.png", np.full((SIZE, SIZE), 255, np.uint8))
    code, out, err = _cli(capsys, ["evaluate", xray[0], full, "--out", tmp_path / "run", *TINY])
    assert code == 0, err
    rows = read_scores_csv(tmp_path / "run" / "per_slice.csv")
    assert len(rows) == 1 and 0.0 <= rows[0].dice <= 1.0
    assert "scored slices 1" in out


# --------------------------------------------------------------------------- prompts


def _prompts(tmp_path: Path, spec) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec))
    return path


def _propagate(image: Path, prompts: Path, out: Path) -> list:
    return ["segment", image, "--propagate-from", prompts, "-o", out, *TINY]


BAD_PROMPTS = {
    "point_outside": (
        {"slices": [{"slice": 1, "points_rc": [[100, 5]]}]},
        r"point \(row 100, col 5\) lies outside the 32x32 slice; move it onto the image",
    ),
    "slice_beyond_the_volume": (
        {"slices": [{"slice": 7, "points_rc": [[10, 5]]}]},
        r"prompts.json: slice 7 is outside the volume \(0..3\)",
    ),
    "negative_slice": (
        {"slices": [{"slice": -1, "points_rc": [[10, 5]]}]},
        r"prompts.json: slice -1 is outside the volume \(0..3\)",
    ),
    "degenerate_box": (
        {"slices": [{"slice": 1, "boxes_xyxy": [[5, 5, 5, 20]]}]},
        "the box has zero width or height.*drag a rectangle around the lung",
    ),
    "only_negative_points": (
        {"slices": [{"slice": 1, "points_rc": [[10, 5], [12, 20]], "point_labels": [0, 0]}]},
        "only negative points on this slice: add a positive point or a box",
    ),
    "too_many_points": (
        {"slices": [{"slice": 1, "points_rc": [[10, 5]] * (MAX_POINTS_PER_SLICE + 1)}]},
        f"{MAX_POINTS_PER_SLICE + 1} points on one slice is more than the limit of "
        f"{MAX_POINTS_PER_SLICE}; remove some points",
    ),
    "malformed_json": ("{not json", r"prompts.json: not a prompts file \(JSONDecodeError\)"),
    "no_slices_key": ({"boxes": []}, r"prompts.json: not a prompts file \(KeyError\)"),
    "no_prompt_on_a_slice": ({"slices": [{"slice": 1}]}, "slice 1 has no boxes or points"),
    "empty_slices": ({"slices": []}, "prompts.json: no prompted slices"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROMPTS))
def test_propagate_refuses_bad_prompts(tmp_path, ct, capsys, case):
    spec, expected = BAD_PROMPTS[case]
    out = tmp_path / "pred.nii.gz"
    line = _error(capsys, _propagate(ct[0], _prompts(tmp_path, spec), out))
    assert re.search(expected, line), line
    assert not out.exists()


def test_box_larger_than_the_image_is_clipped_and_runs(tmp_path, xray, capsys):
    spec = {"slices": [{"slice": 0, "boxes_xyxy": [[-50, -50, 500, 500]]}]}
    out = tmp_path / "pred.png"
    code, stdout, err = _cli(capsys, _propagate(xray[0], _prompts(tmp_path, spec), out))
    assert code == 0, err
    assert "propagated over 1 slices" in stdout
    assert np.asarray(Image.open(out)).shape == (SIZE, SIZE)


MALFORMED_PROMPTS = {
    "slices_not_a_list": {"slices": 3},
    "entry_not_an_object": {"slices": [3]},
    "point_with_three_numbers": {"slices": [{"slice": 1, "points_rc": [[1, 2, 3]]}]},
    "box_with_three_numbers": {"slices": [{"slice": 1, "boxes_xyxy": [[1, 2, 3]]}]},
    "slice_not_a_number": {"slices": [{"slice": "middle", "boxes_xyxy": [[1, 2, 20, 20]]}]},
    "more_box_labels_than_boxes": {
        "slices": [{"slice": 1, "boxes_xyxy": [[1, 2, 20, 20]], "box_labels": [1, 2]}]
    },
}


@pytest.mark.parametrize("case", sorted(MALFORMED_PROMPTS))
def test_propagate_refuses_structurally_wrong_prompts(tmp_path, ct, capsys, case):
    out = tmp_path / "pred.nii.gz"
    line = _error(capsys, _propagate(ct[0], _prompts(tmp_path, MALFORMED_PROMPTS[case]), out))
    assert "prompts.json" in line


@pytest.mark.parametrize(
    "case", ["point_outside", "degenerate_box", "only_negative_points", "too_many_points"]
)
def test_prompt_refusals_name_the_prompts_file_and_slice(tmp_path, ct, capsys, case):
    spec, _ = BAD_PROMPTS[case]
    line = _error(capsys, _propagate(ct[0], _prompts(tmp_path, spec), tmp_path / "p.nii.gz"))
    assert "prompts.json: slice 1: " in line


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def micro_state() -> dict:
    model, _, _ = models.load_model("micro_random", device="cpu")
    return model.state_dict()


def _payload(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_checkpoint_of_another_architecture(tmp_path, xray, capsys, micro_state):
    ckpt = tmp_path / "micro.pth"
    torch.save(micro_state, ckpt)
    out = tmp_path / "pred.png"
    args = _segment(*xray, out)
    args[args.index("micro_random")] = "tiny_random"
    line = _error(capsys, args + ["--checkpoint", ckpt])
    assert "micro.pth: these weights do not fit the vit_tiny architecture" in line
    assert "choose the model that matches the checkpoint" in line
    assert not out.exists()


def test_checkpoint_of_another_architecture_names_the_likely_one(tmp_path, xray, capsys):
    ckpt = tmp_path / "sam_b_like.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}, ckpt)
    line = _error(capsys, _segment(*xray, tmp_path / "pred.png") + ["--checkpoint", ckpt])
    assert "do not fit the vit_micro architecture (it looks like vit_b weights)" in line


def test_checkpoint_of_micro_random_is_recognised(tmp_path, xray, capsys, micro_state):
    ckpt = tmp_path / "micro.pth"
    torch.save(micro_state, ckpt)
    args = _segment(*xray, tmp_path / "pred.png")
    args[args.index("micro_random")] = "tiny_random"
    assert "looks like micro_random" in _error(capsys, args + ["--checkpoint", ckpt])


def test_truncated_checkpoint(tmp_path, xray, capsys, micro_state):
    content = _payload(micro_state)
    ckpt = tmp_path / "cut.pth"
    ckpt.write_bytes(content[: len(content) // 2])
    line = _error(capsys, _segment(*xray, tmp_path / "pred.png") + ["--checkpoint", ckpt])
    assert "cut.pth: not a readable PyTorch checkpoint" in line
    assert "truncated or corrupt: delete it and download it again" in line


def test_no_network_while_downloading(tmp_path, xray, capsys, weights_cache, monkeypatch):
    url = f"http://127.0.0.1:{closed_port()}/x.pth"
    monkeypatch.setitem(
        models.REGISTRY, "vit_b", dataclasses.replace(models.get_spec("vit_b"), url=url)
    )
    out = tmp_path / "pred.png"
    args = ["segment", xray[0], "--prompts-from", xray[1], "-o", out, "--model", "vit_b"]
    line = _error(capsys, args)
    assert f"could not download {url}" in line and "Offline?" in line
    assert "sam_vit_b_01ec64.pth" in line and "--checkpoint PATH" in line
    assert not out.exists()
    assert not (weights_cache / "checkpoints" / "sam_vit_b_01ec64.pth").exists()


@pytest.fixture
def weights_server(micro_state):
    """A local server of the micro model's weights (``conftest.serve_bytes``)."""
    with serve_bytes(_payload(micro_state), "micro_dl.pth") as srv:
        yield srv


def _downloadable_micro(monkeypatch, url: str, payload: bytes) -> None:
    import xxhash

    spec = dataclasses.replace(
        models.get_spec("micro_random"),
        id="micro_dl",
        url=url,
        filename="micro_dl.pth",
        xxh128=xxhash.xxh3_128(payload).hexdigest(),
        needs_checkpoint=True,
    )
    monkeypatch.setitem(models.REGISTRY, "micro_dl", spec)


def test_interrupted_download_is_never_used_and_is_resumed(
    tmp_path, xray, capsys, weights_cache, monkeypatch, weights_server
):
    payload = weights_server.payload
    _downloadable_micro(monkeypatch, weights_server.url, payload)
    out = tmp_path / "pred.png"
    args = ["segment", xray[0], "--prompts-from", xray[1], "-o", out]
    args += ["--model", "micro_dl", "--precision", "fp32"]
    final = weights_cache / "checkpoints" / "micro_dl.pth"
    part = final.with_name("micro_dl.pth.part")

    weights_server.cut = len(payload) // 2
    line = _error(capsys, args)
    assert "could not download" in line and "will be resumed next time" in line
    assert part.stat().st_size == len(payload) // 2
    assert not final.exists() and not out.exists()

    weights_server.cut = None
    code, _, err = _cli(capsys, args)
    assert code == 0, err
    assert weights_server.requests[-1]["Range"] == f"bytes={len(payload) // 2}-"
    assert final.read_bytes() == payload and not part.exists()
    assert out.exists()


def test_a_complete_looking_part_file_is_not_used_offline(
    tmp_path, xray, capsys, weights_cache, monkeypatch, micro_state
):
    payload = _payload(micro_state)
    _downloadable_micro(monkeypatch, f"http://127.0.0.1:{closed_port()}/micro_dl.pth", payload)
    part = weights_cache / "checkpoints" / "micro_dl.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(payload)
    args = ["segment", xray[0], "--prompts-from", xray[1], "-o", tmp_path / "pred.png"]
    line = _error(capsys, args + ["--model", "micro_dl", "--precision", "fp32"])
    assert "could not download" in line
    assert not (weights_cache / "checkpoints" / "micro_dl.pth").exists()
    assert part.read_bytes() == payload


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_where_there_is_none(tmp_path, xray, capsys):
    line = _error(capsys, _segment(*xray, tmp_path / "pred.png") + ["--device", "cuda"])
    assert "CUDA was requested but no CUDA GPU is available; use --device cpu" in line


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_requested_where_there_is_none(tmp_path, xray, capsys):
    line = _error(capsys, _segment(*xray, tmp_path / "pred.png") + ["--device", "mps"])
    assert "MPS was requested but is not available here; use --device cpu" in line


# --------------------------------------------------------------------------- no float64 (MPS)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def test_the_segment_path_never_makes_a_float64_tensor(monkeypatch):
    """MPS has no float64: every tensor made or fed to a module while segmenting (points,
    boxes, per-lung prompts, multimask, volumes, propagation) must be float32 or smaller."""
    from torch.overrides import TorchFunctionMode

    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.prompts import Prompt, get_strategy
    from napari_samlung.core.propagation import propagate, seeds_from_labels
    from napari_samlung.core.volume import segment_from_labels
    from napari_samlung.core.windowing import Window, to_rgb

    segmenter = Segmenter.from_registry("micro_random", device="cpu", precision="fp32")
    found: list[str] = []

    def check(where: str, value) -> None:
        found.extend(where for t in _tensors(value) if t.dtype == torch.float64)

    class NoFloat64(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            check(getattr(func, "__name__", str(func)), result)
            return result

    real_from_numpy = torch.from_numpy

    def from_numpy(array):
        assert array.dtype != np.float64, f"float64 array handed to torch: {array.shape}"
        return real_from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", from_numpy)
    hooks = [
        module.register_forward_pre_hook(
            lambda mod, args, kwargs: check(type(mod).__name__, (args, kwargs)), with_kwargs=True
        )
        for module in segmenter.model.modules()
    ]
    with NoFloat64():  # the detector itself works
        torch.zeros(2, dtype=torch.float64)
    assert found == ["zeros"]
    found.clear()

    labels = _two_lungs()
    window = Window.preset("lung")
    rgb = to_rgb(np.where(labels > 0, -850, 40).astype(np.int16), window)
    # float64 numpy prompts, as a user script would make them
    prompts = [
        Prompt(
            points_xy=np.array([[8.0, 16.0], [24.0, 16.0]]),
            point_labels=[1, 0],
            box_xyxy=np.array([2.0, 3.0, 14.0, 28.0]),
            target_label=2,
        ),
        Prompt(points_xy=np.array([[24.0, 16.0]]), point_labels=[1]),
        Prompt(box_xyxy=np.array([18.0, 3.0, 29.0, 28.0]), target_label=1),
    ]
    volume = np.stack([np.where(labels > 0, -850, 40)] * 3).astype(np.float64)
    with NoFloat64():
        for strategy in (None, get_strategy("per-lung-multimask"), get_strategy("per-lung-post")):
            segmenter.clear_cache()
            out, score = segmenter.segment_slice(rgb, prompts, strategy=strategy)
            assert out.shape == labels.shape and np.isfinite(score)
        segment_from_labels(
            segmenter, volume, np.stack([labels] * 3), window=window, strategy="paper"
        )
        propagate(segmenter, volume, seeds_from_labels(np.stack([labels] * 3), 1), window=window)
    for hook in hooks:
        hook.remove()
    assert found == [], sorted(set(found))
    assert {p.dtype for p in segmenter.model.parameters()} == {torch.float32}


# --------------------------------------------------------------------------- dataset folders


@pytest.fixture
def messy_dataset(tmp_path) -> Path:
    """images/ + masks/: a and b are good; c has no mask; d is a mask without an image;
    a.png duplicates a.jpg; notes.txt, .DS_Store and Thumbs.db are not images."""
    labels = _two_lungs()
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
    code, stdout, err = _cli(capsys, ["evaluate", *where, "--out", out, *TINY])
    assert code == EXIT_SKIPPED
    lines = _skipped(err)
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


# --------------------------------------------------------------------------- nothing is lost


@pytest.mark.parametrize("existing", [False, True])
def test_a_crash_while_writing_the_mask_leaves_no_partial_file(
    tmp_path, ct, capsys, monkeypatch, existing
):
    image, mask = ct
    out = tmp_path / "out" / "pred.nii.gz"
    out.parent.mkdir()
    if existing:
        out.write_bytes(b"the previous result")

    def crash(img, filename):
        Path(filename).write_bytes(b"\x1f\x8b half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers_module.nib, "save", crash)
    extra = ["--overwrite"] if existing else []
    line = _error(capsys, _segment(image, mask, out, *extra))
    assert "pred.nii.gz: cannot write (No space left on device)" in line
    assert "check the folder is writable and has free space" in line
    assert sorted(p.name for p in out.parent.iterdir()) == (["pred.nii.gz"] if existing else [])
    if existing:
        assert out.read_bytes() == b"the previous result"


def test_save_masks_never_overwrites_without_overwrite(tmp_path, xray, capsys, monkeypatch):
    from napari_samlung.runner import RunConfig

    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    theirs = out / "chest_samlung.png"
    theirs.write_bytes(b"somebody's file")

    def no_model(self):
        raise AssertionError("the run started although its output cannot be written")

    args = ["evaluate", image, mask, "--out", out, "--save-masks", *TINY]
    with monkeypatch.context() as m:
        m.setattr(RunConfig, "make_segmenter", no_model)
        line = _error(capsys, args)
    assert "chest_samlung.png exists; pass --overwrite" in line
    assert theirs.read_bytes() == b"somebody's file"

    code, _, err = _cli(capsys, args + ["--overwrite"])
    assert code == 0, err
    assert np.asarray(Image.open(theirs)).shape == (SIZE, SIZE)


def test_resume_replaces_the_mask_of_a_case_that_did_not_finish(tmp_path, xray, capsys):
    """A crash after a case's mask was written but before it was recorded as done: the
    mask is the run's own, so --resume may replace it (and does not stop there)."""
    image, mask = xray
    out = tmp_path / "run"
    out.mkdir()
    (out / "chest_samlung.png").write_bytes(b"left by the interrupted run")
    code, _, err = _cli(
        capsys, ["evaluate", image, mask, "--out", out, "--save-masks", "--resume", *TINY]
    )
    assert code == 0, err
    assert np.asarray(Image.open(out / "chest_samlung.png")).shape == (SIZE, SIZE)


def test_out_that_is_a_file_is_refused(tmp_path, xray, capsys):
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    line = _error(capsys, ["evaluate", *xray, "--out", blocker, *TINY])
    assert "run: cannot create the output folder" in line and "give --out a folder" in line
    assert blocker.read_text() == "not a folder"


def test_input_files_are_never_modified(tmp_path, xray, ct, capsys):
    inputs = [*xray, *ct]
    before = {p: (_digest(p), p.stat().st_mtime_ns) for p in inputs}
    code, _, err = _cli(
        capsys,
        [
            "evaluate",
            *xray,
            "--out",
            tmp_path / "run",
            "--save-masks",
            "--json",
            tmp_path / "s.json",
            *TINY,
        ],
    )
    assert code == 0, err
    code, _, err = _cli(
        capsys, ["evaluate", *ct, "--out", tmp_path / "run3", "--save-masks", *TINY]
    )
    assert code == 0, err
    code, _, err = _cli(capsys, _segment(*ct, tmp_path / "ct_pred.nii.gz"))
    assert code == 0, err
    code, _, err = _cli(capsys, _segment(*xray, tmp_path / "chest_pred.png"))
    assert code == 0, err
    assert {p: (_digest(p), p.stat().st_mtime_ns) for p in inputs} == before


def test_output_over_the_input_image_is_refused_even_with_overwrite(tmp_path, xray, capsys):
    image, mask = xray
    before = _digest(image)
    line = _error(capsys, _segment(image, mask, image, "--overwrite"))
    assert "chest.png" in line and "input" in line
    assert _digest(image) == before
