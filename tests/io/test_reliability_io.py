"""Reliability of the readers and writers on bad input (issue "every bad input gets a clear
answer", Qt-free half): fuzzed files, permissions, header fix-ups, label images, and
atomic writes that never leave a half-written or temporary file behind."""

from __future__ import annotations

import gzip
import io
import logging
import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import raw_nifti, save_png
from napari_samlung.errors import InputFileError, SamlungError
from napari_samlung.io import ImageData, read_image, read_mask, write_image, write_labels
from napari_samlung.io import writers as writers_module
from napari_samlung.io.atomic import atomic_write_text

# --------------------------------------------------------------------------- valid seeds


def _nifti_bytes(compressed: bool) -> bytes:
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)
    image = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if compressed else raw


def _raster_bytes(fmt: str) -> bytes:
    array = np.zeros((12, 10), np.uint8)
    array[2:10, 1:4] = 255
    array[2:10, 6:9] = 255
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(20, dtype=np.int16).reshape(4, 5))
    return buffer.getvalue()


#: A valid small file per supported suffix: the fuzzer truncates and corrupts these.
SEEDS = {
    ".nii": _nifti_bytes(False),
    ".nii.gz": _nifti_bytes(True),
    ".png": _raster_bytes("PNG"),
    ".jpg": _raster_bytes("JPEG"),
    ".npy": _npy_bytes(),
}


@st.composite
def _file_contents(draw, suffix: str) -> bytes:
    """Random bytes, a truncated valid file, or a valid file with a few bytes changed."""
    seed = SEEDS[suffix]
    kind = draw(st.sampled_from(["random", "truncated", "corrupted", "header+random"]))
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=1024))
    if kind == "truncated":
        return seed[: draw(st.integers(1, len(seed) - 1))]
    if kind == "header+random":
        cut = draw(st.integers(1, min(len(seed), 400)))
        return seed[:cut] + draw(st.binary(min_size=0, max_size=512))
    data = bytearray(seed)
    changes = draw(
        st.lists(
            st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), min_size=1, max_size=8
        )
    )
    for position, value in changes:
        data[position] = value
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _only_samlung_errors(path: Path) -> None:
    for reader in (read_image, read_mask):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # header fix-ups, NaN voxels, 4D: all allowed
            try:
                result = reader(path)
            except SamlungError as exc:
                message = str(exc)
                assert message and "\n" not in message, message
                continue
            except Exception as exc:  # noqa: BLE001 - exactly what the property forbids
                raise AssertionError(
                    f"{reader.__name__}({path.name}) raised {type(exc).__name__}: {exc}"
                ) from exc
        data = result.data if isinstance(result, ImageData) else result
        assert isinstance(data, np.ndarray) and data.ndim in (2, 3)
        if np.issubdtype(data.dtype, np.floating):
            assert np.isfinite(data).all()


@pytest.mark.parametrize("suffix", sorted(SEEDS))
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_property_readers_raise_only_samlung_errors_on_junk(fuzz_dir, suffix, data):
    content = data.draw(_file_contents(suffix), label="content")
    path = fuzz_dir / f"fuzz{suffix}"
    path.write_bytes(content)
    _only_samlung_errors(path)


@pytest.mark.parametrize("suffix", sorted(SEEDS))
def test_the_fuzz_seeds_are_valid_files(tmp_path, suffix):
    path = tmp_path / f"seed{suffix}"
    path.write_bytes(SEEDS[suffix])
    assert read_image(path).data.size > 0


# --------------------------------------------------------------------------- permissions


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="runs as root: chmod 000 does not stop root from reading (see the os.access test)",
)
def test_unreadable_file_chmod_000(tmp_path):
    path = tmp_path / "locked.png"
    path.write_bytes(SEEDS[".png"])
    path.chmod(0)
    try:
        with pytest.raises(InputFileError, match="locked.png: permission denied.*chmod"):
            read_image(path)
    finally:
        path.chmod(0o644)


def test_unreadable_file_is_reported_as_permission_denied(tmp_path, monkeypatch):
    """Under root chmod has no effect, so the access check itself is forced to fail."""
    path = tmp_path / "locked.nii.gz"
    path.write_bytes(SEEDS[".nii.gz"])
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if Path(p) == path else real_access(p, mode, **kw),
    )
    with pytest.raises(InputFileError, match="locked.nii.gz: permission denied") as err:
        read_image(path)
    assert "truncated" not in str(err.value) and "corrupt" not in str(err.value)


# --------------------------------------------------------------------------- NIfTI headers


def test_zero_spacing_without_an_affine_is_fixed_with_a_warning_not_printed(tmp_path, capfd):
    """nibabel turns a zero pixdim into 1 mm and prints that on stderr itself; the reader
    turns it into one warning naming the file instead."""
    path = raw_nifti(
        tmp_path / "zero.nii", np.zeros((3, 4, 5), np.int16), (0.0, 1, 1), sform_code=0
    )
    with pytest.warns(UserWarning, match=r"zero.nii: header problem fixed on load.*non-zero"):
        image = read_image(path)
    assert image.spacing_zyx_mm == (1.0, 1.0, 1.0)
    assert capfd.readouterr().err == ""  # nothing printed behind the caller's back


