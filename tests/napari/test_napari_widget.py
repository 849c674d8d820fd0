"""The dock widget on the phantom with a tiny random model (needs Qt and an X display)."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
from napari_fixtures import (
    LUNG_SLICES,
    MID,
    PHANTOM_SHAPE,
    PredictionCounter,
    box_only_factory,
    capture_notifications,
    click,
    go_to_slice,
    image_layer,
    label_slices,
    undo_steps,
    wait_idle,
)
from qtpy.QtWidgets import QFileDialog, QMessageBox

from napari_samlung._napari.launch import build_viewer
from napari_samlung._napari.prompt_layers import BOX_ONLY_MESSAGE
from napari_samlung._napari.widget import SamLungWidget
from napari_samlung.core.config import RunConfig
from napari_samlung.io.phantom import make_phantom

pytestmark = pytest.mark.gui


def test_widget_sets_up_layers_with_image_placement(phantom_widget):
    viewer, widget, _ = phantom_widget
    image = image_layer(viewer)
    wf = widget.image_layers
    assert widget.ground_truth.value.name == "phantom ground truth"
    output = wf.writer.layer
    assert output.name == "phantom lungs"
    for layer in (wf.points_layer, wf.shapes_layer, output):
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert wf.points_layer.ndim == 3
    assert "embedding" in widget.status.value or "ready" in widget.status.value


def test_points_segment_current_slice_only_and_undo(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    assert wf.current_slice() == MID
    output = wf.writer.layer
    before = output.data.copy()
    truth = widget.ground_truth.value.data.copy()
    image = image_layer(viewer).data.copy()

    points = wf.points_layer
    # a point on another slice must not be segmented, nor its slice touched
    points.data = np.array([[MID, 32, 18], [MID, 32, 46], [1, 30, 30]], float)
    points.features = pd.DataFrame({"positive": [True, True, False]})
    wait_idle(qtbot, widget)

    changed = [z for z in range(len(before)) if not np.array_equal(output.data[z], before[z])]
    assert changed == [MID]
    assert output.data[MID].any()
    # ground truth and image untouched
    np.testing.assert_array_equal(widget.ground_truth.value.data, truth)
    np.testing.assert_array_equal(image_layer(viewer).data, image)
    # the readout scores the slice against the ground truth
    assert MID in widget.session.scores
    assert f"slice {MID}: Dice" in widget.readout.value

    output.undo()
    np.testing.assert_array_equal(output.data, before)


def test_same_prompts_do_not_segment_twice(phantom_widget, qtbot):
    viewer, widget, recorder = phantom_widget
    wf = widget.image_layers
    go_to_slice(viewer, image_layer(viewer), 3)
    wait_idle(qtbot, widget)
    predictions = PredictionCounter(widget.session.segmenter())
    wf.points_layer.data = np.array([[3, 32, 18]], float)
    wait_idle(qtbot, widget)
    assert predictions.calls == 1
    assert undo_steps(wf.writer.layer) == 1
    wf.points_layer.data = np.array([[3, 32, 18]], float)  # same prompts again
    wait_idle(qtbot, widget)
    assert predictions.calls == 1
    assert undo_steps(wf.writer.layer) == 1


def test_box_prompt_segments_slice(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    box = np.array([[MID, 10, 5], [MID, 10, 59], [MID, 54, 59], [MID, 54, 5]], float)
    wf.shapes_layer.add_rectangles([box])
    wait_idle(qtbot, widget)
    assert wf.writer.layer.data[MID].any()
    assert MID in wf.writer.plugin_written


def test_switching_image_and_back_remembers_what_the_plugin_wrote(phantom_widget, qtbot):
    """Slices the plugin wrote stay the plugin's after a visit to another image (a
    volume run may replace them); a slice changed while away is protected."""
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    first = image_layer(viewer)
    go_to_slice(viewer, first, MID)
    wait_idle(qtbot, widget)
    box = np.array([[MID, 10, 5], [MID, 10, 59], [MID, 54, 59], [MID, 54, 5]], float)
    wf.shapes_layer.add_rectangles([box])
    wait_idle(qtbot, widget)
    output = wf.writer.layer
    other_slice = MID - 1
    wf.writer.write_slice(other_slice, np.ones_like(wf.writer.slice_view(other_slice)))
    assert {MID, other_slice} <= wf.writer.plugin_written

    other, _ = make_phantom((4, 48, 48))
    widget.image.value = viewer.add_image(other.data, name="other")
    wait_idle(qtbot, widget)
    assert wf.writer.layer is not output
    output.data[other_slice, 0, 0] = 2  # changed while not the output: no paint event
    widget.image.value = first
    wait_idle(qtbot, widget)

    assert wf.writer.layer is output
    assert MID in wf.writer.plugin_written and MID not in wf.writer.protected_slices()
    assert other_slice not in wf.writer.plugin_written
    assert other_slice in wf.writer.protected_slices()


def test_changing_the_window_re_embeds(phantom_widget, qtbot):
    viewer, widget, recorder = phantom_widget
    calls = recorder.encoder_calls
    assert calls >= 1
    assert widget.window_preset.enabled  # int16 CT: windowing applies
    # docking kept the lung window the reader opened the CT in (not the model's default)
    assert tuple(image_layer(viewer).contrast_limits) == (-1350.0, 150.0)
    assert widget.window_preset.value == "lung"
    assert (widget.session.window.level, widget.session.window.width) == (-600.0, 1500.0)
    widget.set_window(-500.0, 1000.0)
    wait_idle(qtbot, widget)
    assert recorder.encoder_calls > calls
    assert tuple(image_layer(viewer).contrast_limits) == (-1000.0, 0.0)
    assert widget.window_preset.value == "narrow-lung"
    # the preset control drives level and width too
    calls = recorder.encoder_calls
    widget.window_preset.value = "mediastinum"
    wait_idle(qtbot, widget)
    assert (widget.window_level.value, widget.window_width.value) == (40.0, 400.0)
    assert recorder.encoder_calls > calls


def test_moving_the_contrast_limits_sets_the_window(phantom_widget, qtbot):
    """What the user sees is what the model gets: contrast limits -> CT window."""
    viewer, widget, recorder = phantom_widget
    layer = image_layer(viewer)
    wait_idle(qtbot, widget)
    calls = recorder.encoder_calls
    for high in (100.0, 200.0, 300.0):  # a slider drag: several events, one re-embedding
        layer.contrast_limits = (-1200.0, high)
    assert (widget.window_level.value, widget.window_width.value) == (-450.0, 1500.0)
    assert widget.window_preset.value == "custom"
    wait_idle(qtbot, widget)
    assert widget.session.window.level == -450.0 and widget.session.window.width == 1500.0
    assert recorder.encoder_calls == calls + 1
    assert tuple(layer.contrast_limits) == (-1200.0, 300.0)  # left as the user set it
    # and the other way round still holds, without echoing back
    widget.set_window(-600.0, 1500.0)
    wait_idle(qtbot, widget)
    assert tuple(layer.contrast_limits) == (-1350.0, 150.0)
    assert widget.window_preset.value == "lung"


def test_slice_change_embeds_in_background(phantom_widget, qtbot):
    viewer, widget, recorder = phantom_widget
    calls = recorder.encoder_calls
    go_to_slice(viewer, image_layer(viewer), 1)
    assert widget.status.value.startswith("embedding slice 1")
    wait_idle(qtbot, widget)
    assert recorder.encoder_calls == calls + 1
    assert widget.status.value == "slice 1 ready"


def test_segment_slice_from_truth_shows_editable_prompts(phantom_widget, qtbot):
    viewer, widget, recorder = phantom_widget
    wf = widget.image_layers
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    widget.strategy.value = "paper"
    predictions = PredictionCounter(widget.session.segmenter())
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget)
    # paper prompts: two positive points, one negative at the box centre, one box
    positive = wf.points_layer.features["positive"].tolist()
    assert sorted(positive) == [False, True, True]
    assert np.all(np.asarray(wf.points_layer.data)[:, 0] == MID)
    assert len(wf.shapes_layer.data) == 1
    assert MID in widget.session.scores
    # one segmentation, not a second one for the shown prompts
    assert predictions.calls == 1 and undo_steps(wf.writer.layer) == 1
    # editing the shown prompts segments again
    data = np.asarray(wf.points_layer.data).copy()
    data[0, 2] += 3
    wf.points_layer.data = data
    wait_idle(qtbot, widget)
    assert predictions.calls == 2 and undo_steps(wf.writer.layer) == 2


def test_volume_run_fills_lung_slices_and_reports(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    truth = widget.ground_truth.value.data
    widget.segment_volume_button.clicked()
    assert widget.cancel_button.enabled
    wait_idle(qtbot, widget)
    output = wf.writer.layer.data
    assert label_slices(truth) == LUNG_SLICES
    assert label_slices(output) == LUNG_SLICES
    assert sorted(widget.session.scores) == LUNG_SLICES
    text = widget.readout.value
    assert f"volume: {len(LUNG_SLICES)} slices segmented" in text
    assert "Dice" in text and "Jaccard" in text and "median" in text  # Table-1 summary
    assert not widget.cancel_button.enabled
    # the whole run is one undo step
    wf.writer.layer.undo()
    assert not wf.writer.layer.data.any()


def test_volume_run_keeps_user_edits(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    output = widget.image_layers.writer.layer
    # the user paints on slice MID (through the layer's own paint tool)
    output.brush_size = 5
    output.paint((MID, 30, 30), 2)
    painted = output.data[MID].copy()
    assert widget.image_layers.writer.user_edited == {MID}
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(output.data[MID], painted)
    assert label_slices(output.data) == LUNG_SLICES


def test_cancel_volume_keeps_finished_slices(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    widget.segment_volume_button.clicked()
    widget.cancel_button.clicked()
    wait_idle(qtbot, widget)
    done = len(widget.session.scores)
    assert done < len(LUNG_SLICES)
    assert len(label_slices(widget.image_layers.writer.layer.data)) == done
    assert "cancelled" in widget.readout.value


def test_clear_slice(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget)
    assert wf.writer.layer.data[MID].any()
    widget.clear_button.clicked()
    wait_idle(qtbot, widget)
    assert not wf.writer.layer.data[MID].any()
    assert len(wf.points_layer.data) == 0 and len(wf.shapes_layer.data) == 0
    # the next click still adds a positive point
    assert bool(wf.points_layer.feature_defaults["positive"].iloc[0])
    wf.writer.layer.undo()
    assert wf.writer.layer.data[MID].any()


def test_export_metrics_asks_before_overwriting(phantom_widget, qtbot, tmp_path, monkeypatch):
    viewer, widget, _ = phantom_widget
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget)
    target = tmp_path / "scores.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    assert widget.export_metrics() == target
    with open(target, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["slice"]) for r in rows] == [MID]
    target.write_text("keep me")
    asked = []
    monkeypatch.setattr(
        QMessageBox, "question", lambda parent, title, q: asked.append(q) or QMessageBox.No
    )
    assert widget.export_metrics() is None
    assert asked and target.read_text() == "keep me"
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.Yes)
    assert widget.export_metrics() == target
    assert target.read_text().startswith("case,slice")


def test_box_only_model_refuses_points_gracefully(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, labels = make_phantom(PHANTOM_SHAPE)
    viewer, widget = build_viewer(
        image, labels, RunConfig(), viewer=viewer, segmenter_factory=box_only_factory
    )
    wait_idle(qtbot, widget)
    wf = widget.image_layers
    assert not widget.session.accepts_points
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    with capture_notifications() as shown:
        wf.points_layer.add([MID, 32, 18])
        wait_idle(qtbot, widget)
        assert ("info", BOX_ONLY_MESSAGE) in shown
        assert not wf.writer.layer.data.any()  # nothing to segment without a box
        box = np.array([[MID, 10, 5], [MID, 10, 59], [MID, 54, 59], [MID, 54, 5]], float)
        wf.shapes_layer.add_rectangles([box])
        wait_idle(qtbot, widget)
    assert wf.writer.layer.data[MID].any()  # the box is used
    assert not [s for s in shown if s[0] == "error"]
    widget.shutdown()


def test_shift_click_adds_negative_point(phantom_widget):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    points = wf.points_layer
    points.mode = "add"
    go_to_slice(viewer, image_layer(viewer), MID)
    click(points, [MID, 20, 20], modifiers=["Shift"])
    click(points, [MID, 30, 30])
    widget.negative.value = True
    click(points, [MID, 40, 40])
    np.testing.assert_allclose(points.data, [[MID, 20, 20], [MID, 30, 30], [MID, 40, 40]])
    assert points.features["positive"].tolist() == [False, True, False]
    colors = np.asarray(points.face_color)
    assert colors[0][0] == 1.0 and colors[1][1] == 1.0  # red negative, green positive


def test_errors_are_notifications(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 3, 16, 16), np.int16), name="4d")

    def no_weights(model_id, checkpoint, device, progress=None):
        from napari_samlung.errors import WeightsUnavailableError

        raise WeightsUnavailableError("no weights for vit_b: pass --checkpoint PATH")

    from napari_samlung._napari.widget import SamLungWidget

    with capture_notifications() as shown:
        widget = SamLungWidget(viewer, segmenter_factory=no_weights)
        assert any(kind == "error" and "4 dimensions" in msg for kind, msg in shown)
        viewer.add_image(make_phantom(PHANTOM_SHAPE)[0].data, name="ct")
        widget.image.value = viewer.layers["ct"]
        wait_idle(qtbot, widget)
    assert any("no weights" in msg for _, msg in shown)
    assert "model not available" in widget.status.value
    widget.shutdown()


def test_deleted_prompt_layers_come_back(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    viewer.layers.remove(wf.points_layer)
    viewer.layers.remove(wf.shapes_layer)
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget)
    assert wf.points_layer in viewer.layers and wf.shapes_layer in viewer.layers
    assert len(wf.shapes_layer.data) >= 1


def test_model_choice_shows_checkpoint_and_rebuilds(phantom_widget, qtbot):
    viewer, widget, recorder = phantom_widget
    assert widget.checkpoint.native.isHidden()  # LiteMedSAM ships its weights
    built = len(recorder.built)
    widget.model.value = "vit_b"
    wait_idle(qtbot, widget)
    assert not widget.checkpoint.native.isHidden()
    assert widget.strategy.value == "paper" and widget.window_preset.value == "paper"
    assert widget.session.model_id == "vit_b"
    assert len(recorder.built) == built + 1  # a new model, and the slice embedded again
    assert recorder.built[-1].encoder_calls == 1
    widget.device.value = "cpu"
    wait_idle(qtbot, widget)
    assert len(recorder.built) == built + 2


def test_plugin_entry_points_in_napari(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """napari finds the reader, the widget and the samples through the manifest."""
    from napari_samlung.io import write_image, write_labels

    image, labels = make_phantom(PHANTOM_SHAPE)
    image_path = write_image(tmp_path / "chest.nii.gz", image)
    mask_path = write_labels(tmp_path / "chest_mask.nii.gz", labels, like=image)
    viewer = make_napari_viewer()
    [ct] = viewer.open(image_path, plugin="napari-samlung")
    [gt] = viewer.open(mask_path, plugin="napari-samlung")
    assert type(ct).__name__ == "Image" and type(gt).__name__ == "Labels"
    np.testing.assert_allclose(ct.scale, gt.scale)
    np.testing.assert_allclose(ct.translate, gt.translate)
    assert tuple(ct.contrast_limits) == (-1350.0, 150.0)
    monkeypatch.setattr(
        "napari_samlung._napari.session.default_segmenter_factory",
        lambda model_id, checkpoint, device, progress=None: box_only_factory(),
    )
    _, dock = viewer.window.add_plugin_dock_widget("napari-samlung", "SAM lung segmentation")
    qtbot.waitUntil(lambda: dock.ready, timeout=120_000)  # PyTorch loads in the background
    widget = dock.widget
    assert widget.image.value is ct and widget.ground_truth.value is gt
    wait_idle(qtbot, widget)
    layers = viewer.open_sample("napari-samlung", "phantom")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Labels"]
    widget.shutdown()


def test_docking_keeps_the_reader_window_else_applies_the_default(make_napari_viewer, qtbot):
    """One rule on docking: a window the reader set stays (and the model uses it), unless the
    run's configuration names one; a layer without one gets the model's default window."""
    image, labels = make_phantom(PHANTOM_SHAPE)
    viewer = make_napari_viewer()
    plain = viewer.add_image(image.data, name="plain")  # not opened by our reader
    widget = SamLungWidget(viewer, segmenter_factory=box_only_factory)
    wait_idle(qtbot, widget)
    assert widget.window_preset.value == "narrow-lung"  # LiteMedSAM's default
    assert tuple(plain.contrast_limits) == (-1000.0, 0.0)
    widget.shutdown()

    viewer = make_napari_viewer()
    config = RunConfig(window_preset="mediastinum")
    viewer, widget = build_viewer(
        image, labels, config, viewer=viewer, segmenter_factory=box_only_factory
    )
    wait_idle(qtbot, widget)
    assert tuple(image_layer(viewer).contrast_limits) == (-160.0, 240.0)  # asked for: it wins
    assert (widget.session.window.level, widget.session.window.width) == (40.0, 400.0)
    widget.shutdown()
