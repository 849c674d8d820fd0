"""Prompts from lung labels (the paper's Algorithm 1 and better strategies), and
validation of user prompts.  SAM takes (x, y) = (col, row): the asymmetric-image
tests below catch a swap."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from napari_samlung.core.labels import split_lungs
from napari_samlung.core.prompts import (
    MAX_POINTS_PER_SLICE,
    NEGATIVE,
    POSITIVE,
    STRATEGIES,
    Prompt,
    box_prompts,
    box_xyxy_from_mask,
    box_xyxy_to_rc_corners,
    get_strategy,
    interior_point_rc,
    mediastinum_negatives_rc,
    multi_negative_prompts,
    paper_positive_point_rc,
    paper_prompts,
    per_lung_prompts,
    points_rc_to_xy,
    points_xy_to_rc,
    prompts_from_labels,
    validate_prompt,
)
from napari_samlung.errors import PromptError


def two_lungs(shape=(60, 100)) -> np.ndarray:
    """Right lung (2) on the image's left, left lung (1) on the image's right."""
    labels = np.zeros(shape, np.uint8)
    labels[10:50, 10:40] = 2
    labels[15:55, 60:90] = 1
    return labels


def at(mask: np.ndarray, point_xy) -> bool:
    """Is the (x, y) point on a mask pixel?"""
    x, y = point_xy
    return bool(mask[int(round(float(y))), int(round(float(x)))])


# --------------------------------------------------------------------------- coordinates


def test_points_rc_to_xy_swaps_axes_and_back():
    rc = np.array([[3, 40], [7, 1]], np.float32)
    xy = points_rc_to_xy(rc)
    np.testing.assert_array_equal(xy, [[40, 3], [1, 7]])
    np.testing.assert_array_equal(points_xy_to_rc(xy), rc)


def test_box_of_a_top_right_mask_has_large_x_and_small_y():
    # 100 rows x 200 cols, mask only in the top-right corner
    mask = np.zeros((100, 200), bool)
    mask[5:21, 170:196] = True
    box = box_xyxy_from_mask(mask)
    np.testing.assert_array_equal(box, [170, 5, 195, 20])  # x0, y0, x1, y1
    np.testing.assert_array_equal(box_xyxy_to_rc_corners(box), [[5, 170], [20, 195]])


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_puts_prompts_top_right_for_a_top_right_mask(strategy):
    mask = np.zeros((100, 200), bool)
    mask[5:21, 150:171] = True
    mask[5:21, 176:196] = True
    labels = split_lungs(mask)
    assert set(np.unique(labels)) == {0, 1, 2}
    for prompt in prompts_from_labels(labels, strategy):
        x0, y0, x1, y1 = prompt.box_xyxy
        assert x0 >= 150 and x1 <= 195, "box x-range must be the mask's columns"
        assert y0 >= 5 and y1 <= 20, "box y-range must be the mask's rows"
        for (x, y), lab in zip(prompt.points_xy, prompt.point_labels, strict=True):
            assert 0 <= y < 100 and 0 <= x < 200
            if lab == POSITIVE:
                assert x >= 150 and y <= 20
                assert at(mask, (x, y))


# --------------------------------------------------------------------------- Algorithm 1 point


def test_paper_point_inside_is_recentred_along_the_longer_run():
    # a wide bar (rows 10-19, cols 10-69) and a block under its right end
    mask = np.zeros((40, 80), bool)
    mask[10:20, 10:70] = True
    mask[20:30, 50:70] = True
    cy, cx = ndi.center_of_mass(mask)
    assert (cy, cx) == (17.0, 44.5)  # inside the bar, right of its middle
    # row run through (17, 44) is 60 long, column run 10: re-centre on the row
    assert paper_positive_point_rc(mask) == (17, 39)
    # the same shape transposed re-centres along the column
    assert paper_positive_point_rc(mask.T) == (39, 17)


def test_paper_point_outside_u_shape_moves_into_the_mask():
    # a U: two bars joined at the bottom; the centre of mass lies between the bars
    mask = np.zeros((50, 50), bool)
    mask[10:40, 10:15] = True
    mask[10:40, 35:40] = True
    mask[35:40, 10:40] = True
    cy, cx = ndi.center_of_mass(mask)
    assert not mask[int(round(cy)), int(round(cx))]
    row, col = paper_positive_point_rc(mask)
    assert mask[row, col]
    # row 28 holds 10 mask pixels, column 24 only 5: move along the row to the
    # first longest run (cols 10-14, middle 12), then re-centre along its column
    # (rows 10-39, middle 24)
    assert (row, col) == (24, 12)


def test_paper_point_outside_crescent_ends_inside():
    rr, cc = np.mgrid[:101, :101]
    r = np.hypot(rr - 50, cc - 50)
    mask = (r >= 25) & (r <= 40) & (cc < 70)  # a "C" open to the right
    cy, cx = ndi.center_of_mass(mask)
    assert not mask[int(round(cy)), int(round(cx))], "centroid must fall in the hole"
    row, col = paper_positive_point_rc(mask)
    assert mask[row, col]


def test_paper_point_of_a_single_pixel():
    mask = np.zeros((9, 5), bool)
    mask[7, 3] = True
    assert paper_positive_point_rc(mask) == (7, 3)
    assert interior_point_rc(mask) == (7, 3)


def test_paper_point_of_empty_mask_is_an_error():
    with pytest.raises(PromptError, match="empty mask"):
        paper_positive_point_rc(np.zeros((4, 4), bool))
    with pytest.raises(PromptError, match="empty mask"):
        box_xyxy_from_mask(np.zeros((4, 4), bool))


# --------------------------------------------------------------------------- strategies


def test_paper_prompts_box_points_and_negative_at_box_centre():
    labels = two_lungs()
    (prompt,) = paper_prompts(labels)
    # union box: rows 10..54, cols 10..89 -> x0=10, y0=10, x1=89, y1=54
    np.testing.assert_array_equal(prompt.box_xyxy, [10, 10, 89, 54])
    assert prompt.target_label is None
    assert prompt.point_labels.tolist() == [POSITIVE, POSITIVE, NEGATIVE]
    # one positive per lung, in label order (1 then 2)
    assert at(labels == 1, prompt.points_xy[0])
    assert at(labels == 2, prompt.points_xy[1])
    np.testing.assert_allclose(prompt.points_xy[2], [(10 + 89) / 2, (10 + 54) / 2])


def test_paper_prompts_box_only_model_gets_just_the_box():
    (prompt,) = paper_prompts(two_lungs(), accepts_points=False)
    assert not prompt.has_points
    np.testing.assert_array_equal(prompt.box_xyxy, [10, 10, 89, 54])


def test_per_lung_prompts_one_box_per_label():
    labels = two_lungs()
    prompts = per_lung_prompts(labels, accepts_points=False)
    assert [p.target_label for p in prompts] == [1, 2]
    assert all(not p.has_points for p in prompts)
    np.testing.assert_array_equal(prompts[0].box_xyxy, [60, 15, 89, 54])
    np.testing.assert_array_equal(prompts[1].box_xyxy, [10, 10, 39, 49])


def test_per_lung_prompts_with_points_have_one_positive_in_their_lung():
    labels = two_lungs()
    for p in per_lung_prompts(labels, accepts_points=True):
        assert p.point_labels.tolist() == [POSITIVE]
        assert at(labels == p.target_label, p.points_xy[0])


def test_box_strategy_is_one_box_without_points():
    (prompt,) = box_prompts(two_lungs())
    assert not prompt.has_points and prompt.target_label is None
    np.testing.assert_array_equal(prompt.box_xyxy, [10, 10, 89, 54])


def test_multi_negative_never_puts_a_negative_inside_a_lung():
    # the paper's box-centre negative lands inside a lung here (an L-shaped right lung
    # reaches under the box centre)
    labels = np.zeros((80, 100), np.uint8)
    labels[10:70, 10:35] = 2
    labels[35:45, 10:60] = 2
    labels[10:70, 65:90] = 1
    (paper,) = paper_prompts(labels)
    assert at(labels > 0, paper.points_xy[-1]), "precondition: the paper's negative is on a lung"
    (prompt,) = multi_negative_prompts(labels)
    negatives = prompt.points_xy[prompt.point_labels == NEGATIVE]
    assert len(negatives) >= 1
    for xy in negatives:
        assert not at(labels > 0, xy)
        assert 35 <= xy[0] <= 65, "negatives sit between the lungs"
    positives = prompt.points_xy[prompt.point_labels == POSITIVE]
    assert len(positives) == 2


def test_multi_negative_box_only_model_gets_the_box():
    (prompt,) = multi_negative_prompts(two_lungs(), accepts_points=False)
    assert not prompt.has_points
    np.testing.assert_array_equal(prompt.box_xyxy, [10, 10, 89, 54])


def test_mediastinum_negatives_need_two_lungs():
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 1
    assert mediastinum_negatives_rc(labels).shape == (0, 2)


def test_prompts_from_labels_empty_slice_and_errors():
    assert prompts_from_labels(np.zeros((8, 8), np.uint8), "paper") == []
    with pytest.raises(PromptError, match="expected a 2D label slice"):
        prompts_from_labels(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(PromptError, match="unknown prompt strategy 'magic'.*paper.*per-lung"):
        prompts_from_labels(two_lungs(), "magic")
    assert get_strategy("per-lung-multimask").multimask
    assert get_strategy("per-lung-post").postprocess


def test_prompt_point_label_count_mismatch():
    with pytest.raises(PromptError, match="2 points but 1 labels"):
        Prompt(points_xy=[[1, 2], [3, 4]], point_labels=[1])


# --------------------------------------------------------------------------- validate_prompt


def test_validate_point_outside_image():
    p = Prompt(points_xy=[[120.0, 5.0]], point_labels=[POSITIVE])
    with pytest.raises(PromptError, match=r"point \(row 5, col 120\) lies outside the 50x100"):
        validate_prompt(p, (50, 100), accepts_points=True)
    # x is the column: x=99 fits in 100 columns even though there are only 50 rows
    ok = validate_prompt(Prompt(points_xy=[[99.0, 49.0]], point_labels=[1]), (50, 100), True)
    np.testing.assert_array_equal(ok.points_xy, [[99, 49]])


@pytest.mark.parametrize("box", [[10, 10, 10, 40], [10, 10, 40, 10], [200, 5, 300, 30]])
def test_validate_degenerate_box(box):
    with pytest.raises(PromptError, match="zero width or height"):
        validate_prompt(Prompt(box_xyxy=box), (50, 100), accepts_points=True)


def test_validate_non_finite_box():
    with pytest.raises(PromptError, match="non-finite"):
        validate_prompt(Prompt(box_xyxy=[0, 0, np.nan, 5]), (50, 100), True)


def test_validate_clips_a_box_larger_than_the_image_and_sorts_corners():
    p = validate_prompt(Prompt(box_xyxy=[150, 70, -20, -5], target_label=2), (50, 100), True)
    np.testing.assert_array_equal(p.box_xyxy, [0, 0, 99, 49])
    assert p.target_label == 2


def test_validate_only_negative_points():
    p = Prompt(points_xy=[[5, 5], [6, 6]], point_labels=[NEGATIVE, NEGATIVE])
    with pytest.raises(PromptError, match="only negative points"):
        validate_prompt(p, (50, 100), accepts_points=True)


def test_validate_nothing_at_all():
    with pytest.raises(PromptError, match="no prompt on this slice"):
        validate_prompt(Prompt(), (50, 100), accepts_points=True)


def test_validate_too_many_points():
    n = MAX_POINTS_PER_SLICE + 1
    p = Prompt(points_xy=np.full((n, 2), 5.0), point_labels=np.ones(n))
    with pytest.raises(PromptError, match=f"{n} points on one slice is more than the limit"):
        validate_prompt(p, (50, 100), accepts_points=True)
    ok = Prompt(points_xy=np.full((n - 1, 2), 5.0), point_labels=np.ones(n - 1))
    assert len(validate_prompt(ok, (50, 100), True).points_xy) == n - 1


def test_validate_box_only_model_drops_points_and_needs_a_box():
    p = Prompt(points_xy=[[5, 5]], point_labels=[POSITIVE], box_xyxy=[1, 2, 30, 40])
    out = validate_prompt(p, (50, 100), accepts_points=False)
    assert not out.has_points
    np.testing.assert_array_equal(out.box_xyxy, [1, 2, 30, 40])
    with pytest.raises(PromptError, match="this model needs a box"):
        validate_prompt(Prompt(points_xy=[[5, 5]], point_labels=[1]), (50, 100), False)


# --------------------------------------------------------------------------- properties


@st.composite
def lung_label_images(draw):
    rows = draw(st.integers(3, 40))
    cols = draw(st.integers(3, 40))
    mask = draw(arrays(bool, (rows, cols), elements=st.booleans()))
    if not mask.any():
        r = draw(st.integers(0, rows - 1))
        c = draw(st.integers(0, cols - 1))
        mask[r, c] = True
    return split_lungs(mask)


@given(lung_label_images())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_paper_point_is_inside_its_mask(labels):
    for value in np.unique(labels)[1:]:
        mask = labels == value
        row, col = paper_positive_point_rc(mask)
        assert mask[row, col]
        row, col = interior_point_rc(mask)
        assert mask[row, col]


@given(lung_label_images(), st.sampled_from(sorted(STRATEGIES)), st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_property_strategy_prompts_lie_in_their_masks(labels, name, accepts_points):
    rows, cols = labels.shape
    union = labels > 0
    prompts = prompts_from_labels(labels, name, accepts_points)
    assert prompts
    for p in prompts:
        target = union if p.target_label is None else labels == p.target_label
        # the box contains its mask
        x0, y0, x1, y1 = p.box_xyxy
        rr, cc = np.nonzero(target)
        assert x0 <= cc.min() and cc.max() <= x1
        assert y0 <= rr.min() and rr.max() <= y1
        assert 0 <= x0 <= x1 <= cols - 1 and 0 <= y0 <= y1 <= rows - 1
        if not accepts_points:
            assert not p.has_points
        for xy, lab in zip(p.points_xy, p.point_labels, strict=True):
            x, y = float(xy[0]), float(xy[1])
            assert -0.5 <= x <= cols - 0.5 and -0.5 <= y <= rows - 0.5
            if lab == POSITIVE:
                assert at(target, xy)
            elif name == "multi-negative":
                assert not at(union, xy)
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            # the strategies' own prompts pass validation unchanged
            v = validate_prompt(p, (rows, cols), accepts_points)
            np.testing.assert_array_equal(v.points_xy, p.points_xy)
            np.testing.assert_array_equal(v.box_xyxy, p.box_xyxy)