def test_nibabel_logging_is_restored_after_a_read(tmp_path):
    logger = nib.imageglobals.logger
    before = list(logger.handlers)
    path = raw_nifti(
        tmp_path / "neg.nii", np.zeros((3, 4, 5), np.int16), (-1.0, 1, 1), sform_code=0
    )
    with pytest.warns(UserWarning, match="positive"):
        read_image(path)
    assert logger.handlers == before
    assert all(isinstance(h, logging.Handler) for h in logger.handlers)


def test_singular_affine_gives_the_refusal_only(tmp_path, recwarn):
    srow = np.array([[0.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    path = raw_nifti(tmp_path / "singular.nii", np.zeros((3, 3, 3), np.int16), (0.0, 1, 1), srow)
    with pytest.raises(InputFileError, match="singular"):
        read_image(path)
    assert not [w for w in recwarn if "fixed on load" in str(w.message)]


# --------------------------------------------------------------------------- label images


def test_png_multi_label_image_is_refused_with_the_fix(tmp_path):
    labels = np.zeros((30, 30), np.uint8)
    for i, value in enumerate(range(10, 15)):
        labels[i * 6 : (i + 1) * 6, 2:28] = value
    path = save_png(tmp_path / "organs_mask.png", labels)
    with pytest.raises(InputFileError) as err:
        read_mask(path)
    message = str(err.value)
    assert "organs_mask.png" in message and "[0, 10, 11, 12, 13, 14]" in message
    assert "multi-label" in message and "0 background / 1 left lung / 2 right lung" in message


def test_png_anti_aliased_and_jpeg_masks_are_still_accepted(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[8:56, 6:28] = 255
    mask[8:56, 36:58] = 255
    small = np.asarray(Image.fromarray(mask).resize((32, 32), Image.BILINEAR))
    assert len(np.unique(small)) > 3  # really anti-aliased
    labels = read_mask(save_png(tmp_path / "aa_mask.png", small))
    assert set(np.unique(labels)) == {0, 1, 2}
    jpeg = tmp_path / "mask.jpg"
    Image.fromarray(mask).save(jpeg, quality=60)
    assert set(np.unique(read_mask(jpeg))) == {0, 1, 2}


# --------------------------------------------------------------------------- atomic writes


def _no_temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.mark.parametrize("crash", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_png_write_crash_leaves_no_file_and_no_temp(tmp_path, monkeypatch, crash):
    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise crash

    monkeypatch.setattr(Image.Image, "save", broken_save)
    target = tmp_path / "pred.png"
    with pytest.raises(InputFileError if isinstance(crash, OSError) else KeyboardInterrupt):
        write_labels(target, np.ones((4, 4), np.uint8))
    assert not target.exists()
    assert _no_temp_files(tmp_path) == []


def test_nifti_image_write_crash_keeps_the_old_file(tmp_path, monkeypatch):
    from napari_samlung.io import make_phantom

    image, _ = make_phantom((3, 8, 8))
    target = write_image(tmp_path / "ct.nii.gz", image)
    before = target.read_bytes()

    def broken_save(img, filename):
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(writers_module.nib, "save", broken_save)
    with pytest.raises(RuntimeError, match="killed"):
        write_image(target, image, overwrite=True)
    assert target.read_bytes() == before
    assert _no_temp_files(tmp_path) == []


def test_text_write_crash_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text('{"old": 1}')

    def broken_write_text(self, text, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(text[:3])
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "write_text", broken_write_text)
    with pytest.raises(InputFileError, match=r"summary.json: cannot write \(Input/output error\)"):
        atomic_write_text(target, '{"new": 2}', overwrite=True)
    monkeypatch.undo()
    assert target.read_text() == '{"old": 1}'
    assert _no_temp_files(tmp_path) == []


def test_writing_into_a_missing_folder_or_onto_a_folder(tmp_path):
    with pytest.raises(InputFileError, match="does not exist; create it first"):
        write_labels(tmp_path / "nope" / "m.png", np.zeros((3, 3), np.uint8))
    (tmp_path / "m.png").mkdir()
    with pytest.raises(InputFileError, match="is a folder; choose a file name"):
        write_labels(tmp_path / "m.png", np.zeros((3, 3), np.uint8))


# --------------------------------------------------------------------------- fuzz findings


def test_npy_with_a_corrupt_header_literal(tmp_path):
    """Found by the fuzzer: a NUL in the header made numpy's literal parser raise
    tokenize.TokenError/SyntaxError, which escaped as a traceback."""
    path = tmp_path / "bad.npy"
    seed = SEEDS[".npy"]
    path.write_bytes(seed.replace(b"}", b"\x00", 1))  # the header dict never closes
    with pytest.raises(InputFileError, match=r"bad.npy: not a readable .npy array"):
        read_image(path)


def test_nifti_affine_with_a_degenerate_axis(tmp_path):
    """Found by the fuzzer: a non-singular affine whose second axis is almost parallel to
    the first has no orientation (nibabel gives NaN) and crashed in ornt_transform."""
    affine = np.eye(4)
    affine[:3, :3] = [[1e6, 1e6, 0], [0, 1e-10, 0], [0, 0, 1e6]]
    path = tmp_path / "sheared.nii"
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.int16), affine), str(path))
    with pytest.raises(InputFileError, match="sheared.nii: .*degenerate voxel axis.*qform/sform"):
        read_image(path)
