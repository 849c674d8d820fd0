"""``pipeline.segment``: one image segmented from a mask, a prompts file or a seed slice,
called directly (no console script)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pipeline_data import MICRO, SHAPE, lung_slices, write_phantom_ct

from conftest import save_png
from napari_samlung.core.metrics import score_slice
from napari_samlung.errors import PromptError, SamlungError
from napari_samlung.io import read_image, write_labels
from napari_samlung.pipeline.segment import (
    check_output,
    image_shaped,
    score_volume,
    segment_image,
    write_result,
)


@pytest.fixture
def ct(tmp_path):
    return write_phantom_ct(tmp_path)


@pytest.fixture
def xray(tmp_path):
    """A 2D (row, col) X-ray-like PNG, taller than wide, and its two-lung mask."""
    mask = np.zeros((48, 40), np.uint8)
    mask[6:42, 4:17] = 255
    mask[6:42, 23:36] = 255
    image = np.where(mask > 0, 40, 200).astype(np.uint8)
    return save_png(tmp_path / "chest.png", image), save_png(tmp_path / "chest_mask.png", mask)


def test_prompts_from_a_mask_scores_every_slice_with_lung(ct):
    image_path, mask_path, labels = ct
    result = segment_image(image_path, MICRO, prompts_from=mask_path)
    assert result.labels.shape == SHAPE and result.labels.dtype == np.uint8
    assert [s.slice_index for s in result.scores] == lung_slices(labels)
    assert result.skipped_empty == SHAPE[0] - len(lung_slices(labels))
    assert result.propagation is None
    assert result.summary().slices == len(lung_slices(labels))


def test_a_2d_image_gives_2d_labels(xray, tmp_path):
    image_path, mask_path = xray
    result = segment_image(image_path, MICRO, prompts_from=mask_path)
    assert result.labels.shape == (48, 40) and len(result.scores) == 1
    out = write_result(result, tmp_path / "pred.png")
    assert read_image(out).data.shape == (48, 40)


def test_seed_from_propagates_and_scores_against_the_whole_mask(ct):
    image_path, mask_path, labels = ct
    middle = lung_slices(labels)[len(lung_slices(labels)) // 2]
    result = segment_image(image_path, MICRO, seed_from=mask_path, seed_slice=middle)
    assert result.propagation is not None and middle in result.propagation.written
    assert result.labels.shape == SHAPE
    assert [s.slice_index for s in result.scores] == lung_slices(labels)
    assert result.skipped_empty == 0


def test_propagate_from_a_prompts_file(ct, tmp_path):
    image_path, _, labels = ct
    z = lung_slices(labels)[0]
    rows, cols = np.nonzero(labels[z])
    box = [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"slices": [{"slice": z, "boxes_xyxy": [box]}]}))
    result = segment_image(image_path, MICRO, propagate_from=prompts)
    assert result.scores is None and result.propagation is not None
    assert z in result.propagation.written and result.labels.shape == SHAPE


def test_an_empty_mask_gives_no_prompts(ct, tmp_path):
    image_path, _, labels = ct
    empty = tmp_path / "empty_mask.nii.gz"
    write_labels(empty, np.zeros_like(labels), like=read_image(image_path))
    with pytest.raises(PromptError, match="empty_mask.nii.gz: the mask has no lung"):
        segment_image(image_path, MICRO, prompts_from=empty)


def test_one_source_is_required(ct):
    with pytest.raises(ValueError, match="give one of"):
        segment_image(ct[0], MICRO)


def test_check_output_refuses_an_input_and_an_existing_file(ct, tmp_path):
    image_path, mask_path, _ = ct
    with pytest.raises(SamlungError, match="is one of the input files"):
        check_output(mask_path, [image_path, mask_path, None], overwrite=True)
    existing = tmp_path / "old.nii.gz"
    existing.write_bytes(b"x")
    with pytest.raises(SamlungError, match="--overwrite"):
        check_output(existing, [image_path], overwrite=False)
    check_output(existing, [image_path], overwrite=True)


def test_score_volume_matches_score_slice():
    truth = np.zeros((3, 8, 8), np.uint8)
    truth[1, 2:6, 2:6] = 1
    pred = np.zeros_like(truth)
    pred[1, 3:6, 2:6] = 1
    (only,) = score_volume(pred, truth)
    expected = score_slice(pred[1], truth[1], slice_index=1)
    assert only.slice_index == 1 and only.dice == pytest.approx(expected.dice)
    assert score_volume(pred[1], truth[1])[0].dice == pytest.approx(expected.dice)


def test_image_shaped():
    volume = np.zeros((1, 4, 5), np.uint8)
    assert image_shaped(volume, np.zeros((4, 5))).shape == (4, 5)
    assert image_shaped(volume, np.zeros((1, 4, 5))).shape == (1, 4, 5)
