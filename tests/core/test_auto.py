"""Automatic CT segmentation, guarded propagation and one lung per prompt, on real CT with
the bundled LiteMedSAM (core.auto, core.propagation, core.masks)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA_DIR, requires_data
from napari_samlung.core.auto import iter_segment_auto
from napari_samlung.core.engine import Segmenter
from napari_samlung.core.lungs_hu import find_lung_candidates, slice_midline_col
from napari_samlung.core.metrics import dice
from napari_samlung.core.prompts import ONE_LUNG, Prompt, box_xyxy_from_mask, per_lung_prompts
from napari_samlung.core.propagation import Seed, propagate
from napari_samlung.core.windowing import Window, to_rgb

VOLUMES = DATA_DIR / "ct_volumes_128"


@pytest.fixture(scope="module")
def lite() -> Segmenter:
    return Segmenter.from_registry("lite_medsam", device="cpu")


def _case(name: str):
    from napari_samlung.io.images import read_image, read_mask

    image = read_image(VOLUMES / f"{name}-128x128x64.nii.gz")
    truth = read_mask(VOLUMES / f"{name}-128x128x64-msk.nii.gz", like=image)
    return image, truth


def _window(seg: Segmenter) -> Window:
    return Window.preset(seg.spec.default_window)


@requires_data("ct_volumes_128")
def test_automatic_run_floor_and_no_leak(lite):
    """id002 (the hardest for the threshold: a big stomach bubble under the left lung)."""
    image, truth = _case("id002")
    labels = np.zeros(truth.shape, np.uint8)
    for res in iter_segment_auto(
        lite, image.data, window=_window(lite), spacing_zyx_mm=image.spacing_zyx_mm
    ):
        labels[res.slice_index] = res.labels
    with_lung = [z for z in range(len(truth)) if truth[z].any()]
    assert np.mean([dice(labels[z] > 0, truth[z] > 0) for z in with_lung]) >= 0.95
    assert sum(1 for z in range(len(truth)) if labels[z].any() and not truth[z].any()) <= 1
    # both lungs, each named by its side
    for lung in (1, 2):
        assert dice(labels == lung, truth == lung) >= 0.85


@requires_data("ct_volumes_128")
def test_guarded_propagation_stays_in_the_lung(lite):
    """The user's report: boxes on slice 32 of id003 ran into the liver and wrote all 64
    slices.  With the CT's air as a guard it stops where the lung stops."""
    image, truth = _case("id003")
    candidates = find_lung_candidates(image.data, image.spacing_zyx_mm).lung_labels
    seeds = [Seed(32, per_lung_prompts(truth[32], accepts_points=False))]
    result = propagate(
        lite,
        image.data,
        seeds,
        window=_window(lite),
        candidates=candidates,
        spacing_zyx_mm=image.spacing_zyx_mm,
    )
    labels = result.labels
    with_lung = [z for z in range(len(truth)) if truth[z].any()]
    leaks = [z for z in range(len(truth)) if labels[z].any() and not truth[z].any()]
    assert len(leaks) <= 1, leaks
    assert np.mean([dice(labels[z] > 0, truth[z] > 0) for z in with_lung]) >= 0.93
    assert dice(labels[12] > 0, truth[12] > 0) >= 0.8  # the lung base, where it filled the liver


@requires_data("ct_volumes_128")
@pytest.mark.parametrize("lung", [1, 2])
def test_a_box_around_one_lung_gives_one_label(lite, lung):
    """id001 slice 22: a box around one lung came back split into two labels."""
    image, truth = _case("id001")
    z = 22
    rgb = to_rgb(image.data[z], _window(lite))
    box = box_xyxy_from_mask(truth[z] == lung)
    midline = slice_midline_col(image.data[z])
    labels, _ = lite.segment_slice(
        rgb, [Prompt(box_xyxy=box, target_label=ONE_LUNG)], midline_col=midline
    )
    assert set(np.unique(labels)) == {0, lung}
    assert dice(labels == lung, truth[z] == lung) >= 0.9
