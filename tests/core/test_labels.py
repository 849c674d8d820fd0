"""Lung label conventions: 0 background, 1 left lung (image's right), 2 right lung."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from conftest import DATA_DIR
from napari_samlung.core.labels import (
    LEFT_LUNG,
    RIGHT_LUNG,
    lung_union,
    select_labels,
    split_lungs,
    to_lung_labels,
)
from napari_samlung.core.metrics import dice
from napari_samlung.errors import ShapeMismatchError


def two_blobs(shape=(40, 60)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[5:35, 5:25] = True  # image's left -> patient's right lung (2)
    mask[8:30, 35:55] = True  # image's right -> patient's left lung (1)
    return mask


def test_convention_constants():
    assert (LEFT_LUNG, RIGHT_LUNG) == (1, 2)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int64])
def test_lung_labels_are_kept(dtype):
    labels = np.zeros((10, 10), dtype)
    labels[2:8, 6:9] = 1
    labels[2:8, 1:4] = 2
    labels[0, 0] = 2  # a stray pixel must survive: labels are kept as given
    out = to_lung_labels(labels)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels.astype(np.uint8))


def test_binary_two_blob_mask_puts_label_1_on_the_image_right():
    mask = two_blobs()
    for variant in (mask, mask.astype(np.uint8), mask.astype(np.uint8) * 255):
        out = to_lung_labels(variant)
        assert set(np.unique(out)) == {0, 1, 2}
        cols_1 = np.nonzero(out == 1)[1]
        cols_2 = np.nonzero(out == 2)[1]
        assert cols_1.min() > cols_2.max(), "label 1 (left lung) must be on the image's right"
        np.testing.assert_array_equal(out > 0, mask)


def test_anti_aliased_mask_is_thresholded_at_half_maximum():
    # two ellipses drawn at 4x resolution and block-averaged: grey levels at the edges only
    rr, cc = np.mgrid[:160, :240]
    hi = (((rr - 80) / 60.0) ** 2 + ((cc - 60) / 40.0) ** 2 <= 1) | (
        ((rr - 80) / 55.0) ** 2 + ((cc - 180) / 38.0) ** 2 <= 1
    )
    aa = np.rint(hi.reshape(40, 4, 60, 4).mean(axis=(1, 3)) * 255).astype(np.uint8)
    assert len(np.unique(aa)) > 10  # many grey levels at the edges
    out = to_lung_labels(aa)
    np.testing.assert_array_equal(out > 0, aa > 127.5)
    assert np.nonzero(out == 1)[1].min() > np.nonzero(out == 2)[1].max()


def test_float_ringing_mask_like_ct_volumes_128():
    mask = np.zeros((6, 40, 60), np.float32)
    mask[1:5] = two_blobs() * 255.0
    ringing = ndi.gaussian_laplace(mask, 1.0) * -40.0 + mask  # overshoot and undershoot
    ringing = np.clip(ringing, -115.0, 342.0).astype(np.float32)
    assert ringing.min() < 0 and ringing.max() > 255
    out = to_lung_labels(ringing)
    assert out.shape == mask.shape and out.dtype == np.uint8
    lung = out > 0
    assert lung[ringing > 200].all(), "the lung's inside must be foreground"
    assert not lung[ringing < 100].any(), "background and undershoot must stay background"
    assert not out[0].any() and not out[5].any()
    assert set(np.unique(out[1:5])) == {0, 1, 2}
    # per slice, label 1 lies to the image's right of label 2
    assert np.nonzero(out[2] == 1)[1].min() > np.nonzero(out[2] == 2)[1].max()


def test_float_ringing_mask_threshold_is_half_the_nominal_foreground():
    mask = np.zeros((40, 60), np.float32)
    mask[10:30, 10:50] = 255.0
    mask[10:30, 10] = 150.0  # an interpolated edge column: above 127.5, below 342/2
    mask[20, 30] = 342.0  # overshoot
    mask[5, 5] = -115.0  # undershoot
    out = to_lung_labels(mask)
    np.testing.assert_array_equal(out > 0, mask > 127.5)


def _ct_volumes_128() -> Path:
    folder = DATA_DIR / "ct_volumes_128"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}; set SAMLUNG_DATA to the shared data folder")
    return folder


def test_real_ringing_masks_match_the_documented_threshold():
    import nibabel as nib

    folder = _ct_volumes_128()
    for path in sorted(folder.glob("*-msk.nii.gz")):
        raw = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        out = to_lung_labels(raw, name=path.name)
        assert set(np.unique(out)) == {0, 1, 2}
        np.testing.assert_array_equal(out > 0, raw > 127, err_msg=path.name)


def test_real_ringing_masks_give_two_lungs():
    import nibabel as nib

    folder = _ct_volumes_128()
    path = folder / "id001-128x128x64-msk.nii.gz"
    raw = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    out = to_lung_labels(raw, name=path.name)
    assert set(np.unique(out)) == {0, 1, 2}
    assert dice(out > 0, raw > 127) > 0.98
    # the two lungs are on opposite sides of the image, label 1 on the right (larger column)
    assert np.nonzero(out == 1)[-1].mean() > np.nonzero(out == 2)[-1].mean()


def test_real_multi_label_segmentation_is_refused():
    import nibabel as nib

    path = DATA_DIR / "nifti_examples" / "example_seg.nii.gz"
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set SAMLUNG_DATA to the shared data folder")
    seg = np.asarray(nib.load(path).dataobj)
    with pytest.raises(ShapeMismatchError, match="are not lung labels"):
        to_lung_labels(seg, name=path.name)
    lobes = to_lung_labels(select_labels(seg, [10, 11, 12, 13, 14]))
    assert set(np.unique(lobes)) == {0, 1, 2}


def test_float_mask_with_non_finite_values():
    mask = two_blobs().astype(np.float32)
    mask[0, 0] = np.nan
    mask[0, 1] = np.inf
    out = to_lung_labels(mask)
    np.testing.assert_array_equal(out > 0, two_blobs())


def test_all_zero_and_negative_float_masks_are_empty():
    assert not to_lung_labels(np.zeros((4, 4), np.float32)).any()
    assert not to_lung_labels(np.full((4, 4), -3.0, np.float32)).any()
    assert not to_lung_labels(np.zeros((4, 4), np.uint8)).any()


def test_multi_label_segmentation_is_refused():
    seg = np.zeros((20, 20), np.uint16)
    seg[1:5, 1:5] = 10
    seg[6:10, 1:5] = 11
    seg[11:15, 1:5] = 12
    seg[1:5, 8:12] = 13
    seg[6:10, 8:12] = 14
    seg[15:19, 15:19] = 117
    with pytest.raises(
        ShapeMismatchError, match=r"ct_seg: label values \[0, 10, 11, 12, 13, 14, 117\] are not"
    ) as info:
        to_lung_labels(seg, name="ct_seg")
    assert "numpy.isin(mask, [L1, L2])" in str(info.value)
    # picking the lobes (10..14) gives a usable binary mask
    lungs = to_lung_labels(select_labels(seg, [10, 11, 12, 13, 14]))
    assert lungs.any() and not lungs[15:19, 15:19].any()


def test_negative_integer_labels_are_refused():
    seg = np.zeros((5, 5), np.int16)
    seg[1, 1] = -1
    seg[2, 2] = 1
    with pytest.raises(ShapeMismatchError, match="not lung labels"):
        to_lung_labels(seg)


def test_empty_array_is_refused():
    with pytest.raises(ShapeMismatchError, match="the mask is empty"):
        to_lung_labels(np.zeros((0, 5), np.uint8), name="m.png")


@pytest.mark.parametrize(("cols", "expected"), [(slice(40, 55), 1), (slice(3, 15), 2)])
def test_single_component_becomes_one_lung_by_side(cols, expected):
    mask = np.zeros((30, 60), np.uint8)
    mask[5:25, cols] = 1
    out = to_lung_labels(mask)
    assert set(np.unique(out)) == {0, expected}
    np.testing.assert_array_equal(out > 0, mask > 0)


def test_split_lungs_3d_and_union():
    vol = np.stack([two_blobs(), np.zeros((40, 60), bool), two_blobs()])
    labels = split_lungs(vol)
    assert labels.shape == vol.shape
    np.testing.assert_array_equal(lung_union(labels), vol)
    assert labels[0, 20, 45] == LEFT_LUNG and labels[0, 20, 10] == RIGHT_LUNG
