"""The automatic run, guarded propagation, one lung per box and the quality strip.

The machinery runs on the phantom with the tiny random model; the real checks
open ct_volumes_128 through the plugin's reader and use the bundled LiteMedSAM.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding
from napari_fixtures import (
    DATA_DIR,
    LUNG_SLICES,
    PERMISSIVE,
    box_vertices,
    capture_notifications,
    go_to_slice,
    image_layer,
    label_slices,
    messages,
    rerun_and_cancel,
    tiny_factory,
    undo_steps,
    wait_idle,
)
from qtpy.QtCore import QPoint, Qt

from napari_samlung._napari.quality import DOUBTFUL_BELOW
from napari_samlung._napari.quality_strip import NEXT_DOUBTFUL_KEY, PREVIOUS_DOUBTFUL_KEY
from napari_samlung._napari.widget import SamLungWidget
from napari_samlung.core.metrics import dice
from napari_samlung.errors import SamlungError
from napari_samlung.io import read_image, read_mask

pytestmark = pytest.mark.gui
CT_DIR = DATA_DIR / "ct_volumes_128"
REAL_MODEL_WAIT_MS = 600_000
needs_ct = pytest.mark.skipif(not CT_DIR.is_dir(), reason=f"no ct_volumes_128 in {DATA_DIR}")


def _press(viewer, key: str) -> None:
    """Press ``key`` in the viewer (what its keymap does for the key)."""
    viewer.keymap[coerce_keybinding(key)](viewer)


def _current_slice(widget) -> int:
    return widget.image_layers.current_slice()


# --------------------------------------------------------------------------- phantom


def test_auto_run_writes_candidate_slices_in_one_undo_step(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    output = widget.output.value
    output.brush_size = 5
    output.paint((3, 30, 30), 2)  # the user's own edit stays
    painted = output.data[3].copy()
    before = output.data.copy()
    widget.auto_button.clicked()
    assert widget.cancel_button.enabled and not widget.auto_button.enabled
    wait_idle(qtbot, widget)
    assert widget.auto_button.enabled
    written = label_slices(output.data)
    assert set(written) <= set(LUNG_SLICES) and len(written) >= len(LUNG_SLICES) - 1
    np.testing.assert_array_equal(output.data[3], painted)
    assert "automatic:" in widget.status.value and "kept your edits" in widget.status.value
    # the ground truth scores the run; every written slice has a quality
    assert sorted(widget.session.scores) == [z for z in written if z != 3]
    assert all(widget.quality_view.strip.values[z] is not None for z in written if z != 3)
    assert undo_steps(output) == 2  # the user's paint, then the whole run
    output.undo()
    np.testing.assert_array_equal(output.data, before)


def test_cancelled_auto_run_leaves_whole_slices(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    output = widget.output.value
    full, before = rerun_and_cancel(widget, qtbot, widget.auto_button)
    changed = [z for z in range(len(full)) if not np.array_equal(output.data[z], before[z])]
    assert 2 <= len(changed) <= 3 < len(label_slices(full))
    for z in range(len(full)):
        assert np.array_equal(output.data[z], full[z]) or np.array_equal(output.data[z], before[z])
    assert "cancelled" in widget.status.value


def test_guarded_propagation_stops_where_the_air_ends(phantom_widget, qtbot):
    """Even with stop rules that never fire, the CT's air ends the walk at the lung."""
    viewer, widget, _ = phantom_widget
    widget.runs.propagation_settings = PERMISSIVE
    widget.ground_truth.value = None
    go_to_slice(viewer, image_layer(viewer), 4)
    widget.image_layers.shapes_layer.add_rectangles(
        [box_vertices(4, 12, 6, 52, 30), box_vertices(4, 12, 34, 52, 58)]
    )
    wait_idle(qtbot, widget)
    widget.propagate_button.clicked()
    wait_idle(qtbot, widget)
    assert set(label_slices(widget.output.value.data)) <= set(LUNG_SLICES)
    assert "no aerated lung" in widget.status.value


def test_doubtful_slice_keys_and_strip_clicks_move_the_viewer(phantom_widget, qtbot, monkeypatch):
    viewer, widget, _ = phantom_widget
    # the random model's own masks (low Dice): the CT's air would otherwise correct them
    monkeypatch.setattr(type(widget.session), "is_hu_volume", property(lambda self: False))
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    strip = widget.quality_view.strip
    values = strip.values
    assert [z for z, v in enumerate(values) if v is not None] == LUNG_SLICES
    doubtful = [z for z, v in enumerate(values) if v is not None and v < DOUBTFUL_BELOW]
    assert len(doubtful) >= 2, values
    assert NEXT_DOUBTFUL_KEY in widget.tooltip and PREVIOUS_DOUBTFUL_KEY in widget.tooltip
    go_to_slice(viewer, image_layer(viewer), 0)
    _press(viewer, NEXT_DOUBTFUL_KEY)
    assert _current_slice(widget) == doubtful[0]
    _press(viewer, NEXT_DOUBTFUL_KEY)
    assert _current_slice(widget) == doubtful[1]
    _press(viewer, PREVIOUS_DOUBTFUL_KEY)
    assert _current_slice(widget) == doubtful[0]
    assert "doubtful" in widget.quality_view.caption.text()
    # a click on the strip goes to that slice
    target = LUNG_SLICES[-1]
    qtbot.mouseClick(strip, Qt.LeftButton, pos=QPoint(int(strip.x_of(target)), 5))
    assert _current_slice(widget) == target
    widget.shutdown()  # the keys go back to napari
    assert coerce_keybinding(NEXT_DOUBTFUL_KEY) not in viewer.keymap


