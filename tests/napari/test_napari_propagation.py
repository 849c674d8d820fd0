"""Propagate in the widget: a volume from the prompts of a few slices, no ground truth needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from napari.layers import Points, Shapes
from napari_fixtures import (
    MID,
    PHANTOM_SHAPE,
    add_points,
    box_only_factory,
    box_vertices,
    capture_notifications,
    go_to_slice,
    image_layer,
    label_slices,
    messages,
    never_stop_early,
    rerun_and_cancel,
    tiny_factory,
    wait_idle,
)

from napari_samlung._napari.prompt_layers import (
    BOX_ONLY_MESSAGE,
    make_points_layer,
    make_shapes_layer,
    prompted_slices,
    read_slice_prompts,
    seeds_from_layers,
)
from napari_samlung._napari.session import LungSession
from napari_samlung.core.propagation import PropagationSettings
from napari_samlung.errors import PromptError
from napari_samlung.io.phantom import make_phantom

LUNG_POINTS = [[32, 18], [32, 46]]  # (row, col): one point in each lung of the phantom


def _prompt(widget, qtbot, z: int = MID, points=LUNG_POINTS) -> None:
    """Go to slice z and click points there (the interactive path segments it)."""
    viewer, wf = widget.viewer, widget.image_layers
    go_to_slice(viewer, image_layer(viewer), z)
    add_points(wf.points_layer, z, points)
    wait_idle(qtbot, widget)


def _propagate(widget, qtbot) -> None:
    widget.propagate_button.clicked()
    wait_idle(qtbot, widget)


# --------------------------------------------------------------------------- Qt-free


def _session_and_layers(n_slices: int = 8, accepts_points: bool = True):
    image, _ = make_phantom((n_slices, 64, 64))
    factory = tiny_factory if accepts_points else box_only_factory
    session = LungSession(factory)
    session.configure_model(factory().model_id, None, "cpu")
    session.set_image(image.data, is_2d=False)
    points = make_points_layer("p", 3, (1, 1, 1), (0, 0, 0))
    shapes = make_shapes_layer("b", 3, (1, 1, 1), (0, 0, 0))
    return session, points, shapes


def test_every_prompted_slice_is_a_seed_with_the_interactive_prompts():
    session, points, shapes = _session_and_layers()
    add_points(points, 2, [[30, 20]])
    add_points(points, 6, [[30, 20], [30, 40]], positive=[True, False])
    shapes.add_rectangles([box_vertices(6, 10, 5, 54, 59), box_vertices(4, 10, 5, 54, 59)])
    assert prompted_slices(points, shapes, 8) == [2, 4, 6]
    seeds = seeds_from_layers(points, shapes, session)
    assert [s.slice_index for s in seeds] == [2, 4, 6]
    for seed in seeds:  # converted exactly as the interactive path does
        here = read_slice_prompts(points, shapes, seed.slice_index)
        expected = session.check_prompts(seed.slice_index, here.to_prompts(True))
        assert len(seed.prompts) == len(expected)
        for got, want in zip(seed.prompts, expected, strict=True):
            np.testing.assert_array_equal(got.points_xy, want.points_xy)
            np.testing.assert_array_equal(got.point_labels, want.point_labels)
            np.testing.assert_array_equal(got.box_xyxy, want.box_xyxy)
    # slice 6: the negative point joins the box, points are (x, y)
    [six] = seeds[2].prompts
    np.testing.assert_array_equal(six.points_xy, [[20, 30], [40, 30]])
    np.testing.assert_array_equal(six.point_labels, [1, 0])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p, s: None, "nothing to propagate"),
        (lambda p, s: add_points(p, 3, [[30, 20]], positive=[False]), "slice 3: only negative"),
        (lambda p, s: add_points(p, 9, [[30, 20]]), "slice 9, outside the image"),
        (lambda p, s: add_points(p, 3, [[30, 200]]), "slice 3: point (row 30, col 200) lies"),
        (lambda p, s: add_points(p, 3, [[30, 20]] * 65), "more than the limit"),
        (
            lambda p, s: s.add_rectangles([box_vertices(3, 10, 5, 10.2, 40)]),
            "slice 3: the box has zero width or height",
        ),
    ],
    ids=["no prompts", "only negative", "slice outside", "point outside", "too many", "flat box"],
)
def test_unusable_seeds_say_which_slice_and_why(edit, expected):
    session, points, shapes = _session_and_layers()
    edit(points, shapes)
    with pytest.raises(PromptError) as info:
        seeds_from_layers(points, shapes, session)
    assert expected in str(info.value)


def test_box_only_model_needs_a_box_on_every_seed():
    session, points, shapes = _session_and_layers(accepts_points=False)
    add_points(points, 3, [[30, 20]])
    with pytest.raises(PromptError, match="slice 3: " + BOX_ONLY_MESSAGE[:20]):
        seeds_from_layers(points, shapes, session)
    shapes.add_rectangles([box_vertices(3, 10, 5, 54, 59)])
    [seed] = seeds_from_layers(points, shapes, session)
    assert seed.prompts[0].box_xyxy is not None and not seed.prompts[0].has_points


def test_2d_layers_have_one_slice():
    points = make_points_layer("p", 2, (1, 1), (0, 0))
    shapes = make_shapes_layer("b", 2, (1, 1), (0, 0))
    assert prompted_slices(points, shapes, 1) == []
    points.add([10, 12])
    assert prompted_slices(points, shapes, 1) == [0]
    assert isinstance(points, Points) and isinstance(shapes, Shapes)


# --------------------------------------------------------------------------- widget


def test_propagate_from_one_slice_shows_slices_and_undoes(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    never_stop_early(widget)
    widget.ground_truth.value = None  # propagation needs no ground truth
    _prompt(widget, qtbot)
    output = wf.writer.layer
    before = output.data.copy()
    assert label_slices(before) == [MID]  # the interactive result of the clicks
    writes = []
    original = wf.writer.write_slice

    def spy(z, labels, propagated=False):
        writes.append((z, widget.runs.running, propagated))
        return original(z, labels, propagated)

    wf.writer.write_slice = spy
    widget.propagate_button.clicked()
    assert widget.cancel_button.enabled and not widget.propagate_button.enabled
    wait_idle(qtbot, widget)
    assert not widget.cancel_button.enabled and widget.propagate_button.enabled
    # shown slice by slice while the run went on, each as a propagated slice
    assert len(writes) == PHANTOM_SHAPE[0]
    assert all(running and propagated for _, running, propagated in writes)
    assert writes[0][0] == MID  # the seed first
    assert label_slices(output.data) == list(range(PHANTOM_SHAPE[0]))
    assert widget.status.value.startswith(f"propagated from slice(s) {MID}: 8 slices segmented")
    assert "both ends of the volume" in widget.status.value
    # one undo step restores the output as it was before Propagate
    output.undo()
    np.testing.assert_array_equal(output.data, before)


def test_propagate_keeps_painted_slices_unless_told(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    never_stop_early(widget)
    _prompt(widget, qtbot)
    output = wf.writer.layer
    output.brush_size = 3
    output.paint((2, 5, 5), 2)  # the user paints on slice 2
    painted = output.data[2].copy()
    _propagate(widget, qtbot)
    np.testing.assert_array_equal(output.data[2], painted)
    assert "kept your edits on slice(s) 2" in widget.status.value
    assert label_slices(output.data) == list(range(PHANTOM_SHAPE[0]))
    # ticked: the painted slice is replaced too
    widget.overwrite_edited.value = True
    _propagate(widget, qtbot)
    assert not np.array_equal(output.data[2], painted)
    assert 2 not in wf.writer.user_edited


def test_correction_reseeds_its_stretch_and_clears_what_it_no_longer_reaches(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    never_stop_early(widget)
    _prompt(widget, qtbot)
    _propagate(widget, qtbot)
    output = wf.writer.layer
    assert label_slices(output.data) == list(range(8))
    # rules that stop at once, and a new seed on slice 1
    widget.runs.propagation_settings = PropagationSettings(min_score=math.inf)
    _prompt(widget, qtbot, z=1)
    _propagate(widget, qtbot)
    assert label_slices(output.data) == [1, MID]
    status = widget.status.value
    assert status.startswith("propagated from slice(s) 1, 4: 2 slices segmented")
    assert "cleared 6 slice(s) it no longer reaches" in status
    assert "stopped at slice 0: low predicted IoU" in status
    assert "slice 5: low predicted IoU" in status
    output.undo()  # the correction is one undo step, clearing included
    assert label_slices(output.data) == list(range(8))


def test_cancel_propagation_keeps_whole_slices(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    never_stop_early(widget)
    _prompt(widget, qtbot)
    full, before = rerun_and_cancel(widget, qtbot, widget.propagate_button)
    output = wf.writer.layer
    written = [z for z in range(8) if not np.array_equal(output.data[z], before[z])]
    # slice 3, and slice 2 if it was being segmented when Cancel came (the worker's
    # timing decides which); then it stopped: nothing further from the seed changed
    assert MID - 1 in written and set(written) <= {MID - 2, MID - 1}
    for z in range(8):  # every slice is a whole prediction or untouched
        assert np.array_equal(output.data[z], full[z]) or np.array_equal(output.data[z], before[z])
    assert widget.status.value.startswith("propagation cancelled:")
    output.undo()
    np.testing.assert_array_equal(output.data, before)


def test_propagate_problems_are_notifications(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    with capture_notifications() as shown:
        _propagate(widget, qtbot)
        assert "nothing to propagate" in messages(shown, "warning")
        go_to_slice(viewer, image_layer(viewer), 3)
        add_points(wf.points_layer, 3, [[30, 20]], positive=[False])
        wait_idle(qtbot, widget)
        _propagate(widget, qtbot)
    assert "slice 3: only negative points" in messages(shown, "warning")
    assert not wf.writer.layer.data.any()
    assert not [s for s, _ in shown if s == "error"]


def test_propagate_on_a_2d_image(make_napari_viewer, qtbot):
    from napari_samlung._napari.widget import SamLungWidget

    viewer = make_napari_viewer()
    image, _ = make_phantom(PHANTOM_SHAPE)
    viewer.add_image(image.data[MID], name="xray")
    widget = SamLungWidget(viewer, segmenter_factory=tiny_factory)
    wait_idle(qtbot, widget)
    wf = widget.image_layers
    wf.points_layer.add([32, 18])
    wait_idle(qtbot, widget)
    widget.propagate_button.clicked()
    wait_idle(qtbot, widget)
    assert wf.writer.layer.data.ndim == 2 and wf.writer.layer.data.any()
    assert widget.status.value == "propagated from slice(s) 0: 1 slice segmented"
    widget.shutdown()
