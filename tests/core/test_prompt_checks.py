"""``core.prompts.validate_prompt`` and ``Prompt``: points get the checks boxes have.

Issue 13, section 4: NaN or huge point coordinates, points that are not (x, y) pairs,
label counts that do not match the points, point labels other than 0/1 and lung labels
other than 1/2 are refused with one line, without numpy warnings on the way.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_samlung.core.prompts import (
    MAX_COORDINATE,
    ONE_LUNG,
    Prompt,
    validate_prompt,
)
from napari_samlung.errors import PromptError

SHAPE = (50, 100)
BOX = [10, 10, 40, 30]


def _refused(make, accepts_points: bool = True) -> str:
    """The one-line PromptError of building and validating a prompt, with no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PromptError) as err:
            validate_prompt(make(), SHAPE, accepts_points)
    message = str(err.value)
    assert message and "\n" not in message
    return message


def _assigned(**fields) -> Prompt:
    """A valid prompt whose fields are then overwritten (as the widget does)."""
    prompt = Prompt(points_xy=[[20, 20]], point_labels=[1], box_xyxy=BOX)
    for name, value in fields.items():
        setattr(prompt, name, value)
    return prompt


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda: Prompt(points_xy=[[np.nan, 4]], point_labels=[1]), "non-finite coordinates"),
        (lambda: Prompt(points_xy=[[np.inf, 4]], point_labels=[1]), "non-finite coordinates"),
        (lambda: Prompt(points_xy=[[1e300, 4]], point_labels=[1]), "non-finite coordinates"),
        (lambda: Prompt(points_xy=[[2e6, 4]], point_labels=[1]), "beyond 1e+06 pixels"),
        (lambda: Prompt(points_xy=[[1, 2, 3]], point_labels=[1]), "(x, y) pairs"),
        (lambda: Prompt(points_xy=[[1, 2]], point_labels=[1, 1]), "1 points but 2 labels"),
        (lambda: Prompt(points_xy=[[1, 2], [3, 4]], point_labels=[1]), "2 points but 1 labels"),
        (lambda: Prompt(points_xy=[["a", 2]], point_labels=[1]), "must be numbers"),
        (lambda: Prompt(points_xy=[[1, 2]], point_labels=["x"]), "must be numbers"),
        (lambda: Prompt(points_xy=[[1, 2]], point_labels=[2]), "is not 1 (positive) or 0"),
        (lambda: Prompt(points_xy=[[1, 2]], point_labels=[-1]), "is not 1 (positive) or 0"),
        (lambda: _assigned(points_xy=np.array([[1, 2, 3]])), "(x, y) pairs"),
        (lambda: _assigned(point_labels=np.array([1, 1, 1])), "1 points but 3 point labels"),
        (lambda: _assigned(points_xy=np.array([[np.nan, 1.0]])), "non-finite coordinates"),
    ],
)
def test_points_are_checked_like_boxes(make, expected):
    assert expected in _refused(make)


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda: Prompt(box_xyxy=[0, 0, 1e300, 1e300]), "non-finite corners"),
        (lambda: Prompt(box_xyxy=[0, 0, -1e39, 5]), "non-finite corners"),
        (lambda: Prompt(box_xyxy=[0, 0, 5e6, 20]), "beyond 1e+06 pixels"),
        (lambda: Prompt(box_xyxy=[1, 2, 3]), "needs 4 numbers"),
        (lambda: Prompt(box_xyxy=[1, 2, 3, 4, 5]), "needs 4 numbers"),
        (lambda: Prompt(box_xyxy=["a", 2, 3, 4]), "must be numbers"),
        (lambda: _assigned(box_xyxy=np.array([1.0, 2.0])), "needs 4 numbers"),
    ],
)
def test_boxes_with_huge_or_malformed_corners_warn_nothing(make, expected):
    assert expected in _refused(make)


@pytest.mark.parametrize("label", [0, 3, 7, 255, -2, True, 1.0, "1", "left"])
def test_lung_labels_other_than_1_and_2_are_refused(label):
    message = _refused(lambda: Prompt(box_xyxy=BOX, target_label=label))
    assert "is not 1 (left lung) or 2 (right lung)" in message


@pytest.mark.parametrize("label", [None, ONE_LUNG, 1, 2, np.int64(2), np.uint8(1)])
def test_the_lung_labels_a_prompt_may_carry(label):
    checked = validate_prompt(Prompt(box_xyxy=BOX, target_label=label), SHAPE, True)
    assert checked.target_label == label


def test_points_at_the_limit_of_the_image_are_kept():
    prompt = Prompt(points_xy=[[-0.5, -0.5], [99.5, 49.5]], point_labels=[1, 0])
    checked = validate_prompt(prompt, SHAPE, True)
    np.testing.assert_array_equal(checked.point_labels, [1, 0])


def test_a_box_within_the_coordinate_limit_is_clipped_not_refused():
    box = [-MAX_COORDINATE, -10, MAX_COORDINATE, 40]
    checked = validate_prompt(Prompt(box_xyxy=box), SHAPE, False)
    np.testing.assert_array_equal(checked.box_xyxy, [0, 0, 99, 40])


def test_a_box_only_model_ignores_points_only_after_they_are_checked():
    prompt = Prompt(points_xy=[[np.nan, 1]], point_labels=[1], box_xyxy=BOX)
    assert "non-finite coordinates" in _refused(lambda: prompt, accepts_points=False)
