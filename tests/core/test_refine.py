"""The combination rule (core.refine): what the model adds is kept only when the lung's air
encloses it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samlung.core.refine import assign_air_to_lungs, refine_with_candidates


def _disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


SHAPE = (80, 80)


def test_consolidation_enclosed_by_air_is_kept():
    lung = _disk(SHAPE, (40, 40), 25)
    consolidation = _disk(SHAPE, (40, 40), 8)
    candidate = (lung & ~consolidation).astype(np.uint8)  # air around a dense blob
    model = lung.astype(np.uint8)
    out = refine_with_candidates(model, candidate, (1.0, 1.0))
    assert out[consolidation].all() and (out == 1).sum() == lung.sum()


def test_a_leak_outside_the_air_is_dropped():
    lung = _disk(SHAPE, (30, 40), 15)
    liver = _disk(SHAPE, (60, 40), 14) & ~lung  # touches the lung on one side only
    candidate = lung.astype(np.uint8) * 2
    model = (lung | liver).astype(np.uint8) * 2
    out = refine_with_candidates(model, candidate, (1.0, 1.0))
    assert not out[liver].any()
    assert (out == 2).sum() == lung.sum()


def test_a_thin_outline_difference_is_not_added():
    lung = _disk(SHAPE, (40, 40), 20)
    model = _disk(SHAPE, (40, 40), 21).astype(np.uint8)  # one pixel wider all round
    out = refine_with_candidates(model, lung.astype(np.uint8), (1.0, 1.0), rim_mm=3.0)
    assert (out > 0).sum() == lung.sum()


def test_a_lung_without_air_keeps_the_model():
    model = _disk(SHAPE, (40, 40), 20).astype(np.uint8)
    candidate = np.zeros(SHAPE, np.uint8)
    candidate[40, 40] = 1  # almost nothing aerated: a fully consolidated lung
    out = refine_with_candidates(model, candidate, (1.0, 1.0))
    np.testing.assert_array_equal(out, model)


def test_air_is_named_after_the_lung_that_overlaps_it():
    air = np.zeros((10, 10), bool)
    air[1:4, 1:4] = True  # overlaps model lung 2
    air[6:9, 6:9] = True  # overlaps nothing
    candidates = air.astype(np.uint8)  # the side rule called both "1"
    model = np.zeros((10, 10), np.uint8)
    model[2, 2] = 2
    owner = assign_air_to_lungs(air, candidates, model)
    assert (owner[1:4, 1:4] == 2).all() and (owner[6:9, 6:9] == 1).all()
    dropped = assign_air_to_lungs(air, candidates, model, keep_unmatched=False)
    assert not dropped[6:9, 6:9].any()


def test_air_of_two_touching_lungs_is_split_between_the_model_lungs():
    """At the anterior junction the two lungs' air is one piece; it must not all go to the
    lung that covers more of it (id003 slices 43-49 lost their right lung that way)."""
    air = np.zeros((20, 30), bool)
    air[4:16, 3:27] = True  # one piece spanning both lungs
    model = np.zeros((20, 30), np.uint8)
    model[4:16, 3:16] = 1  # the larger lung
    model[5:15, 17:26] = 2
    owner = assign_air_to_lungs(air, np.zeros_like(model), model)
    assert set(np.unique(owner[air])) == {1, 2}
    assert (owner[4:16, 3:15] == 1).all() and (owner[5:15, 18:26] == 2).all()
    stray = model.copy()
    stray[:] = 0
    stray[4:16, 3:27] = 1
    stray[10, 20] = 2  # one stray pixel does not split a lung
    assert set(np.unique(assign_air_to_lungs(air, model, stray)[air])) == {1}


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ"):
        refine_with_candidates(np.zeros((4, 4)), np.zeros((5, 5)))
