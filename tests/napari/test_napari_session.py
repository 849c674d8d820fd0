"""The Qt-free parts of the widget: session, prompt layers, undoable output writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.layers import Image, Labels, Points, Shapes
from napari_fixtures import PHANTOM_SHAPE, tiny_factory

from napari_samlung._napari.layers import volume_from_image_layer
from napari_samlung._napari.output import OutputWriter
from napari_samlung._napari.prompt_layers import (
    SlicePrompts,
    make_points_layer,
    make_shapes_layer,
    read_slice_prompts,
    rectangle_vertices,
    replace_slice_prompts,
)
from napari_samlung._napari.session import LungSession, truth_as_lungs
from napari_samlung.core.prompts import Prompt
from napari_samlung.errors import SamlungError, ShapeMismatchError
from napari_samlung.io.phantom import make_phantom
from napari_samlung.io.tables import read_scores_csv


def test_slice_prompts_swap_rows_and_columns_once():
    prompts = SlicePrompts(
        points_rc=np.array([[10, 30], [12, 70]], np.float32),
        positive=np.array([True, False]),
        boxes_rc=[np.array([[5, 20], [40, 60]], np.float32)],
    )
    [prompt] = prompts.to_prompts(accepts_points=True)
    np.testing.assert_array_equal(prompt.points_xy, [[30, 10], [70, 12]])
    np.testing.assert_array_equal(prompt.point_labels, [1, 0])
    np.testing.assert_array_equal(prompt.box_xyxy, [20, 5, 60, 40])
    [box_only] = prompts.to_prompts(accepts_points=False)
    assert not box_only.has_points and box_only.box_xyxy is not None
    assert (
        SlicePrompts(points_rc=prompts.points_rc, positive=prompts.positive).to_prompts(
            accepts_points=False
        )
        == []
    )


def test_points_join_the_box_they_are_in():
    prompts = SlicePrompts(
        points_rc=np.array([[10, 10], [10, 50]], np.float32),
        positive=np.array([True, True]),
        boxes_rc=[np.array([[0, 0], [20, 20]]), np.array([[0, 40], [20, 60]])],
    )
    first, second = prompts.to_prompts()
    np.testing.assert_array_equal(first.points_xy, [[10, 10]])
    np.testing.assert_array_equal(second.points_xy, [[50, 10]])


def test_read_and_replace_prompts_of_one_slice():
    points = make_points_layer("p", 3, (1, 1, 1), (0, 0, 0))
    shapes = make_shapes_layer("b", 3, (1, 1, 1), (0, 0, 0))
    points.data = np.array([[2, 10, 30], [3, 11, 31], [2.2, 12, 32]], float)
    points.features = pd.DataFrame({"positive": [True, True, False]})
    shapes.add_rectangles([rectangle_vertices(np.array([[5, 6], [20, 40]]), 2, 3)])
    shapes.add_rectangles([rectangle_vertices(np.array([[1, 1], [9, 9]]), 3, 3)])
    here = read_slice_prompts(points, shapes, 2)
    np.testing.assert_array_equal(here.points_rc, [[10, 30], [12, 32]])
    np.testing.assert_array_equal(here.positive, [True, False])
    np.testing.assert_array_equal(here.boxes_rc[0], [[5, 6], [20, 40]])
    assert len(here.boxes_rc) == 1

    points.feature_defaults = {"positive": True}  # the next click is positive ...
    new = [Prompt(points_xy=[[44, 22]], point_labels=[0], box_xyxy=[1, 2, 50, 60])]
    replace_slice_prompts(points, shapes, 2, new)
    again = read_slice_prompts(points, shapes, 2)
    np.testing.assert_array_equal(again.points_rc, [[22, 44]])
    np.testing.assert_array_equal(again.positive, [False])
    np.testing.assert_array_equal(again.boxes_rc[0], [[2, 1], [60, 50]])
    other = read_slice_prompts(points, shapes, 3)  # untouched
    np.testing.assert_array_equal(other.points_rc, [[11, 31]])
    assert len(other.boxes_rc) == 1
    assert bool(points.feature_defaults["positive"].iloc[0])  # ... and stays so


def test_output_writer_undo_groups_and_user_edits():
    layer = Labels(np.zeros((5, 8, 8), np.uint8))
    writer = OutputWriter(layer)
    slice_labels = np.zeros((8, 8), np.uint8)
    slice_labels[2:5, 2:5] = 1
    assert writer.write_slice(1, slice_labels)
    assert not writer.write_slice(1, slice_labels)  # nothing changed: no undo step
    assert writer.plugin_written == {1} and not writer.user_edited
    layer.undo()
    assert not layer.data.any()

    writer.begin_group()
    for z in (0, 2, 3):
        writer.write_slice(z, slice_labels)
    writer.end_group()
    assert [z for z in range(5) if layer.data[z].any()] == [0, 2, 3]
    layer.undo()  # the whole group at once
    assert not layer.data.any()
    layer.redo()
    assert layer.data[3].any()

    layer.paint((4, 4, 4), 2)  # the user paints
    assert writer.user_edited == {4}
    assert writer.protected_slices() == {4}
    writer.write_slice(4, slice_labels)  # the plugin writes there again on request
    assert 4 not in writer.user_edited


def test_output_writer_protects_existing_labels():
    data = np.zeros((4, 6, 6), np.uint8)
    data[2, 1:3, 1:3] = 1  # labels loaded from a file, not written by the plugin
    writer = OutputWriter(Labels(data))
    assert writer.protected_slices() == {2}
    writer2d = OutputWriter(Labels(np.ones((6, 6), np.uint8)))
    assert writer2d.protected_slices() == {0}


def test_session_scores_and_export(tmp_path):
    image, labels = make_phantom(PHANTOM_SHAPE)
    session = LungSession(tiny_factory)
    session.set_image(image.data, is_2d=False, case="phantom")
    assert session.windowable
    with pytest.raises(ShapeMismatchError):
        session.set_truth(labels[:-1])
    session.set_truth(labels)
    assert session.lung_slices() == [1, 2, 3, 4, 5, 6]
    session.strategy = "box"
    [prompt] = session.prompts_from_truth(4)
    assert prompt.box_xyxy is not None
    pred, _ = session.segment(4, [prompt], "box")
    assert pred.shape == PHANTOM_SHAPE[1:] and pred.dtype == np.uint8
    assert session.score(4, labels[4]).dice == 1.0
    assert session.score(0, labels[0]) is None  # no lung in the truth: not scored
    session.score(3, np.zeros_like(labels[3]))
    n, dice, jaccard = session.mean_scores()
    assert (n, dice, jaccard) == (2, 0.5, 0.5)
    assert session.summary().slices == 2
    out = session.export_scores(tmp_path / "s.csv")
    assert [s.slice_index for s in read_scores_csv(out)] == [3, 4]


def test_session_model_is_built_lazily_and_rebuilt_on_change():
    built = []

    def factory(model_id, checkpoint, device, progress=None):
        built.append((model_id, checkpoint, device))
        return tiny_factory()

    session = LungSession(factory)
    session.set_image(np.zeros((1, 16, 16), np.uint8), is_2d=True)
    assert not session.windowable  # 8-bit: used as it is
    assert not session.accepts_points  # lite_medsam's spec, before loading
    assert not built
    session.embed(0)
    assert session.is_embedded(0)
    assert built == [("lite_medsam", None, "auto")]
    assert not session.configure_model("lite_medsam", None, "auto")
    assert session.configure_model("lite_medsam", None, "cpu")
    assert not session.model_loaded
    with pytest.raises(SamlungError, match="unknown model"):
        session.configure_model("no_such_model", None, "cpu")


def test_truth_as_lungs():
    binary = np.zeros((2, 10, 10), np.uint8)
    binary[:, 2:8, 1:4] = 255
    binary[:, 2:8, 6:9] = 255
    lungs = truth_as_lungs(binary)
    assert set(np.unique(lungs)) == {0, 1, 2}
    labels = np.zeros((2, 4, 4), np.int32)
    labels[0, 1, 1] = 2
    assert truth_as_lungs(labels).dtype == np.uint8


def test_volume_from_image_layer():
    volume, is_2d = volume_from_image_layer(Image(np.zeros((6, 7), np.int16)))
    assert volume.shape == (1, 6, 7) and is_2d
    rgb = Image(np.full((5, 6, 3), 200, np.uint8), rgb=True)
    volume, is_2d = volume_from_image_layer(rgb)
    assert volume.shape == (1, 5, 6) and volume.dtype == np.uint8 and is_2d
    with pytest.raises(SamlungError, match="4 dimensions"):
        volume_from_image_layer(Image(np.zeros((2, 3, 4, 5))))


def test_prompt_layers_take_points_and_shapes_types():
    assert isinstance(make_points_layer("p", 2, (1, 1), (0, 0)), Points)
    assert isinstance(make_shapes_layer("b", 2, (1, 1), (0, 0)), Shapes)
