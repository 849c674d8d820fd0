"""Reading NIfTI volumes: real CTs, 2D/4D/5D files, NaN voxels, header fix-ups (io.nifti)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_samples import save_nifti

from conftest import raw_nifti, requires_data
from napari_samlung.core.labels import LEFT_LUNG, RIGHT_LUNG
from napari_samlung.errors import InputFileError
from napari_samlung.io import (
    read_image,
    read_mask,
    write_labels,
)


@requires_data("nifti_examples")
@requires_data("ct_volumes_128")
@pytest.mark.parametrize(
    "name", ["nifti_examples/example_ct_sm.nii.gz", "ct_volumes_128/id001-128x128x64.nii.gz"]
)
def test_nifti_mask_round_trip_lands_on_source_grid(data_dir: Path, tmp_path: Path, name: str):
    source = data_dir / name
    image = read_image(source)
    assert image.modality == "ct" and image.data.ndim == 3
    labels = np.zeros(image.data.shape, np.uint8)
    labels[image.data > -300] = 1
    labels[:, :, : image.data.shape[2] // 3] *= 2  # asymmetric: image's left third -> 2

    out = write_labels(tmp_path / "mask.nii.gz", labels, like=image)

    written, original = nib.load(str(out)), nib.load(str(source))
    np.testing.assert_allclose(written.affine, original.affine)
    assert written.shape == original.shape
    assert written.get_data_dtype() == np.uint8
    stored_labels = np.asanyarray(written.dataobj)
    # In the source's own voxel order: body where the source is > -300 HU.
    np.testing.assert_array_equal(stored_labels > 0, np.asanyarray(original.dataobj) > -300)
    np.testing.assert_array_equal(read_mask(out, like=image), labels)


@requires_data("ct_volumes_128")
def test_ct_volume_spacing_axes_and_anatomy(data_dir: Path):
    image = read_image(data_dir / "ct_volumes_128/id001-128x128x64.nii.gz")  # stored L,A,S
    assert image.data.shape == (64, 128, 128)
    np.testing.assert_allclose(image.spacing_zyx_mm, (5.0, 3.0078, 3.0078), atol=1e-3)
    # our affine maps (slice, row, col) -> world: slices go superior, rows posterior, cols left
    assert nib.aff2axcodes(image.affine) == ("S", "P", "L")
    bone_rows = np.nonzero(image.data > 300)[1]
    assert bone_rows.mean() > 64  # the spine is posterior: in the lower half of the image


@requires_data("ct_volumes_128")
def test_ct_volume_float_mask_with_ringing_becomes_aligned_lung_labels(data_dir: Path):
    folder = data_dir / "ct_volumes_128"
    image = read_image(folder / "id002-128x128x64.nii.gz")
    labels = read_mask(folder / "id002-128x128x64-msk.nii.gz", like=image)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert image.data[labels > 0].mean() < -600  # lung voxels are air-like
    cols = np.indices(labels.shape)[2]
    assert cols[labels == LEFT_LUNG].mean() > cols[labels == RIGHT_LUNG].mean()


def test_4d_2d_and_5d_nifti(tmp_path: Path):
    one_volume = save_nifti(tmp_path / "t1.nii.gz", np.ones((4, 5, 6, 1), np.int16), np.eye(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(one_volume).data.shape == (6, 5, 4)

    series = np.zeros((4, 5, 6, 3), np.int16)
    series[..., 0] = 7
    with pytest.warns(UserWarning, match="first volume"):
        image = read_image(save_nifti(tmp_path / "t3.nii.gz", series, np.eye(4)))
    assert image.data.shape == (6, 5, 4) and np.all(image.data == 7)

    flat = read_image(save_nifti(tmp_path / "flat.nii.gz", np.ones((4, 5), np.int16), np.eye(4)))
    assert flat.data.shape == (1, 5, 4)
    out = write_labels(tmp_path / "flat_mask.nii.gz", np.ones((5, 4), np.uint8), like=flat)
    assert nib.load(str(out)).shape == (4, 5)

    five = save_nifti(tmp_path / "v.nii.gz", np.zeros((3, 3, 3, 2, 2), np.int16), np.eye(4))
    with pytest.raises(InputFileError, match="v.nii.gz.*not supported"):
        read_image(five)


def test_nan_voxels_are_replaced_by_the_minimum_with_a_warning(tmp_path: Path):
    data = np.full((3, 4, 5), 20.0, np.float32)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -100.0
    with pytest.warns(UserWarning, match="2 NaN/Inf voxels"):
        image = read_image(save_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))
    assert np.isfinite(image.data).all() and image.data.min() == -100.0
    assert np.count_nonzero(image.data == -100.0) == 3


def test_zero_spacing_in_header_falls_back_to_the_affine_with_a_warning(tmp_path: Path):
    srow = np.array([[2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 4.0, 0]])
    path = raw_nifti(tmp_path / "zero.nii", np.zeros((3, 4, 5), np.int16), (0.0, 3, 4), srow)
    with pytest.warns(UserWarning, match="disagrees with the affine"):
        image = read_image(path)
    np.testing.assert_allclose(image.spacing_zyx_mm, (4.0, 3.0, 2.0))
