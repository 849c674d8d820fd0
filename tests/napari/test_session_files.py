"""Sessions persist: "Save session" and "Load session" on the real widget path.

Prompts are written to the layers' ``data``, the window and model set through the widget,
the session saved, the viewer closed; a new viewer on the same files loads it back.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from napari_fixtures import (
    MID,
    PHANTOM_SHAPE,
    add_points,
    box_vertices,
    capture_notifications,
    checksum,
    fast_debounce,
    go_to_slice,
    messages,
    tiny_factory,
    undo_steps,
    wait_idle,
)

from napari_samlung._napari.prompt_layers import read_slice_prompts
from napari_samlung._napari.widget import SamLungWidget
from napari_samlung.io import read_image, write_image, write_labels
from napari_samlung.io.phantom import make_phantom
from napari_samlung.io.session_file import read_session
from napari_samlung.io.tables import seeds_from_json

pytestmark = pytest.mark.gui


def _files(tmp_path, truth_name: str = "chest_mask.nii.gz"):
    image, labels = make_phantom(PHANTOM_SHAPE)
    image_path = write_image(tmp_path / "chest.nii.gz", image)
    truth_path = write_labels(tmp_path / truth_name, labels, like=image)
    return image_path, truth_path


def _open(make_napari_viewer, qtbot, *paths):
    """A viewer with the files opened by our reader and the widget docked (tiny model)."""
    viewer = make_napari_viewer()
    layers = [viewer.open(p, plugin="napari-samlung")[0] for p in paths]
    widget = SamLungWidget(viewer, segmenter_factory=tiny_factory)
    viewer.window.add_dock_widget(widget, name="SAM lung segmentation", area="right")
    fast_debounce(widget)
    wait_idle(qtbot, widget)
    return viewer, widget, layers


def _prompts(widget, z):
    layers = widget.image_layers
    return read_slice_prompts(layers.points_layer, layers.shapes_layer, z)


def test_a_saved_session_comes_back_the_next_day(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    image_path, truth_path = _files(tmp_path)
    viewer, widget, [image, _] = _open(make_napari_viewer, qtbot, image_path, truth_path)
    widget.model.value = "vit_b"  # takes points
    wait_idle(qtbot, widget)
    go_to_slice(viewer, image, MID)
    wait_idle(qtbot, widget)
    points, shapes = widget.image_layers.points_layer, widget.image_layers.shapes_layer
    add_points(points, MID, [[30.5, 16.25], [12, 32]], positive=[True, False])
    shapes.add_rectangles([box_vertices(MID, 14, 36, 50, 58), box_vertices(2, 20, 6, 44, 28)])
    wait_idle(qtbot, widget)
    widget.set_window(-300.0, 1200.0)
    widget.strategy.value = "box"
    wait_idle(qtbot, widget)
    output = widget.image_layers.writer.layer
    assert output.data[MID].any()  # the slice was segmented from its prompts
    saved_labels = np.array(output.data, copy=True)
    before = _prompts(widget, MID)

    path = widget.session_files.default_path()
    assert path == tmp_path / "chest_samlung_session.json"
    layout = widget.native.layout()
    assert layout.indexOf(widget.session_files.box.native) > layout.indexOf(
        widget.export_button.native
    )
    offered = []

    def save_dialog(parent, title, suggested, *args, **kwargs):
        offered.append(suggested)
        return str(path), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_dialog)
    widget.session_files.save_button.clicked()  # the user presses "Save session"
    assert offered == [str(path)] and path.is_file()
    labels_path = tmp_path / "chest_lungs.nii.gz"
    np.testing.assert_array_equal(read_image(labels_path).data, saved_labels)
    # the session is a prompts file for 'segment --propagate-from'
    assert [s.slice_index for s in seeds_from_json(path, PHANTOM_SHAPE)] == [2, MID]
    spec = json.loads(path.read_text())
    assert spec["session"]["labels_file"] == "chest_lungs.nii.gz"
    assert spec["slices"][1]["point_labels"] == [1, 0]
    assert spec["slices"][1]["box_labels"] == [1]  # right of the midline: the left lung

    # saving again asks before replacing the two files
    questions = []
    assert widget.session_files.save(path, confirm=lambda q: questions.append(q) or False) is None
    assert questions == [f"{path} and {labels_path} exist. Replace them?"]
    answers = []

    def answer_yes(parent, title, text, *args):
        answers.append(text)
        return QMessageBox.Yes

    monkeypatch.setattr(QMessageBox, "question", answer_yes)
    assert widget.session_files.save(path) == path
    assert answers == questions

    viewer.close()
    assert widget.closed

    # the next day: the same files, a new viewer
    with capture_notifications() as shown:
        viewer, widget, [image, _] = _open(make_napari_viewer, qtbot, image_path, truth_path)
    assert f"'chest' has a saved session, {path}: press 'Load session'" in messages(shown)
    assert widget.model.value == "lite_medsam" and widget.strategy.value == "per-lung"
    assert not widget.image_layers.points_layer.data.size
    go_to_slice(viewer, image, MID)
    wait_idle(qtbot, widget)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    with capture_notifications() as shown:
        widget.session_files.load_button.clicked()  # the user presses "Load session"
        wait_idle(qtbot, widget)
    assert "loaded the session chest_samlung_session.json: 2 prompted slices" in messages(shown)
    assert widget.model.value == "vit_b" and widget.session.model_id == "vit_b"
    assert (widget.window_level.value, widget.window_width.value) == (-300.0, 1200.0)
    assert (widget.session.window.level, widget.session.window.width) == (-300.0, 1200.0)
    assert widget.window_preset.value == "custom"
    assert tuple(image.contrast_limits) == (-900.0, 300.0)
    assert widget.strategy.value == "box" and widget.session.strategy == "box"
    after = _prompts(widget, MID)
    np.testing.assert_allclose(after.points_rc, before.points_rc)
    np.testing.assert_array_equal(after.positive, before.positive)
    np.testing.assert_allclose(after.boxes_rc, before.boxes_rc)
    np.testing.assert_allclose(_prompts(widget, 2).boxes_rc, [[[20, 6], [44, 28]]])
    output = widget.image_layers.writer.layer
    assert output is widget.output.value
    np.testing.assert_array_equal(output.data, saved_labels)  # no model run replaced them
    assert undo_steps(output) == 1  # the load is one undo step
    output.undo()
    assert not output.data.any()
    output.redo()
    np.testing.assert_array_equal(output.data, saved_labels)
    assert MID in widget.session.scores  # scored against the ground truth
    widget.shutdown()


def test_inputs_are_never_overwritten_and_other_images_are_refused(
    make_napari_viewer, qtbot, tmp_path
):
    """A ground truth named like the output labels is an input: the save is refused, by any
    spelling of the path; a session of an image of another shape is refused on loading."""
    image_path, truth_path = _files(tmp_path, truth_name="chest_lungs.nii.gz")
    os.symlink(tmp_path, tmp_path.parent / f"{tmp_path.name}_link")
    linked = tmp_path.parent / f"{tmp_path.name}_link"
    viewer, widget, [image, truth] = _open(make_napari_viewer, qtbot, image_path, truth_path)
    assert widget.ground_truth.value is truth
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget)
    assert widget.image_layers.writer.layer.data.any()
    digest = (truth_path.read_bytes(), image_path.read_bytes())
    for path in (
        tmp_path / "chest_samlung_session.json",
        linked / "chest_samlung_session.json",
        tmp_path / "sub" / ".." / "chest_samlung_session.json",
    ):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with capture_notifications() as shown:
            assert widget.session_files.save(path, confirm=lambda q: True) is None
        assert "chest_lungs.nii.gz is one of the input files" in messages(shown, "error")
        assert not (tmp_path / "chest_samlung_session.json").exists()
    assert (truth_path.read_bytes(), image_path.read_bytes()) == digest
    mine = widget.session_files.save(linked / "mine.json")  # another name is fine
    assert mine == linked / "mine.json" and (tmp_path / "mine_lungs.nii.gz").is_file()

    other = tmp_path / "other_samlung_session.json"
    spec = json.loads(mine.read_text())
    spec["session"]["image"]["shape"] = [9, 64, 64]
    other.write_text(json.dumps(spec))
    before = checksum(widget.image_layers.writer.layer)
    with capture_notifications() as shown:
        assert widget.session_files.load(other) is None
    assert "is for an image of shape (9, 64, 64)" in messages(shown, "error")
    assert checksum(widget.image_layers.writer.layer) == before
    assert read_session(mine).image_shape == PHANTOM_SHAPE
    widget.shutdown()


def test_an_x_ray_session_saves_a_png_and_no_window(make_napari_viewer, qtbot, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    xray = rng.integers(180, 220, (64, 64)).astype(np.uint8)
    xray[8:56, 6:28] -= 140
    xray[8:56, 36:58] -= 140
    image_path = tmp_path / "cxr.png"
    Image.fromarray(xray).save(image_path)
    viewer, widget, [image] = _open(make_napari_viewer, qtbot, image_path)
    widget.image_layers.shapes_layer.add_rectangles(
        [np.array([[6, 4], [6, 30], [58, 30], [58, 4]])]
    )
    wait_idle(qtbot, widget)
    labels = np.array(widget.image_layers.writer.layer.data, copy=True)
    assert labels.any()
    path = widget.session_files.save(tmp_path / "cxr_samlung_session.json")
    saved = read_session(path, image_shape=(64, 64))
    assert saved.window_level is None and saved.labels_file == "cxr_lungs.png"
    assert saved.slices[0].box_labels == [2]  # left of the image's centre: the right lung
    widget.shutdown()

    viewer, widget, [image] = _open(make_napari_viewer, qtbot, image_path)
    assert widget.session_files.load(path) == path
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(widget.image_layers.writer.layer.data, labels)
    np.testing.assert_allclose(_prompts(widget, 0).boxes_rc, [[[6, 4], [58, 30]]])
    widget.shutdown()
