"""Keyboard shortcuts: pressed as key events on the canvas, as a user does."""

from __future__ import annotations

import numpy as np
import pytest
from napari_fixtures import MID, box_vertices, go_to_slice, image_layer, wait_idle

from napari_samlung._napari.shortcuts import SHORTCUTS, next_with_lung, shortcuts_help

pytestmark = pytest.mark.gui


def press(viewer, qtbot, key: str) -> None:
    """Press ``key`` (napari spelling, e.g. ``Shift-Right``) on the viewer's canvas."""
    from qtpy.QtCore import Qt

    *mods, name = key.split("-")
    modifiers = Qt.KeyboardModifier.NoModifier
    for mod in mods:
        modifiers |= {"Shift": Qt.KeyboardModifier.ShiftModifier}[mod]
    code = {"Right": Qt.Key.Key_Right, "Left": Qt.Key.Key_Left}.get(name)
    if code is None:
        code = getattr(Qt.Key, f"Key_{name.upper()}")
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, code, modifiers)


def current(widget) -> int:
    return widget.image_layers.current_slice()


def test_every_shortcut_is_in_the_tooltip():
    text = shortcuts_help()
    for key, what, _ in SHORTCUTS:
        assert f"{key}: {what}" in text
    assert "doubtful" in text


def test_next_with_lung():
    has = np.array([0, 1, 1, 0, 0, 1, 0], bool)
    assert next_with_lung(has, 2, +1) == 5
    assert next_with_lung(has, 2, -1) == 1
    assert next_with_lung(has, 5, +1) is None
    assert next_with_lung(has, 1, -1) is None


def test_keys_segment_clear_and_move_through_the_lung(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    layer = image_layer(viewer)
    go_to_slice(viewer, layer, MID)
    labels = widget.image_layers.output().layer
    # Shift-S with no prompts: the slice is segmented from the ground truth
    press(viewer, qtbot, "Shift-S")
    wait_idle(qtbot, widget)
    assert np.asarray(labels.data)[MID].any()
    assert MID in widget.session.scores
    # Shift-C clears it
    press(viewer, qtbot, "Shift-C")
    wait_idle(qtbot, widget)
    assert not np.asarray(labels.data)[MID].any()
    # Shift-Right / Shift-Left go to the next / previous slice with lung (here: the truth's)
    truth = np.asarray(widget.ground_truth.value.data)
    lung = np.flatnonzero(truth.reshape(len(truth), -1).any(axis=1))
    go_to_slice(viewer, layer, 0)
    press(viewer, qtbot, "Shift-Right")
    assert current(widget) == lung[lung > 0][0]
    go_to_slice(viewer, layer, len(truth) - 1)
    press(viewer, qtbot, "Shift-Left")
    assert current(widget) == lung[lung < len(truth) - 1][-1]


def test_shift_s_redoes_a_painted_slice_from_its_box_and_shift_g_propagates(
    phantom_widget, qtbot
):
    viewer, widget, _ = phantom_widget
    go_to_slice(viewer, image_layer(viewer), MID)
    truth = np.asarray(widget.ground_truth.value.data)
    rows, cols = np.nonzero(truth[MID])
    shapes = widget.image_layers.shapes_layer
    shapes.add_rectangles(box_vertices(MID, rows.min(), cols.min(), rows.max(), cols.max()))
    wait_idle(qtbot, widget)
    labels = widget.image_layers.output().layer
    first = np.asarray(labels.data)[MID].copy()
    assert first.any()
    labels.data[MID] = 0  # the user erases the slice
    labels.refresh()
    wait_idle(qtbot, widget)
    press(viewer, qtbot, "Shift-S")
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(np.asarray(labels.data)[MID], first)
    press(viewer, qtbot, "Shift-G")
    wait_idle(qtbot, widget)
    written = np.flatnonzero(np.asarray(labels.data).reshape(len(truth), -1).any(axis=1))
    assert len(written) > 1


def test_shift_b_switches_between_the_box_and_point_tools(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    points, shapes = widget.image_layers.points_layer, widget.image_layers.shapes_layer
    assert viewer.layers.selection.active is shapes  # LiteMedSAM takes boxes
    press(viewer, qtbot, "Shift-B")
    assert viewer.layers.selection.active is points and points.mode == "add"
    press(viewer, qtbot, "Shift-B")
    assert viewer.layers.selection.active is shapes and shapes.mode == "add_rectangle"


def test_closing_the_widget_gives_the_keys_back(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    widget.shutdown()
    assert "Shift-G" not in {str(k) for k in viewer.keymap}
