"""Writing labels and images: no overwrite, atomic, PNG values, NIfTI suffixes (io.writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_samlung.errors import InputFileError, ShapeMismatchError
from napari_samlung.io import (
    read_image,
    write_labels,
)
from napari_samlung.io import writers as writers_module


def test_writer_refuses_overwrite_and_overwrites_when_asked(tmp_path: Path):
    labels = np.zeros((4, 5), np.uint8)
    target = write_labels(tmp_path / "m.png", labels)
    with pytest.raises(InputFileError, match=r"m\.png exists; pass --overwrite"):
        write_labels(target, labels + 1)
    write_labels(target, labels + 1, overwrite=True)
    assert np.all(np.asarray(Image.open(target)) == 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]  # no temp files left


def test_writer_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "m.nii.gz"
    write_labels(target, np.ones((2, 3, 4), np.uint8))
    before = target.read_bytes()

    def broken_save(image, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers_module.nib, "save", broken_save)
    with pytest.raises(InputFileError, match="cannot write"):
        write_labels(target, np.zeros((2, 3, 4), np.uint8), overwrite=True)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nii.gz"]


def test_png_labels_values_as_is_or_scaled_for_display(tmp_path: Path):
    labels = np.array([[0, 1, 2]], np.uint8)
    raw = write_labels(tmp_path / "raw.png", labels)
    shown = write_labels(tmp_path / "shown.png", labels, scale_for_display=True)
    assert np.asarray(Image.open(raw)).tolist() == [[0, 1, 2]]
    assert np.asarray(Image.open(shown)).tolist() == [[0, 127, 254]]
    with pytest.raises(ShapeMismatchError, match="2D"):
        write_labels(tmp_path / "vol.png", np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(InputFileError, match="cannot write this file type"):
        write_labels(tmp_path / "m.tif", labels)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_written_nifti_suffixes(tmp_path: Path, suffix: str):
    path = write_labels(tmp_path / f"m{suffix}", np.ones((2, 3, 4), np.uint8))
    with open(path, "rb") as fh:
        is_gzip = fh.read(2) == b"\x1f\x8b"
    assert is_gzip == (suffix == ".nii.gz")
    np.testing.assert_array_equal(read_image(path).data, np.ones((2, 3, 4), np.uint8))
