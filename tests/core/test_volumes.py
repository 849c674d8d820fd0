"""Lung volumes: mL from the voxel spacing, slice ranges, HU statistics and the relative
volume error, against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_samlung.core.volumes import lung_volumes, voxel_size


def _labels():
    labels = np.zeros((10, 20, 30), np.uint8)
    labels[2:6, 5:15, 3:13] = 2  # right lung: 4 x 10 x 10 = 400 voxels, slices 2..5
    labels[3:9, 5:10, 16:26] = 1  # left lung: 6 x 5 x 10 = 300 voxels, slices 3..8
    return labels


def test_volumes_in_ml_by_hand():
    spacing = (2.5, 0.8, 0.7)  # 1.4 mm^3 per voxel
    vols = lung_volumes(_labels(), spacing)
    left, right, total = vols.get("left"), vols.get("right"), vols.get("total")
    assert (left.voxels, right.voxels, total.voxels) == (300, 400, 700)
    assert left.size == pytest.approx(300 * 1.4 / 1000) and left.unit == "mL"
    assert right.size == pytest.approx(0.56) and total.size == pytest.approx(0.98)
    assert (left.first_slice, left.last_slice) == (3, 8)
    assert (right.first_slice, right.last_slice) == (2, 5)
    assert (total.first_slice, total.last_slice) == (2, 8)
    assert math.isnan(left.hu_mean) and math.isnan(left.relative_error)


def test_hu_statistics_inside_each_lung():
    labels = _labels()
    image = np.full(labels.shape, 40, np.int16)
    image[labels == 1] = -850
    image[labels == 2] = np.where(np.arange(400) % 2, -900, -700)
    vols = lung_volumes(labels, (1, 1, 1), image=image)
    assert vols.get("left").hu_mean == pytest.approx(-850) and vols.get("left").hu_std == 0
    assert vols.get("right").hu_mean == pytest.approx(-800)
    assert vols.get("right").hu_std == pytest.approx(100)
    assert vols.get("total").hu_mean == pytest.approx((300 * -850 + 400 * -800) / 700)


def test_relative_volume_error_against_truth():
    truth = _labels()
    pred = truth.copy()
    pred[9, 5:10, 16:26] = 1  # left: 50 extra voxels -> +50/300
    pred[2] = np.where(pred[2] == 2, 0, pred[2])  # right: 100 fewer -> -100/400
    vols = lung_volumes(pred, (1, 2, 2), truth=truth)
    assert vols.get("left").relative_error == pytest.approx(50 / 300)
    assert vols.get("right").relative_error == pytest.approx(-0.25)
    assert vols.get("total").relative_error == pytest.approx(-50 / 700)
    assert vols.get("left").true_size == pytest.approx(300 * 4 / 1000)
    line = vols.summary_line()
    assert line.startswith("volume mL: left 1.4  right 1.2  total 2.6")
    assert "left +16.7 %" in line and "right -25.0 %" in line


def test_empty_lung_and_json():
    labels = np.zeros((4, 5, 5), np.uint8)
    labels[1, 1:3, 1:3] = 1
    vols = lung_volumes(labels, (2, 1, 1), truth=np.zeros_like(labels))
    payload = json.loads(json.dumps(vols.to_dict()))  # NaN -> null, all JSON
    assert payload["unit"] == "mL" and payload["spacing_mm"] == [2.0, 1.0, 1.0]
    assert payload["right"]["voxels"] == 0 and payload["right"]["first_slice"] is None
    assert payload["left"]["size"] == pytest.approx(0.008)
    assert payload["left"]["relative_error"] is None  # the truth has no left lung


def test_2d_gives_areas():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:12, 2:7] = 2
    vols = lung_volumes(labels, (0.5, 0.5))
    assert vols.get("right").unit == "cm2" and vols.get("right").size == pytest.approx(0.125)
    assert vols.summary_line().startswith("area cm2:")


def test_bad_spacing_and_shapes():
    with pytest.raises(ValueError, match="invalid voxel spacing"):
        voxel_size((0.0, 1.0, 1.0), 3)
    with pytest.raises(ValueError, match="image shape"):
        lung_volumes(_labels(), (1, 1, 1), image=np.zeros((2, 2, 2)))
