"""Bad, huge and odd image files given to the console script: refused in one line, or
run with a warning (4D NIfTI, NaN voxels, zero spacing).

The conventions and helpers are in ``cli_helpers.py``.
"""

from __future__ import annotations

import io
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
from cli_helpers import (  # noqa: F401 (the ct and xray fixtures)
    SIZE,
    TINY,
    ct_fixture,
    refused,
    run_cli,
    segment_args,
    skipped_lines,
    two_lungs,
    xray_fixture,
)
from PIL import Image

import random_sam
from conftest import raw_nifti, save_png
from napari_samlung.cli import EXIT_SKIPPED, main
from napari_samlung.io import MAX_DIM, MAX_VOXELS, read_image

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
    (t / "scan.mha").write_bytes(b"ObjectType = Image\n" * 10)
    return t / "scan.mha"


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
    line = refused(capsys, segment_args(bad, xray[1], out))
    assert bad.name in line and re.search(expected, line), line
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "empty", "text_png", "truncated_nii_gz"])
def test_segment_refuses_a_bad_mask_file(tmp_path, xray, capsys, case):
    make, expected = BAD_IMAGES[case]
    bad = make(tmp_path)
    out = tmp_path / "pred.png"
    line = refused(capsys, segment_args(xray[0], bad, out))
    assert bad.name in line and re.search(expected, line), line
    assert not out.exists()


def test_evaluate_skips_a_case_whose_image_is_not_an_image(tmp_path, xray, capsys):
    bad = _text_png(tmp_path)
    code, out, err = run_cli(capsys, ["evaluate", bad, xray[1], *TINY])
    assert code == EXIT_SKIPPED
    (line,) = skipped_lines(err)
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
        line = refused(capsys, segment_args(image, mask, tmp_path / "pred.png"))
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
    line = refused(capsys, segment_args(image, mask, tmp_path / "pred.png"))
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
    line = refused(capsys, segment_args(huge, xray[1], tmp_path / "pred.nii.gz"))
    assert "huge.nii" in line and f"more than the limit of {MAX_VOXELS}" in line
    assert "crop or downsample it first" in line

    line = refused(capsys, segment_args(wide, xray[1], tmp_path / "pred.nii.gz"))
    assert "wide.nii" in line and f"dimension over {MAX_DIM}" in line


def test_huge_png_is_refused_from_its_header(tmp_path, xray, capsys, monkeypatch):
    huge = _huge_png(tmp_path / "huge.png", MAX_DIM + 1, 16)
    _no_voxel_loading(monkeypatch)
    line = refused(capsys, segment_args(huge, xray[1], tmp_path / "pred.png"))
    assert f"huge.png: image shape (16, {MAX_DIM + 1}) has a dimension over {MAX_DIM}" in line


def test_huge_npy_is_refused_before_it_is_copied(tmp_path, xray, capsys):
    np.save(tmp_path / "wide.npy", np.zeros((MAX_DIM + 1, 2), np.int16))
    line = refused(capsys, segment_args(tmp_path / "wide.npy", xray[1], tmp_path / "pred.png"))
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
        code, _, err = run_cli(capsys, segment_args(four_d, mask, out))
    assert code == 0, err
    written = nib.load(str(out))
    assert written.shape == volume.shape  # one 3D mask on the source grid
    np.testing.assert_allclose(written.affine, nib.load(str(image)).affine)


def test_2d_nifti_is_one_slice_and_written_back_2d(tmp_path, capsys):
    labels = two_lungs()
    image = np.where(labels > 0, -850, 40).astype(np.int16)
    affine = np.diag([0.7, 0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(image.T.copy(), affine), str(tmp_path / "slice.nii.gz"))
    nib.save(nib.Nifti1Image(labels.T.copy(), affine), str(tmp_path / "slice_mask.nii.gz"))
    out = tmp_path / "pred.nii.gz"
    args = segment_args(tmp_path / "slice.nii.gz", tmp_path / "slice_mask.nii.gz", out)
    code, stdout, err = run_cli(capsys, args)
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
    code, stdout, err = run_cli(capsys, segment_args(image, xray[1], out))
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
        code, stdout, err = run_cli(capsys, segment_args(nan_file, mask, out))
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
        code, _, err = run_cli(capsys, segment_args(image, mask, out))
    assert code == 0, err
    np.testing.assert_allclose(nib.load(str(out)).affine[:3, :3], srow[:, :3])


def test_zero_spacing_without_affine_is_fixed_with_a_warning_not_a_print(tmp_path, capfd):
    """nibabel turns pixdim 0 into 1 mm and prints that itself; we warn instead."""
    labels = two_lungs()
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
        code = main([str(a) for a in segment_args(image, mask, out)])
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
    # ``python -m napari_samlung.cli``, with the test models registered (random_sam.py)
    run_cli_module = (
        "import random_sam, runpy; "
        "runpy.run_module('napari_samlung.cli', run_name='__main__', alter_sys=True)"
    )
    tests_dir = str(Path(random_sam.__file__).parent)
    python_path = os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": python_path}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            run_cli_module,
            *map(str, segment_args(four_d, mask, tmp_path / "p.nii.gz")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-samlung: warning: "), proc.stderr
    assert "4D NIfTI with 2 volumes; only the first volume is used" in lines[0]
