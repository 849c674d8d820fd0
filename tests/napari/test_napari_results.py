"""The dock's results table (slice and volume: Dice, Jaccard, per-lung Dice, lung volumes in
mL), the ground truth drawn as a contour, and a dock that leaves the canvas room."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from napari_fixtures import MID, go_to_slice, image_layer, wait_idle

from napari_samlung.core.metrics import score_slice
from napari_samlung.core.volumes import lung_volumes

pytestmark = pytest.mark.gui


def _cells(widget) -> dict[str, list[str]]:
    table = widget.results.table
    return {
        table.verticalHeaderItem(r).text(): [
            table.item(r, c).text() for c in range(table.columnCount())
        ]
        for r in range(table.rowCount())
    }


def test_table_shows_the_slice_and_the_volume_with_lung_volumes(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    go_to_slice(viewer, image_layer(viewer), MID)
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    qtbot.waitUntil(lambda: widget.results.headers == [f"slice {MID}", "volume"], timeout=5000)
    labels = np.asarray(widget.image_layers.writer.layer.data)
    truth = np.asarray(widget.ground_truth.value.data)
    cells = _cells(widget)
    score = score_slice(labels[MID], truth[MID], slice_index=MID)
    assert cells["Dice"][0] == f"{100 * score.dice:.1f} %"
    assert cells["Jaccard"][0] == f"{100 * score.jaccard:.1f} %"
    assert cells["Dice left"][0] != "–" and cells["Dice right"][0] != "–"
    spacing = widget.session.spacing_zyx_mm
    volumes = lung_volumes(labels, spacing)
    assert cells["left (mL)"][1] == f"{volumes.get('left').size:.1f}"
    assert cells["right (mL)"][1] == f"{volumes.get('right').size:.1f}"
    assert cells["total (mL)"][1] == f"{volumes.get('total').size:.1f}"
    one_slice = lung_volumes(labels[MID : MID + 1], spacing)
    assert cells["total (mL)"][0] == f"{one_slice.get('total').size:.1f}"
    mean = np.mean([s.dice for s in widget.session.scores.values()])
    assert cells["Dice"][1] == f"{100 * mean:.1f} %"

    # painting a slice away updates the volumes (only that slice is recounted)
    layer = widget.image_layers.writer.layer
    layer.data[MID] = 0
    layer.refresh()
    qtbot.waitUntil(lambda: _cells(widget)["total (mL)"][0] == "0.0", timeout=5000)
    after = lung_volumes(np.asarray(layer.data), spacing).get("total").size
    assert _cells(widget)["total (mL)"][1] == f"{after:.1f}"


def test_volumes_are_shown_without_ground_truth_and_scores_are_not(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    widget.ground_truth.value = None
    qtbot.waitUntil(lambda: _cells(widget)["Dice"] == ["–", "–"], timeout=5000)
    assert _cells(widget)["total (mL)"][1] not in ("–", "0.0")


def test_the_ground_truth_is_a_contour_in_its_own_colour_and_gets_its_style_back(
    phantom_widget, qtbot
):
    viewer, widget, _ = phantom_widget
    truth = widget.ground_truth.value
    assert truth.contour >= 1
    colour = truth.colormap.map(np.array([1]))[0]
    assert tuple(np.round(colour, 2)) == (1.0, 1.0, 0.0, 1.0)  # yellow, unlike the output
    widget.ground_truth.value = None
    assert truth.contour == 0


def test_the_dock_leaves_the_canvas_most_of_a_default_window(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    """napari's default window is about 1090 px wide on a 1920x1080 screen; the dock takes
    its widget's size hint (it was 343 px, leaving the canvas 400 px; now about 240)."""
    viewer.window.add_dock_widget(widget, area="right", name="SAM lung")
    qtbot.wait(50)
    assert widget.native.minimumSizeHint().width() <= 260
    assert widget.native.sizeHint().width() <= 280


CLOSE_SCRIPT = textwrap.dedent(
    """
    import numpy as np, napari
    from qtpy.QtWidgets import QApplication
    from napari_samlung._napari.widget import SamLungWidget
    from napari_samlung.core.engine import Segmenter
    import random_sam  # registers the random test models
    import time

    def slow_factory(*args, **kwargs):
        time.sleep(1.5)  # the model is still loading when the script ends
        return Segmenter.from_registry("micro_random", device="cpu", precision="fp32")

    viewer = napari.Viewer(show=True)
    viewer.add_image(np.random.default_rng(0).integers(-1000, 400, (6, 64, 64)).astype(np.int16))
    widget = SamLungWidget(viewer, segmenter_factory=slow_factory)
    viewer.window.add_dock_widget(widget)
    QApplication.instance().processEvents()
    viewer.close()
    print("closed")
    """
)


def test_a_script_that_closes_the_viewer_while_a_job_runs_exits_cleanly(tmp_path):
    """Python's exit deletes Qt objects in no set order: a running job must not abort it."""
    script = tmp_path / "close.py"
    script.write_text(CLOSE_SCRIPT)
    tests = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**__import__("os").environ, "PYTHONPATH": tests},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "closed" in result.stdout
    assert "has been deleted" not in result.stderr


def test_the_ground_truth_contour_is_drawn_above_the_output(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    layers = viewer.layers
    truth, output = widget.ground_truth.value, widget.image_layers.writer.layer
    assert layers.index(truth) > layers.index(output)
