"""Reading .npy CT slices and volumes (io.npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import requires_data
from napari_samlung.io import (
    read_image,
    read_mask,
)


@requires_data("covid19_ct_slices")
def test_covid_npy_slices(data_dir: Path):
    folder = data_dir / "covid19_ct_slices"
    ct = read_image(folder / "coronacases_001_image_slice_110.npy")
    assert ct.modality == "ct" and ct.data.dtype == np.int16 and ct.data.shape == (512, 512)
    assert ct.data.min() == -1021
    labels = read_mask(folder / "coronacases_001_masks_slice_110.npy", like=ct)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert ct.data[labels > 0].mean() < -500
    windowed = read_image(folder / "radiopaedia_14_85914_0_image_slice_0.npy")
    assert windowed.data.dtype == np.uint8 and windowed.data.shape == (630, 401)
    assert windowed.meta["windowed"] is True


def test_3d_npy_is_a_volume(tmp_path: Path):
    volume = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    np.save(tmp_path / "vol.npy", volume)
    image = read_image(tmp_path / "vol.npy")
    np.testing.assert_array_equal(image.data, volume)
    assert image.spacing_zyx_mm == (1.0, 1.0, 1.0)