def test_auto_run_is_for_ct_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    xray = np.zeros((64, 64), np.uint8)
    xray[8:56, 8:28] = 40
    viewer.add_image(xray, name="chest x-ray")
    widget = SamLungWidget(viewer, segmenter_factory=tiny_factory)
    wait_idle(qtbot, widget)
    assert not widget.auto_button.enabled
    assert "CT only" in widget.auto_button.tooltip
    with capture_notifications() as shown:
        assert not widget.runs.segment_volume_automatically()
    assert "applies to CT only" in messages(shown, "warning")
    widget.shutdown()


def test_auto_run_failure_is_one_notification(phantom_widget, qtbot, monkeypatch):
    viewer, widget, _ = phantom_widget

    def fail():
        raise SamlungError("no air in this volume")

    monkeypatch.setattr(widget.session, "lung_candidates", fail)
    with capture_notifications() as shown:
        widget.auto_button.clicked()
        wait_idle(qtbot, widget)
    assert "no air in this volume" in messages(shown, "error")
    assert "stopped before it started" in widget.status.value
    assert widget.auto_button.enabled and not widget.output.value.data.any()


# --------------------------------------------------------------------------- real CT


def _open_ct(viewer, qtbot, case: str):
    """Open a ct_volumes_128 volume through the plugin's reader and dock the widget (the
    bundled LiteMedSAM); returns (widget, image layer, ground truth as an array)."""
    path = CT_DIR / f"{case}-128x128x64.nii.gz"
    [image] = viewer.open(path, plugin="napari-samlung")
    widget = SamLungWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM lung segmentation", area="right")
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    assert widget.model.value == "lite_medsam" and widget.auto_button.enabled
    like = read_image(path)
    truth = read_mask(CT_DIR / f"{case}-128x128x64-msk.nii.gz", like=like)
    return widget, image, truth


def _box_around(mask: np.ndarray, z: int, margin: int = 2) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return box_vertices(
        z, rows.min() - margin, cols.min() - margin, rows.max() + margin, cols.max() + margin
    )


@needs_ct
def test_a_box_around_one_lung_is_one_lung_named_by_its_side(make_napari_viewer, qtbot):
    """id001 slice 22: the lungs touch; a box around the left one gives label 1 only,
    right of the body's midline (radiological display)."""
    viewer = make_napari_viewer()
    widget, image, truth = _open_ct(viewer, qtbot, "id001")
    z = 22
    go_to_slice(viewer, image, z)
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    shapes = widget.image_layers.shapes_layer
    shapes.add_rectangles([_box_around(truth[z] == 1, z)])
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    output = widget.output.value.data
    assert label_slices(output) == [z]
    assert set(np.unique(output[z])) == {0, 1}
    assert dice(output[z] == 1, truth[z] == 1) > 0.9
    cols = np.nonzero(output[z])[1]
    assert cols.mean() > image.data.shape[-1] / 2  # the image's right
    # a second box, around the other lung, adds label 2 and keeps label 1
    shapes.add_rectangles([_box_around(truth[z] == 2, z)])
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    assert set(np.unique(output[z])) == {0, 1, 2}
    assert dice(output[z] == 2, truth[z] == 2) > 0.9
    widget.shutdown()


@pytest.mark.slow
@needs_ct
def test_auto_run_and_guarded_propagation_on_a_real_ct(make_napari_viewer, qtbot):
    """id003: lung on slices 4-60.  The automatic run covers them and nothing else, Ctrl-Z
    takes it back in one step; propagation from boxes on slice 32 stays in 4-60."""
    viewer = make_napari_viewer()
    widget, image, truth = _open_ct(viewer, qtbot, "id003")
    lung = set(label_slices(truth))
    assert (min(lung), max(lung)) == (4, 60)
    output = widget.output.value

    widget.auto_button.clicked()
    assert widget.cancel_button.enabled
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    written = set(label_slices(output.data))
    assert len(written - lung) <= 1 and len(lung - written) <= 1, sorted(written ^ lung)
    mean_dice = np.mean([dice(output.data[z] > 0, truth[z] > 0) for z in sorted(lung)])
    assert mean_dice >= 0.93, mean_dice
    assert "automatic:" in widget.status.value
    assert undo_steps(output) == 1
    output.undo()  # Ctrl-Z
    assert not output.data.any()

    go_to_slice(viewer, image, 32)
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    widget.image_layers.shapes_layer.add_rectangles(
        [_box_around(truth[32] == value, 32) for value in (1, 2)]
    )
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    assert label_slices(output.data) == [32]
    widget.propagate_button.clicked()
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    propagated = set(label_slices(output.data))
    assert len(propagated - lung) <= 1, sorted(propagated - lung)  # none outside 4-60
    assert len(propagated) >= 0.8 * len(lung), sorted(propagated)
    mean_dice = np.mean([dice(output.data[z] > 0, truth[z] > 0) for z in sorted(lung)])
    assert mean_dice >= 0.85, mean_dice
    widget.shutdown()
