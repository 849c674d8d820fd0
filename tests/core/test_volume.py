"""Whole-volume runs from ground-truth prompts: progress, cancellation, skipped slices."""

from __future__ import annotations

import numpy as np
import pytest

from napari_samlung.core.engine import Segmenter
from napari_samlung.core.models import get_spec
from napari_samlung.core.volume import as_volume, iter_segment_from_labels, segment_from_labels
from napari_samlung.core.windowing import Window
from napari_samlung.errors import ShapeMismatchError

LUNG_SLICES = (1, 3)


@pytest.fixture(scope="module")
def tiny() -> Segmenter:
    """A small random SAM (the registry's tiny_random spec at 256 px): plumbing only."""
    spec = get_spec("micro_random")
    return Segmenter(spec.builder(None), spec, "cpu", precision="fp32")


@pytest.fixture(scope="module")
def volume():
    """A 5-slice HU volume (32 x 48) with lungs on slices 1 and 3 only."""
    rng = np.random.default_rng(0)
    image = rng.normal(-300, 200, (5, 32, 48)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    for z in LUNG_SLICES:
        labels[z, 6:26, 4:20] = 2
        labels[z, 8:28, 28:44] = 1
        image[z][labels[z] > 0] = -850.0
    return image, labels


def fresh(seg: Segmenter) -> Segmenter:
    return Segmenter(seg.model, seg.spec, seg.device, precision=seg.precision)


def test_only_slices_with_lung_are_segmented(tiny, volume):
    image, truth = volume
    seg = fresh(tiny)
    calls = []
    result = segment_from_labels(
        seg,
        image,
        truth,
        window=Window.preset("paper"),
        strategy="per-lung",
        batch_size=2,
        case="vol",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert seg.encoder_calls == len(LUNG_SLICES)
    assert result.skipped_empty == 3
    assert not result.cancelled
    assert [s.slice_index for s in result.scores] == list(LUNG_SLICES)
    assert all(s.case == "vol" for s in result.scores)
    assert calls == [(1, 2), (2, 2)]
    assert result.labels.shape == image.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2}
    for z in (0, 2, 4):
        assert not result.labels[z].any(), f"slice {z} has no lung and must stay empty"
    summary = result.summary()
    assert summary.slices == 2 and summary.skipped_empty == 3 and summary.cases == 1
    assert 0.0 <= summary.dice.mean <= 1.0
    assert result.seconds > 0


def test_cancel_keeps_completed_slices_and_writes_no_partial_slice(tiny, volume):
    image, truth = volume
    seg = fresh(tiny)
    out = np.full(image.shape, 7, np.uint8)  # sentinel: "never written"
    done_calls = []

    def progress(done, total):
        done_calls.append(done)

    result = segment_from_labels(
        seg,
        image,
        truth,
        window=Window.preset("paper"),
        batch_size=1,
        progress=progress,
        should_cancel=lambda: len(done_calls) >= 1,
        out=out,
    )
    assert result.cancelled
    assert done_calls == [1]
    assert [s.slice_index for s in result.scores] == [1]
    assert result.labels is out
    assert set(np.unique(out[1])) <= {0, 1, 2}, "the completed slice is fully written"
    for z in (0, 2, 3, 4):
        assert (out[z] == 7).all(), f"slice {z} must be untouched after cancelling"
    assert seg.encoder_calls == 1, "no slice is embedded after the cancel"


def test_cancel_after_the_last_slice_is_not_a_cancellation(tiny, volume):
    image, truth = volume
    result = segment_from_labels(
        tiny,
        image,
        truth,
        window=Window.preset("paper"),
        slices=[2, 3],
        should_cancel=lambda: True,
    )
    assert not result.cancelled
    assert [s.slice_index for s in result.scores] == [3]
    assert result.skipped_empty == 1


def test_iter_yields_slices_in_order_and_matches_the_full_run(tiny, volume):
    image, truth = volume
    seg = tiny  # shared cache: no counting here
    window = Window.preset("paper")
    results = list(iter_segment_from_labels(seg, image, truth, window=window, batch_size=4))
    assert [r.slice_index for r in results] == list(LUNG_SLICES)
    full = segment_from_labels(seg, image, truth, window=window)
    for r in results:
        np.testing.assert_array_equal(full.labels[r.slice_index], r.labels)
        assert r.metrics is not None and r.seconds > 0


def test_a_2d_image_is_a_one_slice_volume(tiny, volume):
    image, truth = volume
    result = segment_from_labels(tiny, image[1], truth[1], window=Window.preset("paper"))
    assert result.labels.shape == (1, 32, 48)
    assert len(result.scores) == 1 and result.skipped_empty == 0


def test_shape_mismatch(tiny, volume):
    image, truth = volume
    with pytest.raises(ShapeMismatchError, match=r"image shape \(5, 32, 48\) and mask shape"):
        segment_from_labels(tiny, image, truth[:, :, :40], window=Window.preset("paper"))
    with pytest.raises(ShapeMismatchError, match="expected a 2D image or a 3D volume"):
        as_volume(np.zeros((2, 2, 2, 2)))
