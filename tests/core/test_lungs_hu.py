"""Candidate lungs from the CT's own air (core.lungs_hu): synthetic cases and real floors."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA_DIR, requires_data
from napari_samlung.core.labels import LEFT_LUNG, RIGHT_LUNG, side_of_midline
from napari_samlung.core.lungs_hu import (
    body_midline_col,
    find_lung_candidates,
)
from napari_samlung.core.metrics import dice


def _chest(n_slices: int = 12, touching: bool = False) -> np.ndarray:
    """A synthetic chest in HU: outside air, a body, two lungs, a trachea, a gas bubble.

    Axis 0 runs foot (0) to head; the lungs fill slices 2..9, the trachea (a
    small pure-air tube on the midline) slices 6..11, and a stomach bubble of
    pure air lies below the left lung on slices 0..3.
    """
    vol = np.full((n_slices, 96, 96), -1000.0, np.float32)
    rows, cols = np.ogrid[:96, :96]
    body = ((rows - 48) / 40.0) ** 2 + ((cols - 48) / 44.0) ** 2 <= 1
    rng = np.random.default_rng(0)
    for z in range(n_slices):
        vol[z][body] = 40.0
        if 2 <= z <= 9:
            gap = 0 if touching else 4
            for centre, label_cols in ((30, cols < 48 - gap // 2), (66, cols >= 48 + gap // 2)):
                lung = (((rows - 48) / 26.0) ** 2 + ((cols - centre) / 14.0) ** 2 <= 1) & label_cols
                vol[z][lung] = -850.0 + rng.normal(0, 40, size=int(lung.sum()))
        if z >= 6:
            vol[z][((rows - 28) ** 2 + (cols - 48) ** 2) <= 4] = -1000.0
        if z <= 3:
            vol[z][((rows - 60) ** 2 + (cols - 66) ** 2) <= 36] = -1000.0
    return vol


def test_two_lungs_named_by_side_without_trachea_or_gas():
    vol = _chest()
    cand = find_lung_candidates(vol, (5.0, 3.0, 3.0))
    labels = cand.lung_labels
    assert labels.shape == vol.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, LEFT_LUNG, RIGHT_LUNG}
    # radiological display: the patient's left lung (1) is right of the midline
    left_cols = np.argwhere(labels == LEFT_LUNG)[:, 2]
    right_cols = np.argwhere(labels == RIGHT_LUNG)[:, 2]
    assert left_cols.min() > 48 > right_cols.max()
    # trachea slices above the lungs and the stomach slices below get nothing
    assert list(cand.slices_with_lung()) == list(range(2, 10))
    assert not labels[:, 26:31, 46:51].any()  # the trachea itself, also beside the lungs


def test_lungs_that_touch_are_split_at_the_junction():
    cand = find_lung_candidates(_chest(touching=True), (5.0, 3.0, 3.0))
    labels = cand.lung_labels
    for z in range(2, 10):
        assert (labels[z] == LEFT_LUNG).sum() > 100 and (labels[z] == RIGHT_LUNG).sum() > 100
    assert (np.argwhere(labels == LEFT_LUNG)[:, 2] >= 44).all()
    assert (np.argwhere(labels == RIGHT_LUNG)[:, 2] <= 52).all()


def test_windowed_8bit_input_takes_its_threshold_from_the_data():
    vol = _chest()
    windowed = np.clip((vol + 1000.0) / 1500.0 * 255.0, 0, 255).astype(np.uint8)
    hu = find_lung_candidates(vol, (5.0, 3.0, 3.0)).lung_labels
    grey = find_lung_candidates(windowed, (5.0, 3.0, 3.0))
    assert 0 < grey.threshold < 255
    assert dice(grey.lung_labels > 0, hu > 0) > 0.97


def test_a_single_slice_works_in_2d():
    slice_2d = _chest()[5]
    cand = find_lung_candidates(slice_2d, (3.0, 3.0))
    assert cand.lung_labels.shape == slice_2d.shape
    assert set(np.unique(cand.lung_labels)) == {0, 1, 2}


def test_xrays_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="CT only.*X-ray"):
        find_lung_candidates(np.zeros((64, 64), np.uint8), modality="xray")


def test_bad_spacing_is_refused():
    with pytest.raises(ValueError, match="spacing_zyx_mm"):
        find_lung_candidates(_chest(), (5.0, 0.0, 3.0))


def test_side_of_midline():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 7:9] = True
    assert side_of_midline(mask, 4.5) == LEFT_LUNG
    assert side_of_midline(mask, 8.5) == RIGHT_LUNG
    body = np.zeros((10, 10), bool)
    body[:, 2:7] = True
    assert body_midline_col(body) == pytest.approx(4.0)


# --------------------------------------------------------------------------- real volumes


@requires_data("ct_volumes_128")
@pytest.mark.parametrize("case", ["id001", "id002", "id003", "id004"])
def test_real_volume_floor_and_no_lung_free_slice(case):
    """Candidates alone: Dice >= 0.95 on the slices with lung, <= 1 slice written outside it."""
    from napari_samlung.io.images import read_image, read_mask

    folder = DATA_DIR / "ct_volumes_128"
    image = read_image(folder / f"{case}-128x128x64.nii.gz")
    truth = read_mask(folder / f"{case}-128x128x64-msk.nii.gz", like=image) > 0
    labels = find_lung_candidates(image.data, image.spacing_zyx_mm).lung_labels
    with_lung = [z for z in range(len(truth)) if truth[z].any()]
    mean_dice = np.mean([dice(labels[z] > 0, truth[z]) for z in with_lung])
    false_slices = sum(1 for z in range(len(truth)) if labels[z].any() and not truth[z].any())
    assert mean_dice >= 0.95
    assert false_slices <= 1


@requires_data("nifti_examples")
def test_real_small_field_of_view_with_bowel_gas():
    from napari_samlung.io.images import read_image

    folder = DATA_DIR / "nifti_examples"
    image = read_image(folder / "example_ct_sm.nii.gz")
    truth = np.isin(read_image(folder / "example_seg.nii.gz").data, [10, 11, 12, 13, 14])
    labels = find_lung_candidates(image.data, image.spacing_zyx_mm).lung_labels
    with_lung = [z for z in range(len(truth)) if truth[z].any()]
    assert np.mean([dice(labels[z] > 0, truth[z]) for z in with_lung]) >= 0.85
