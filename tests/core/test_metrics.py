"""Dice, Jaccard, per-slice scores and Table-1 summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_samlung.core.metrics import (
    SliceScore,
    Stats,
    dice,
    jaccard,
    score_slice,
    summarize,
)


def test_dice_and_jaccard_known_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :4] = True  # 4 px
    b[0, 2:4] = True  # 2 px, both inside a
    b[1, 0:2] = True  # 2 px outside a
    # |A|=4 |B|=4 |A∩B|=2 |A∪B|=6
    assert dice(a, b) == pytest.approx(0.5)
    assert jaccard(a, b) == pytest.approx(2 / 6)


def test_dice_accepts_label_images_as_binary():
    pred = np.array([[0, 1, 2, 2]])
    truth = np.array([[0, 2, 2, 0]])
    assert dice(pred, truth) == pytest.approx(2 * 2 / (3 + 2))


def test_empty_cases():
    empty = np.zeros((3, 3), bool)
    full = np.ones((3, 3), bool)
    assert dice(empty, empty) == 1.0
    assert jaccard(empty, empty) == 1.0
    assert dice(full, empty) == 0.0
    assert dice(empty, full) == 0.0
    assert jaccard(empty, full) == 0.0
    assert dice(full, full) == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"prediction shape \(2, 2\) != ground truth shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_score_slice_skips_empty_ground_truth():
    pred = np.ones((5, 5), np.uint8)
    assert score_slice(pred, np.zeros((5, 5), np.uint8)) is None


def test_score_slice_union_and_per_lung():
    truth = np.zeros((4, 8), np.uint8)
    truth[:, 5:8] = 1  # left lung on the image's right
    truth[:, 0:3] = 2
    pred = truth.copy()
    pred[:, 5:8] = 2  # lungs swapped in the prediction
    s = score_slice(pred, truth, case="c1", slice_index=7, score=0.9, seconds=0.25)
    assert s.case == "c1" and s.slice_index == 7
    assert s.dice == 1.0 and s.jaccard == 1.0  # the union is scored
    assert s.dice_per_lung[1] == 0.0
    assert s.dice_per_lung[2] == pytest.approx(2 * 12 / (24 + 12))
    assert not s.empty_prediction
    assert s.score == 0.9 and s.seconds == 0.25


def test_score_slice_counts_an_empty_prediction_as_zero():
    truth = np.zeros((4, 4), np.uint8)
    truth[1:3, 1:3] = 1
    s = score_slice(np.zeros_like(truth), truth)
    assert s is not None
    assert s.dice == 0.0 and s.jaccard == 0.0
    assert s.empty_prediction


def _score(case, i, d, j, empty=False):
    return SliceScore(case, i, d, j, {1: d}, empty_prediction=empty)


def test_summarize_stats():
    scores = [
        _score("a", 0, 0.9, 0.8),
        _score("a", 1, 0.7, 0.6),
        _score("b", 0, 0.0, 0.0, empty=True),
        _score("b", 1, 1.0, 1.0),
    ]
    summary = summarize(scores, skipped_empty=5)
    d = summary.dice
    assert d.n == 4
    assert d.mean == pytest.approx(0.65)
    assert d.std == pytest.approx(np.std([0.9, 0.7, 0.0, 1.0]))
    assert (d.min, d.max) == (0.0, 1.0)
    assert d.median == pytest.approx(0.8)
    assert summary.jaccard.mean == pytest.approx(0.6)
    assert summary.cases == 2 and summary.slices == 4
    assert summary.skipped_empty == 5 and summary.empty_predictions == 1
    out = summary.to_dict()
    assert set(out) == {"dice", "jaccard", "cases", "slices", "skipped_empty", "empty_predictions"}
    assert set(out["dice"]) == {"mean", "std", "min", "max", "median"}
    table = summary.format_table()
    assert "65.00" in table and "skipped (empty ground truth) 5" in table


def test_summarize_nothing_scored():
    summary = summarize([], skipped_empty=3)
    assert summary.slices == 0 and summary.dice.n == 0
    assert math.isnan(summary.dice.mean)
    assert "-" in summary.format_table()
    assert Stats.of([]).n == 0


# --------------------------------------------------------------------------- properties

masks = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        arrays(bool, (n, 7), elements=st.booleans()), arrays(bool, (n, 7), elements=st.booleans())
    )
)


@given(masks)
@settings(max_examples=300, deadline=None)
def test_property_symmetry_bounds_and_relation(pair):
    a, b = pair
    d, j = dice(a, b), jaccard(a, b)
    assert d == pytest.approx(dice(b, a))
    assert j == pytest.approx(jaccard(b, a))
    assert 0.0 <= j <= d <= 1.0
    assert j == pytest.approx(d / (2.0 - d))


@given(arrays(bool, st.tuples(st.integers(1, 10), st.integers(1, 10)), elements=st.booleans()))
@settings(max_examples=200, deadline=None)
def test_property_identity(a):
    if a.any():
        assert dice(a, a) == 1.0
        assert jaccard(a, a) == 1.0
        assert dice(a, ~a) == 0.0
