"""The public readers on bad files, and the image record (io.images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nifti_samples import save_nifti

from conftest import raw_nifti
from napari_samlung.errors import InputFileError
from napari_samlung.io import (
    MAX_VOXELS,
    ImageData,
    read_image,
)


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _truncated_gz(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).integers(-1000, 1000, (40, 40, 40), dtype=np.int16)
    full = save_nifti(tmp_path / "full.nii.gz", data, np.eye(4))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    return cut


ERROR_CASES = {
    "missing": (lambda t: t / "nothere.nii.gz", "not found"),
    "empty": (lambda t: _write(t / "empty.png", b""), "empty"),
    "truncated_gz": (_truncated_gz, "truncated or corrupt"),
    "not_gzip": (
        lambda t: _write(t / "junk.nii.gz", b"\x1f\x8b garbage" * 50),
        "not a readable NIfTI",
    ),
    "text_png": (
        lambda t: _write(t / "notes.png", "this is text\n"),
        "not a PNG/JPEG",
    ),
    "nan_spacing": (
        lambda t: raw_nifti(t / "nanspacing.nii", np.zeros((3, 3, 3), np.int16), (np.nan, 1, 1)),
        "invalid voxel spacing",
    ),
    "singular_affine": (
        lambda t: raw_nifti(
            t / "singular.nii",
            np.zeros((3, 3, 3), np.int16),
            (0.0, 1.0, 1.0),
            srow=np.array([[0.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]),
        ),
        "singular",
    ),
    "too_many_voxels": (
        lambda t: raw_nifti(
            t / "huge.nii",
            np.zeros((2, 2, 2), np.int16),
            shape=(8192, 8192, MAX_VOXELS // 2**26 + 1),
        ),
        "more than the limit",
    ),
    "dimension_too_large": (
        lambda t: raw_nifti(t / "wide.nii", np.zeros((2, 2, 2), np.int16), shape=(9000, 2, 2)),
        "over 8192",
    ),
    "unknown_suffix": (
        lambda t: _write(t / "scan.mha", b"ObjectType = Image"),
        r"\.nii\.gz, \.nii, \.png",
    ),
    "pickled_npy": (
        lambda t: _npy(t / "obj.npy", np.array([{"a": 1}], dtype=object)),
        "obj.npy",
    ),
    "npy_4d": (
        lambda t: _npy(t / "four.npy", np.zeros((2, 2, 2, 2))),
        "not supported",
    ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_files_raise_one_line_input_file_error_naming_the_file(tmp_path: Path, case: str):
    make, expected = ERROR_CASES[case]
    path = make(tmp_path)
    with pytest.raises(InputFileError, match=expected) as err:
        read_image(path)
    message = str(err.value)
    assert path.name in message and "\n" not in message and ";" in message


def test_image_data_is_a_plain_dataclass():
    image = ImageData(np.zeros((2, 2)), (1.0, 1.0), None, None, "xray", {})
    assert not image.is_volume
