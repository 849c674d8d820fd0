"""Orientation and grids: any stored orientation reads as display orientation (io.geometry)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nifti_samples import sample_nifti, save_nifti

from napari_samlung.errors import ShapeMismatchError
from napari_samlung.io import (
    read_image,
    read_mask,
    write_labels,
)
from napari_samlung.io.geometry import (
    DISPLAY_AXCODES,
    display_affine,
    display_origin_mm,
    display_to_ras,
    from_display,
    same_grid,
    to_display,
)

ORIENTATIONS = ["RAS", "LAS", "LPS", "LPI", "ASR", "SRP", "PIL"]


@pytest.mark.parametrize("axcodes", ORIENTATIONS)
def test_any_stored_orientation_reads_as_radiological_display(tmp_path: Path, axcodes: str):
    reference_data, reference_affine = sample_nifti("RAS")
    reference = read_image(save_nifti(tmp_path / "ras.nii.gz", reference_data, reference_affine))
    data, affine = sample_nifti(axcodes)
    image = read_image(save_nifti(tmp_path / f"{axcodes}.nii.gz", data, affine))

    np.testing.assert_array_equal(image.data, reference.data)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-6)
    np.testing.assert_allclose(image.spacing_zyx_mm, (4.0, 3.0, 2.0))
    n_slices, n_rows, n_cols = image.data.shape
    assert (n_slices, n_rows, n_cols) == (8, 18, 20)
    # Patient's right (value 10/100) is on the image's LEFT (low columns) ...
    right_cols = np.nonzero(np.isin(image.data, (10, 100)))[2]
    assert right_cols.max() < n_cols / 2
    # ... the right-anterior-superior marker is at the top (low rows) in the last slices.
    z, r, c = np.nonzero(image.data == 100)
    assert r.max() < n_rows / 2 and z.min() > n_slices / 2 and c.max() < n_cols / 2
    # Left-posterior marker: image's right, bottom.
    _, r, c = np.nonzero(image.data == 50)
    assert r.min() > n_rows / 2 and c.min() > n_cols / 2


@pytest.mark.parametrize("axcodes", ["LAS", "ASR"])
def test_mask_written_back_in_source_orientation(tmp_path: Path, axcodes: str):
    data, affine = sample_nifti(axcodes)
    source = save_nifti(tmp_path / "ct.nii.gz", data, affine)
    image = read_image(source)
    labels = (image.data == 100).astype(np.uint8)
    out = write_labels(tmp_path / "out.nii.gz", labels, like=image)
    written = nib.load(str(out))
    assert nib.aff2axcodes(written.affine) == tuple(axcodes)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), (data == 100).astype(np.uint8))


def test_mask_in_other_orientation_same_grid_is_accepted_other_space_refused(tmp_path: Path):
    image_data, image_affine = sample_nifti("RAS")
    image = read_image(save_nifti(tmp_path / "ct.nii.gz", image_data, image_affine))
    mask_data, mask_affine = sample_nifti("LPS")
    mask_file = save_nifti(
        tmp_path / "m_mask.nii.gz", (mask_data > 0).astype(np.uint8), mask_affine
    )
    assert read_mask(mask_file, like=image).shape == image.data.shape

    shifted = image_affine.copy()
    shifted[0, 3] += 15.0
    moved = save_nifti(tmp_path / "moved_mask.nii.gz", (image_data > 0).astype(np.uint8), shifted)
    with pytest.raises(ShapeMismatchError, match="different orientation/space.*resample"):
        read_mask(moved, like=image)


def test_mask_shape_mismatch_names_both_files(tmp_path: Path):
    image = read_image(save_nifti(tmp_path / "ct.nii.gz", np.zeros((6, 5, 4), np.int16), np.eye(4)))
    mask = save_nifti(tmp_path / "small_mask.nii.gz", np.ones((6, 5, 3), np.uint8), np.eye(4))
    with pytest.raises(ShapeMismatchError) as err:
        read_mask(mask, like=image)
    message = str(err.value)
    assert "small_mask.nii.gz" in message and "ct.nii.gz" in message and "\n" not in message


def test_display_affine_points_slices_superior_rows_posterior_cols_left():
    affine = display_affine((5.0, 2.0, 3.0), origin_mm=(1.0, 2.0, 3.0))
    assert nib.aff2axcodes(affine) == DISPLAY_AXCODES == ("S", "P", "L")
    np.testing.assert_allclose(affine @ [1, 0, 0, 1], [1.0, 2.0, 8.0, 1.0])  # +5 mm superior
    np.testing.assert_allclose(affine @ [0, 1, 0, 1], [1.0, 0.0, 3.0, 1.0])  # 2 mm posterior
    np.testing.assert_allclose(affine @ [0, 0, 1, 1], [-2.0, 2.0, 3.0, 1.0])  # 3 mm left
    # napari's translate: voxel 0 in the (superior, posterior, left) frame
    assert display_origin_mm(affine) == (3.0, -2.0, -1.0)


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "ASR"])
def test_to_display_and_back_is_the_identity_and_keeps_the_world(axcodes: str):
    data, affine = sample_nifti(axcodes)
    oriented, display, spacing, source_ornt = to_display(data, affine)
    assert nib.aff2axcodes(display) == DISPLAY_AXCODES
    assert spacing == (4.0, 3.0, 2.0) and oriented.flags.c_contiguous
    np.testing.assert_array_equal(from_display(oriented, source_ornt), data)
    stored, ras_affine = display_to_ras(oriented, display)
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    reference, _ = sample_nifti("RAS")
    np.testing.assert_array_equal(stored, reference)


def test_same_grid_allows_a_tenth_of_a_voxel():
    affine = display_affine((5.0, 2.0, 2.0))
    shape = (4, 6, 6)
    nudged = affine.copy()
    nudged[0, 3] += 0.1  # a twentieth of the smallest spacing
    assert same_grid(affine, nudged, shape)
    nudged[0, 3] += 0.2
    assert not same_grid(affine, nudged, shape)


def test_to_display_refuses_a_degenerate_axis():
    affine = np.diag([1.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="degenerate"):
        to_display(np.zeros((2, 2, 2)), affine)
