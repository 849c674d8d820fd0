"""The synthetic chest CT phantom (io.phantom)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from napari_samlung.core.labels import LEFT_LUNG, RIGHT_LUNG
from napari_samlung.io import (
    make_phantom,
    read_image,
    read_mask,
    write_image,
    write_labels,
)


def test_phantom_is_deterministic_asymmetric_and_round_trips(tmp_path: Path):
    image, labels = make_phantom()
    again, labels_again = make_phantom()
    np.testing.assert_array_equal(image.data, again.data)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(make_phantom(seed=1)[0].data, image.data)
    assert image.data.dtype == np.int16 and image.data.shape == (24, 128, 128)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}

    cols = np.indices(labels.shape)[2]
    assert cols[labels == LEFT_LUNG].mean() > 64 > cols[labels == RIGHT_LUNG].mean()
    assert np.count_nonzero(labels == RIGHT_LUNG) > np.count_nonzero(labels == LEFT_LUNG)
    lung_slices = np.nonzero(labels.any(axis=(1, 2)))[0]
    assert lung_slices.min() > 0 and lung_slices.max() < labels.shape[0] - 1
    assert image.data[labels > 0].mean() < -700 and image.data[0, 0, 0] < -900

    written = write_image(tmp_path / "phantom.nii.gz", image)
    back = read_image(written)
    np.testing.assert_array_equal(back.data, image.data)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-4)
    np.testing.assert_allclose(back.spacing_zyx_mm, image.spacing_zyx_mm)
    mask_file = write_labels(tmp_path / "phantom_mask.nii.gz", labels, like=image)
    np.testing.assert_array_equal(read_mask(mask_file, like=back), labels)
    assert nib.aff2axcodes(nib.load(str(written)).affine) == ("R", "A", "S")
