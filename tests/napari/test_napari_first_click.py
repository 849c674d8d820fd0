"""The first click goes to a prompt the model takes: boxes for box-only models, else points."""

from __future__ import annotations

import pytest
from napari_fixtures import wait_idle

pytestmark = pytest.mark.gui


def test_box_only_model_starts_on_the_rectangle_tool_and_point_models_on_points(
    phantom_widget, qtbot
):
    viewer, widget, _ = phantom_widget
    layers = widget.image_layers
    assert widget.model.value == "lite_medsam"  # takes boxes only
    assert viewer.layers.selection.active is layers.shapes_layer
    assert layers.shapes_layer.mode == "add_rectangle"

    widget.model.value = "vit_b"  # takes points
    wait_idle(qtbot, widget)
    assert viewer.layers.selection.active is layers.points_layer
    assert layers.points_layer.mode == "add"

    widget.model.value = "lite_medsam"
    wait_idle(qtbot, widget)
    assert viewer.layers.selection.active is layers.shapes_layer
    assert layers.shapes_layer.mode == "add_rectangle"
