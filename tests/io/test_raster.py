"""Reading PNG/JPEG X-rays and masks, and RGB to grey (io.raster)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import requires_data, save_png
from napari_samlung.core.labels import LEFT_LUNG, RIGHT_LUNG
from napari_samlung.errors import ShapeMismatchError
from napari_samlung.io import (
    read_image,
    read_mask,
    read_montgomery_mask,
)


@requires_data("montgomery")
def test_montgomery_xray_and_merged_mask_split_into_lungs(data_dir: Path):
    image = read_image(data_dir / "montgomery/images/MCUCXR_0001_0.png")
    assert image.modality == "xray" and image.data.dtype == np.uint8
    assert image.data.shape == (512, 512) and image.spacing_zyx_mm == (1.0, 1.0)
    assert image.affine is None
    labels = read_mask(data_dir / "montgomery/masks/MCUCXR_0001_0.png", like=image)
    assert set(np.unique(labels)) == {0, 1, 2}
    cols = np.indices(labels.shape)[1]
    # patient's left lung (1) is on the image's right
    assert cols[labels == LEFT_LUNG].mean() > 256 > cols[labels == RIGHT_LUNG].mean()


def test_montgomery_original_left_right_masks_merge(tmp_path: Path):
    left = np.zeros((20, 30), np.uint8)
    left[5:15, 18:26] = 255  # patient's left lung: image's right
    right = np.zeros((20, 30), np.uint8)
    right[4:16, 3:12] = 255
    labels = read_montgomery_mask(
        save_png(tmp_path / "l.png", left), save_png(tmp_path / "r.png", right)
    )
    assert labels.dtype == np.uint8
    assert np.all(labels[left > 0] == LEFT_LUNG) and np.all(labels[right > 0] == RIGHT_LUNG)
    assert np.count_nonzero(labels) == np.count_nonzero(left) + np.count_nonzero(right)
    with pytest.raises(ShapeMismatchError, match="l.png"):
        read_montgomery_mask(tmp_path / "l.png", save_png(tmp_path / "s.png", right[:10]))


def test_16bit_png_is_min_max_scaled_to_uint8(tmp_path: Path):
    ramp = np.linspace(1000, 41000, 64 * 32).astype(np.uint16).reshape(32, 64)
    image = read_image(save_png(tmp_path / "xray16.png", ramp))
    assert image.data.dtype == np.uint8 and image.data.shape == (32, 64)
    assert image.data.min() == 0 and image.data.max() == 255
    assert np.all(np.diff(image.data.ravel().astype(int)) >= 0)  # monotone


def test_rgb_and_rgba_png_become_gray_and_alpha_is_dropped(tmp_path: Path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, :5] = (255, 255, 255)
    rgb[:, 5:] = (0, 0, 255)
    gray_expected = np.asarray(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(read_image(save_png(tmp_path / "rgb.png", rgb)).data, gray_expected)

    rgba = np.dstack([rgb, np.zeros((8, 10), np.uint8)])  # fully transparent
    data = read_image(save_png(tmp_path / "rgba.png", rgba)).data
    assert data.dtype == np.uint8 and data.shape == (8, 10)
    np.testing.assert_array_equal(data, gray_expected)

    jpeg = tmp_path / "x.jpg"
    Image.fromarray(rgb).save(jpeg, quality=95)
    assert read_image(jpeg).data.shape == (8, 10)
