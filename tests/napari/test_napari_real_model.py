"""The widget with the real bundled model (LiteMedSAM): accuracy on a real X-ray; screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from napari_fixtures import DATA_DIR, REPO, go_to_slice, image_layer, wait_idle

from napari_samlung._napari.launch import build_viewer
from napari_samlung.core.config import RunConfig
from napari_samlung.io import read_image, read_mask
from napari_samlung.io.phantom import make_phantom

pytestmark = pytest.mark.gui
MONTGOMERY_IMAGE = DATA_DIR / "montgomery" / "images" / "MCUCXR_0001_0.png"
MONTGOMERY_MASK = DATA_DIR / "montgomery" / "masks" / "MCUCXR_0001_0.png"
REAL_MODEL_WAIT_MS = 180_000


def _montgomery():
    image = read_image(MONTGOMERY_IMAGE)
    return image, read_mask(MONTGOMERY_MASK, like=image)


@pytest.mark.slow
@pytest.mark.skipif(not MONTGOMERY_IMAGE.is_file(), reason=f"no Montgomery data in {DATA_DIR}")
def test_lite_medsam_on_montgomery_through_the_widget(make_napari_viewer, qtbot):
    image, labels = _montgomery()
    viewer, widget = build_viewer(
        image, labels, RunConfig(model_id="lite_medsam"), viewer=make_napari_viewer()
    )
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    assert widget.model.value == "lite_medsam"
    assert not widget.window_preset.enabled  # 8-bit X-ray: no window
    assert widget.ground_truth.value is not None
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    score = widget.session.scores[0]
    assert score.dice >= 0.95, widget.readout.value
    assert "slice 0: Dice" in widget.readout.value
    # the ground truth layer is untouched, and the prompts are on screen
    np.testing.assert_array_equal(widget.ground_truth.value.data, labels)
    assert len(widget.image_layers.shapes_layer.data) >= 1
    widget.shutdown()


def test_screenshot_of_the_widget_in_use(make_napari_viewer, qtbot, tmp_path):
    """Real model on the synthetic phantom (free to publish), one slice prompted from the
    ground truth so the prompts show.  With SAMLUNG_WRITE_SCREENSHOT=1 a volume run follows
    and the picture is written to docs/images/widget.png."""
    image, labels = make_phantom()
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1280, 860)
    viewer, widget = build_viewer(image, labels, RunConfig(model_id="lite_medsam"), viewer=viewer)
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    mid = image.data.shape[0] // 2
    go_to_slice(viewer, image_layer(viewer), mid)
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
    assert widget.session.scores, widget.status.value
    write_docs = os.environ.get("SAMLUNG_WRITE_SCREENSHOT") == "1"
    if write_docs:  # the published picture also shows a volume run's summary
        widget.segment_volume_button.clicked()
        wait_idle(qtbot, widget, REAL_MODEL_WAIT_MS)
        assert "median" in widget.readout.value
    viewer.layers[widget.ground_truth.value.name].visible = False  # show the prediction
    viewer.reset_view()
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot.shape[0] > 400 and shot.shape[1] > 600
    rgb = shot[..., :3].astype(np.float32)
    assert rgb.std() > 20  # not blank
    # the canvas shows the image and the widget shows its controls: both halves vary
    left, right = rgb[:, : rgb.shape[1] // 2], rgb[:, rgb.shape[1] // 2 :]
    assert left.std() > 10 and right.std() > 10
    target = REPO / "docs" / "images" / "widget.png" if write_docs else tmp_path / "widget.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(shot).save(target)
    assert Path(target).stat().st_size > 10_000
    widget.shutdown()
