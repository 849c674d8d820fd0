"""Inputs that used to end in a traceback or be read wrong, each now one line or read right.

Issue 13, sections 2-4 (input side): EXIF orientation, RGB and complex NIfTI voxels,
complex .npy arrays, symbolic link loops, names too long for the file system, special
files, and X-rays too thin to segment.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from conftest import save_png
from napari_samlung.errors import InputFileError, SamlungError
from napari_samlung.io import find_cases, read_image, read_mask
from napari_samlung.io.checks import MAX_ASPECT
from napari_samlung.io.raster import EXIF_ORIENTATIONS


def _one_line(reader, path, *args) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy ComplexWarning, no other warning
        with pytest.raises(InputFileError) as err:
            reader(path, *args)
    message = str(err.value)
    assert message and "\n" not in message
    return message


# --------------------------------------------------------------------------- EXIF


def _upright() -> np.ndarray:
    image = np.zeros((40, 64), np.uint8)
    image[4:12, 8:56] = 255  # a bar near the top, off centre
    image[4:36, 8:14] = 255
    return image


def _save_with_orientation(path: Path, stored: np.ndarray, orientation: int) -> Path:
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes(), **({"quality": 95} if path.suffix == ".jpg" else {}))
    return path


#: How a camera stores an upright image for each EXIF orientation (the inverse of the fix).
_STORED = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: np.transpose,
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(a, 2).T,
    8: lambda a: np.rot90(a, -1),
}


@pytest.mark.parametrize("orientation", sorted(_STORED))
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_is_applied_and_said(tmp_path, suffix, orientation):
    upright = _upright()
    path = _save_with_orientation(
        tmp_path / f"xray{suffix}", _STORED[orientation](upright), orientation
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read_image(path).data
    assert data.shape == upright.shape
    assert np.mean((data > 127) == (upright > 127)) > 0.99
    notes = [str(w.message) for w in caught if "EXIF" in str(w.message)]
    if orientation == 1:
        assert not notes
    else:
        (note,) = notes
        assert str(path) in note and EXIF_ORIENTATIONS[orientation] in note


def test_exif_orientation_of_a_mask_is_applied_too(tmp_path):
    labels = np.zeros((40, 64), np.uint8)
    labels[4:36, 6:28] = 255
    labels[4:36, 36:60] = 255
    image = save_png(tmp_path / "xray.png", labels)
    mask = _save_with_orientation(tmp_path / "xray_mask.png", np.rot90(labels, 1), 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = read_mask(mask, like=read_image(image))
    np.testing.assert_array_equal(out > 0, labels > 0)


def test_a_damaged_exif_block_reads_the_pixels_unturned(tmp_path):
    path = tmp_path / "xray.jpg"
    Image.fromarray(_upright()).save(path, exif=b"Exif\x00\x00garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).data.shape == _upright().shape


# --------------------------------------------------------------------------- voxel types


def test_rgb24_nifti_is_refused_before_loading(tmp_path):
    rgb = np.zeros((20, 20, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    for reader in (read_image, read_mask):
        message = _one_line(reader, path)
        assert "rgb.nii.gz" in message and "rgb24 colour voxels" in message
        assert "greyscale" in message


def test_rgba32_nifti_is_refused(tmp_path):
    rgba = np.zeros((20, 20, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
    path = tmp_path / "rgba.nii"
    nib.save(nib.Nifti1Image(rgba, np.eye(4)), path)
    assert "rgba32 colour voxels" in _one_line(read_image, path)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_nifti_is_refused_without_a_complex_warning(tmp_path, dtype):
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.full((20, 20, 3), 1 + 2j, dtype), np.eye(4)), path)
    for reader in (read_image, read_mask):
        message = _one_line(reader, path)
        assert "complex-valued voxels" in message and "magnitude or the real part" in message


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_npy_is_refused(tmp_path, dtype):
    path = tmp_path / "slice.npy"
    np.save(path, np.full((20, 20), 1 + 2j, dtype))
    for reader in (read_image, read_mask):
        assert "holds complex numbers" in _one_line(reader, path)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.longdouble])
def test_every_float_npy_becomes_float32(tmp_path, dtype):
    path = tmp_path / "slice.npy"
    np.save(path, np.full((20, 20), -500, dtype))
    assert read_image(path).data.dtype == np.float32


# --------------------------------------------------------------------------- paths


def test_symlink_loop_as_input(tmp_path):
    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    a.symlink_to(b)
    b.symlink_to(a)
    for reader in (read_image, read_mask):
        message = _one_line(reader, a)
        assert "symbolic link loop" in message and "a.nii.gz" in message


def test_symlink_loop_as_a_dataset_root(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(InputFileError, match="symbolic link loop"):
        find_cases(a)


def test_dangling_symlink_says_where_it_points(tmp_path):
    link = tmp_path / "ct.nii.gz"
    link.symlink_to(tmp_path / "gone.nii.gz")
    assert "symbolic link to a file that does not exist" in _one_line(read_image, link)


@pytest.mark.parametrize("length", [256, 300, 5000])
def test_a_name_too_long_for_the_file_system(tmp_path, length):
    path = tmp_path / ("a" * length + ".png")
    for reader in (read_image, read_mask):
        message = _one_line(reader, path)
        assert "too long for the file system" in message and "shorter path" in message
        assert len(message) < 400  # the path is shortened in the line


def test_a_path_too_long_in_all(tmp_path):
    path = tmp_path.joinpath(*(["d" * 200] * 25), "ct.nii.gz")  # > PATH_MAX (4096)
    message = _one_line(read_image, path)
    assert "too long" in message or "not found" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "ct.nii.gz"
    os.mkfifo(fifo)
    assert "not a regular file" in _one_line(read_image, fifo)


def test_a_nul_character_in_the_path(tmp_path):
    with pytest.raises(SamlungError):
        read_image(str(tmp_path / "ct\0.nii.gz"))


# --------------------------------------------------------------------------- thin images


@pytest.mark.parametrize("shape", [(4, 1000), (1000, 4), (1, 100), (16, 1000), (2, 64)])
def test_an_xray_only_a_few_pixels_high_is_refused(tmp_path, shape):
    path = save_png(tmp_path / "strip.png", np.full(shape, 128, np.uint8))
    message = _one_line(read_image, path)
    assert f"{shape[0]} x {shape[1]} pixels are too thin" in message
    assert f"at most {MAX_ASPECT} times" in message


@pytest.mark.parametrize("shape", [(4, 5), (8, 10), (32, 512), (1, 1), (512, 32)])
def test_small_or_oblong_images_within_the_limit_still_read(tmp_path, shape):
    path = save_png(tmp_path / "small.png", np.full(shape, 128, np.uint8))
    assert read_image(path).data.shape == shape


def test_a_thin_ct_volume_is_refused_on_its_slices(tmp_path):
    path = tmp_path / "thin.npy"
    np.save(path, np.zeros((10, 3, 200), np.int16))
    assert "3 x 200 pixels are too thin" in _one_line(read_image, path)
