"""The readout and the quality strip follow every change of the output labels
(undo, redo, painting, erasing, the data setter); napari's private undo API is
used in one place (``labels_history``) and checked here."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from napari_fixtures import MID, go_to_slice, image_layer, wait_idle

from napari_samlung._napari.labels_history import (
    PRIVATE_HISTORY_API,
    save_undo_group,
    save_undo_step,
)
from napari_samlung.core.metrics import score_slice

pytestmark = pytest.mark.gui


def test_napari_still_has_the_private_undo_api_we_use():
    """Fails when napari renames or removes Labels' private undo history (labels_history.py)."""
    from napari.layers import Labels
    from napari.utils._proxies import PublicOnlyProxy

    layer = Labels(np.zeros((2, 4, 4), dtype=np.uint8))
    missing = [name for name in PRIVATE_HISTORY_API if not hasattr(layer, name)]
    assert not missing, f"napari no longer has Labels.{missing}: update labels_history.py"
    proxy = PublicOnlyProxy(layer)  # what plugin widgets get: no private-access warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        key = (1, slice(0, 2), slice(0, 2))
        layer.data[key] = 3
        save_undo_step(proxy, (key, np.zeros((2, 2), np.uint8), np.full((2, 2), 3, np.uint8)))
        key2 = (0, slice(1, 3), slice(1, 3))
        layer.data[key2] = 5
        save_undo_group(proxy, [(key2, np.zeros((2, 2), np.uint8), np.full((2, 2), 5, np.uint8))])
    layer.undo()
    assert not layer.data[0].any() and layer.data[1].sum() == 12
    layer.undo()
    assert not layer.data.any()
    layer.redo()
    assert layer.data[1].sum() == 12


def _dice_line(widget, z: int) -> str:
    truth = np.asarray(widget.ground_truth.value.data)[z]
    pred = np.asarray(widget.image_layers.writer.layer.data)[z]
    score = score_slice(pred, truth, case="", slice_index=z)
    return f"slice {z}: Dice {100 * score.dice:.2f} %"


def test_readout_follows_painting_erasing_undo_and_redo(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    go_to_slice(viewer, image_layer(viewer), MID)
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    layer = widget.image_layers.writer.layer
    after_run = np.array(layer.data, copy=True)
    assert _dice_line(widget, MID) in widget.readout.value
    strip_before = widget.quality_view.box.grab().toImage()

    # erase half of the slice through the layer's data (as a script or plugin would)
    data = np.array(layer.data, copy=True)
    data[MID, :, : data.shape[2] // 2] = 0
    layer.data = data
    wait_idle(qtbot, widget)
    assert _dice_line(widget, MID) in widget.readout.value
    erased = widget.readout.value

    # paint with the brush API: one undo step, a paint event
    layer.selected_label = 1
    layer.brush_size = 9
    layer.paint((MID, 5, 5), 1)
    wait_idle(qtbot, widget)
    assert _dice_line(widget, MID) in widget.readout.value

    layer.undo()  # the brush stroke: no paint event, only a refresh
    wait_idle(qtbot, widget)
    assert _dice_line(widget, MID) in widget.readout.value
    assert widget.readout.value == erased

    layer.undo()  # the whole volume run: every slice empty again
    wait_idle(qtbot, widget)
    assert not layer.data.any()
    assert _dice_line(widget, MID) in widget.readout.value
    assert "Dice 0.00 %" in widget.readout.value

    layer.redo()  # the run is back: its Dice and its summary table again
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(layer.data, after_run)
    assert _dice_line(widget, MID) in widget.readout.value
    assert widget.session.summary().format_table() in widget.readout.value
    assert widget.quality_view.box.grab().toImage() == strip_before
