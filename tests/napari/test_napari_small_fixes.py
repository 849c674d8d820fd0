"""Issue 14 item 8: a ground truth opened after docking, the quoted checkbox text, the
window controls on X-rays, and a multi-label ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import (
    MID,
    PHANTOM_SHAPE,
    capture_notifications,
    fast_debounce,
    messages,
    tiny_factory,
    wait_idle,
)

from napari_samlung.core.config import RunConfig
from napari_samlung.io.phantom import make_phantom

pytestmark = pytest.mark.gui


def test_ground_truth_opened_after_docking_is_picked_up(make_napari_viewer, qtbot):
    from napari_samlung._napari.launch import build_viewer
    from napari_samlung._napari.reader import labels_tuple

    image, labels = make_phantom(PHANTOM_SHAPE)
    viewer, widget = build_viewer(
        image, None, RunConfig(), viewer=make_napari_viewer(), segmenter_factory=tiny_factory
    )
    fast_debounce(widget)
    wait_idle(qtbot, widget)
    assert widget.ground_truth.value is None
    data, kwargs, _ = labels_tuple(labels, image, "opened later")  # as File > Open reads it
    layer = viewer.add_labels(data, **kwargs)
    wait_idle(qtbot, widget)
    assert widget.ground_truth.value is layer
    assert "choose a ground-truth" not in widget.readout.value
    widget.shutdown()


def test_kept_slices_message_quotes_the_checkbox(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    layer = widget.image_layers.writer.layer
    layer.selected_label = 1
    layer.paint((MID, 10, 10), 1)  # the user edits a slice
    with capture_notifications() as shown:
        widget.segment_volume_button.clicked()
        wait_idle(qtbot, widget)
    text = widget.overwrite_edited.text
    assert text.startswith("overwrite slices I edited")
    assert "tick 'overwrite slices I edited'" in messages(shown)


def test_xray_window_controls_show_no_ct_window(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    ct = widget.image.value
    assert widget.window_level.native.text() not in ("", "–")
    rng = np.random.default_rng(0)
    xray = viewer.add_image(rng.integers(0, 255, (64, 64), dtype=np.uint8), name="xray")
    widget.image.value = xray
    wait_idle(qtbot, widget)
    for spin in (widget.window_level, widget.window_width):
        assert not spin.enabled
        assert spin.native.text() == "–", spin.native.text()
    widget.image.value = ct  # back to the CT: its window shows again
    wait_idle(qtbot, widget)
    assert widget.window_level.enabled
    assert widget.window_level.native.text() != "–"
    assert widget.window_level.value == widget.session.window.level


def test_multi_label_ground_truth_gets_one_error_not_a_contradiction(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    truth = np.array(widget.ground_truth.value.data, copy=True)
    truth[MID, :4, :4] = 7  # a third label
    layer = viewer.add_labels(truth, name="many labels")
    widget.ground_truth.value = layer
    with capture_notifications() as shown:
        widget.segment_volume_button.clicked()
        widget.segment_slice_button.clicked()
        wait_idle(qtbot, widget)
    assert messages(shown, "error"), shown
    assert "choose a ground-truth Labels layer first" not in messages(shown)


def test_docking_says_when_it_changes_the_display_window(make_napari_viewer, qtbot):
    """A CT opened without our reader (contrast 'auto') gets the model's window: one notice."""
    from napari_samlung._napari.widget import SamLungWidget

    viewer = make_napari_viewer()
    image, _ = make_phantom(PHANTOM_SHAPE)
    layer = viewer.add_image(image.data, name="ct", contrast_limits=(-1000.0, 1000.0))
    with capture_notifications() as shown:
        widget = SamLungWidget(viewer, segmenter_factory=tiny_factory)
        wait_idle(qtbot, widget)
    text = messages(shown)
    assert "ct: display set to the" in text and "was -1000..1000" in text
    assert tuple(layer.contrast_limits) == widget.session.effective_window().limits_hu
    widget.shutdown()
