"""The widget under bad input, interruptions and long use (issue 5, widget half).

Each test fails when its behaviour regresses:

- bad input gives a napari notification, never an exception or a traceback dialog;
- the image and ground-truth layers are never modified;
- the user's paint in the output layer survives volume runs, window and model changes;
- a cancelled run leaves whole slices only; closing the viewer or removing layers
  mid-run stops the worker cleanly;
- exporting never overwrites a file without asking;
- 500 random prompt edits keep memory bounded (soak, marked slow).
"""

from __future__ import annotations

import dataclasses
import random
import socket
import threading
import time
import warnings

import numpy as np
import pytest
from napari_fixtures import (
    MID,
    PHANTOM_SHAPE,
    Gate,
    Recorder,
    add_points,
    box_vertices,
    capture_notifications,
    checksum,
    go_to_slice,
    image_layer,
    label_slices,
    messages,
    never_stop_early,
    rerun_and_cancel,
    tiny_factory,
    undo_steps,
    wait_idle,
)
from qtpy.QtCore import QEventLoop
from qtpy.QtWidgets import QApplication, QFileDialog

from napari_samlung._napari.launch import build_viewer
from napari_samlung._napari.widget import SamLungWidget
from napari_samlung.core.config import RunConfig
from napari_samlung.core.engine import Segmenter
from napari_samlung.core.models import REGISTRY
from napari_samlung.core.prompts import MAX_POINTS_PER_SLICE
from napari_samlung.io.phantom import make_phantom

pytestmark = pytest.mark.gui
N_SLICES = PHANTOM_SHAPE[0]
#: Undo steps a napari Labels layer keeps.
NAPARI_UNDO_LIMIT = 100
WAIT_S = 60
OPS = ["add point"] * 2 + ["move point", "delete point", "add box", "move box", "delete box"]
OPS += ["change slice"]


def _clear_prompts(wf) -> None:
    wf.points_layer.data = np.zeros((0, 3))
    wf.shapes_layer.data = []


# --------------------------------------------------------------------------- bad input


def test_bad_layers_are_notifications(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 3, 16, 16), np.int16), name="4d")
    with capture_notifications() as shown:
        widget = SamLungWidget(viewer, segmenter_factory=tiny_factory)
        assert "has 4 dimensions" in messages(shown, "error")
        assert "split channels or time points" in widget.status.value
        # an RGB image is segmented from its grey values, and says so
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[8:56, 6:30] = (200, 180, 160)
        viewer.add_image(rgb, name="photo", rgb=True)
        widget.image.value = viewer.layers["photo"]
        wait_idle(qtbot, widget)
        assert "'photo' is an RGB image: its grey values are segmented" in messages(shown, "info")
        widget.image_layers.points_layer.add([30, 18])
        wait_idle(qtbot, widget)
        assert widget.image_layers.writer.layer.data.any()
        assert widget.image_layers.writer.layer.data.shape == (64, 64)
        # a ground truth of another shape is refused
        viewer.add_labels(np.zeros((32, 32), np.uint8), name="small mask")
        widget.ground_truth.value = viewer.layers["small mask"]
        assert widget.ground_truth.value is None
    assert "'small mask' has shape (32, 32) but the image has shape (64, 64)" in messages(
        shown, "error"
    )
    assert not [m for s, m in shown if s == "error" and "Error:" in m]  # no raw exceptions
    widget.shutdown()


BAD_PROMPTS = {
    "outside": "point (row 32, col 90) lies outside the 64x64 slice",
    "degenerate box": "the box has zero width or height",
    "only negative": "only negative points on this slice",
    "too many": f"more than the limit of {MAX_POINTS_PER_SLICE}",
}


def _bad_prompt(wf, kind: str) -> None:
    if kind == "outside":
        add_points(wf.points_layer, MID, [[32, 18], [32, 90]])
    elif kind == "degenerate box":
        wf.shapes_layer.add_rectangles([box_vertices(MID, 20, 10, 20.3, 50)])
    elif kind == "only negative":
        add_points(wf.points_layer, MID, [[32, 18], [32, 46]], positive=[False, False])
    else:
        grid = [[r, c] for r in range(8, 56, 4) for c in range(8, 56, 8)][:65]
        add_points(wf.points_layer, MID, grid)


def test_bad_prompts_are_notifications(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    for kind, expected in BAD_PROMPTS.items():
        _clear_prompts(wf)
        wait_idle(qtbot, widget)
        with capture_notifications() as shown:
            _bad_prompt(wf, kind)
            wait_idle(qtbot, widget)
            assert expected in messages(shown, "warning"), kind
            # Propagate refuses the same prompts, naming the slice
            widget.propagate_button.clicked()
            wait_idle(qtbot, widget)
        refused = [m for s, m in shown if m.startswith(f"slice {MID}: ") and expected in m]
        assert refused, kind
        assert not [s for s, _ in shown if s == "error"], kind
        assert not wf.writer.layer.data.any(), kind


def test_missing_vit_b_weights_offline_is_a_notification(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    monkeypatch.setenv("SAMLUNG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SAMLUNG_CHECKPOINT_VIT_B", raising=False)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = dataclasses.replace(REGISTRY["vit_b"], url=f"http://127.0.0.1:{port}/sam_vit_b.pth")
    monkeypatch.setitem(REGISTRY, "vit_b", spec)
    viewer = make_napari_viewer()
    image, labels = make_phantom(PHANTOM_SHAPE)
    with capture_notifications() as shown:
        viewer, widget = build_viewer(image, labels, RunConfig(model_id="vit_b"), viewer=viewer)
        wait_idle(qtbot, widget)
        assert widget.session.model_id == "vit_b"
        widget.segment_slice_button.clicked()  # asking again retries and fails alike
        wait_idle(qtbot, widget)
        assert "model not available" in widget.status.value
        go_to_slice(viewer, image_layer(viewer), MID)
        wait_idle(qtbot, widget)
        add_points(widget.image_layers.points_layer, 3, [[32, 18]])  # not the slice on screen
        widget.propagate_button.clicked()
        wait_idle(qtbot, widget)
        assert widget.status.value == "propagation failed: see the notification"
        assert widget.propagate_button.enabled and not widget.cancel_button.enabled
    errors = messages(shown, "error")
    assert "could not download" in errors and "127.0.0.1" in errors
    assert "pass --checkpoint PATH" in errors
    assert errors.count("could not download") == 3  # each try says why, once
    assert not list((tmp_path / "checkpoints").glob("*.pth"))
    widget.shutdown()


def test_weights_download_shows_a_progress_bar(
    make_napari_viewer, qtbot, weights_cache, monkeypatch
):
    """First use of a downloadable model: a napari progress bar in MiB, then the model."""
    import io

    import torch

    from conftest import serve_bytes
    from napari_samlung._napari import workers as workers_module
    from random_sam import build_micro_random_sam

    buf = io.BytesIO()
    # padded past 3 MiB so that the download reports several steps
    torch.save({"model": build_micro_random_sam().state_dict(), "pad": torch.zeros(2**20)}, buf)
    payload = buf.getvalue()
    bars = []

    class RecordingProgress(workers_module.progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.closed_at = None
            bars.append(self)

        def close(self):
            self.closed_at = self.n
            super().close()

    monkeypatch.setattr(workers_module, "progress", RecordingProgress)
    statuses = []
    with serve_bytes(payload, "dl_micro.pth") as server:
        spec = dataclasses.replace(
            REGISTRY["micro_random"],
            id="dl_micro",
            url=server.url,
            filename="dl_micro.pth",
            needs_checkpoint=True,
            hidden=False,
        )
        monkeypatch.setitem(REGISTRY, "dl_micro", spec)
        viewer = make_napari_viewer()
        image, labels = make_phantom(PHANTOM_SHAPE)
        viewer, widget = build_viewer(image, labels, RunConfig(model_id="dl_micro"), viewer=viewer)
        show_status = widget.feedback.status  # reports arrive once the event loop runs

        def record(text):
            statuses.append(text)
            show_status(text)

        widget.feedback.status = record
        wait_idle(qtbot, widget)
    assert widget.session.model_loaded and widget.session.model_id == "dl_micro"
    assert (weights_cache / "checkpoints" / "dl_micro.pth").stat().st_size == len(payload)
    total_mib = -(-len(payload) // 2**20)
    [bar] = bars
    assert "dl_micro" in bar.desc and bar.total == total_mib
    assert bar.closed_at == total_mib  # filled, then closed
    assert any(f"weights: {total_mib} of {total_mib} MiB" in text for text in statuses)
    widget.shutdown()


# --------------------------------------------------------------------------- data safety


def test_image_and_truth_are_never_modified(phantom_widget, qtbot, tmp_path, monkeypatch):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    never_stop_early(widget)
    image, truth = image_layer(viewer), widget.ground_truth.value
    sums = (checksum(image), checksum(truth))
    data = (image.data, truth.data)
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "m.csv"), "")
    )

    def segment_slice():
        go_to_slice(viewer, image, MID)
        wait_idle(qtbot, widget)
        widget.segment_slice_button.clicked()

    def propagate():
        widget.propagate_button.clicked()

    steps = {
        "segment slice from ground truth": segment_slice,
        "volume run": widget.segment_volume_button.clicked,
        "propagate": propagate,
        "clear slice": widget.clear_button.clicked,
        "window change": lambda: widget.set_window(-500.0, 1400.0),
        "model change": lambda: setattr(widget.model, "value", "vit_b"),
        "paint the output": lambda: wf.writer.layer.paint((MID, 30, 30), 1),
        "export": widget.export_metrics,
    }
    for name, step in steps.items():
        step()
        wait_idle(qtbot, widget)
        assert (checksum(image), checksum(truth)) == sums, f"modified by {name}"
        assert image.data is data[0] and truth.data is data[1], f"replaced by {name}"
    assert (tmp_path / "m.csv").exists()


def test_paint_survives_window_and_model_changes(phantom_widget, qtbot):
    viewer, widget, recorder = phantom_widget
    wf = widget.image_layers
    go_to_slice(viewer, image_layer(viewer), MID)
    add_points(wf.points_layer, MID, [[32, 18], [32, 46]])
    wait_idle(qtbot, widget)
    output = wf.writer.layer
    assert output.data[MID].any()
    output.brush_size = 7
    output.paint((MID, 10, 32), 2)  # a correction on the prompted slice
    output.paint((2, 30, 30), 1)  # and paint on a slice without prompts
    painted = output.data.copy()
    calls = recorder.encoder_calls
    widget.set_window(-500.0, 1400.0)
    wait_idle(qtbot, widget)
    assert recorder.encoder_calls > calls  # the slice was embedded again
    np.testing.assert_array_equal(output.data, painted)
    widget.model.value = "vit_b"
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(output.data, painted)
    # changing the prompts is asking for a new segmentation of that slice
    add_points(wf.points_layer, MID, [[40, 20]])
    wait_idle(qtbot, widget)
    assert not np.array_equal(output.data[MID], painted[MID])
    np.testing.assert_array_equal(output.data[2], painted[2])


def test_volume_run_replaces_painted_slices_only_when_ticked(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    output = widget.image_layers.writer.layer
    output.brush_size = 5
    output.paint((MID, 30, 30), 2)
    painted = output.data[MID].copy()
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    np.testing.assert_array_equal(output.data[MID], painted)
    widget.overwrite_edited.value = True
    widget.segment_volume_button.clicked()
    wait_idle(qtbot, widget)
    assert not np.array_equal(output.data[MID], painted)
    assert MID not in widget.image_layers.writer.user_edited
    assert label_slices(output.data) == label_slices(widget.ground_truth.value.data)


def test_cancelled_volume_run_leaves_whole_slices(phantom_widget, qtbot):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    output = wf.writer.layer
    full, before = rerun_and_cancel(widget, qtbot, widget.segment_volume_button)
    changed = [z for z in range(N_SLICES) if not np.array_equal(output.data[z], before[z])]
    assert 2 <= len(changed) <= 3 < len(label_slices(full))
    for z in range(N_SLICES):
        assert np.array_equal(output.data[z], full[z]) or np.array_equal(output.data[z], before[z])
    assert "volume cancelled" in widget.status.value
    assert not widget.cancel_button.enabled and widget.segment_volume_button.enabled
    output.undo()  # the cancelled run is one undo step too
    np.testing.assert_array_equal(output.data, before)


# --------------------------------------------------------------------------- interruptions


def _start_gated_run(widget, qtbot, run: str) -> Gate:
    """Start a run that holds inside its second slice until the gate opens."""
    wf = widget.image_layers
    if run == "propagate":
        never_stop_early(widget)
        go_to_slice(widget.viewer, image_layer(widget.viewer), MID)
        add_points(wf.points_layer, MID, [[32, 18], [32, 46]])
        wait_idle(qtbot, widget)  # the interactive segmentation first: the gate counts the run
        gate = Gate(widget.session.segmenter(), free=1)
        widget.propagate_button.clicked()
    else:
        gate = Gate(widget.session.segmenter(), free=1)
        widget.segment_volume_button.clicked()
    assert widget.runs.running
    qtbot.waitUntil(lambda: widget.runs.slices_done >= 1, timeout=10_000)
    return gate


@pytest.mark.parametrize("run", ["volume", "propagate"])
def test_closing_the_viewer_mid_run_stops_cleanly(make_napari_viewer, qtbot, run):
    viewer = make_napari_viewer()
    image, labels = make_phantom(PHANTOM_SHAPE)
    viewer, widget = build_viewer(
        image, labels, RunConfig(), viewer=viewer, segmenter_factory=tiny_factory
    )
    wait_idle(qtbot, widget)
    with qtbot.capture_exceptions() as exceptions, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        gate = _start_gated_run(widget, qtbot, run)
        try:
            viewer.close()
            assert widget.closed  # the widget went away with the window
        finally:
            gate.open()
        qtbot.waitUntil(lambda: not widget.workers.busy, timeout=10_000)
        qtbot.wait(50)  # let late signals arrive
    assert exceptions == []
    assert not [w for w in warned if "deleted" in str(w.message)]
    assert not widget.runs.running and gate.calls <= 3  # stopped early


@pytest.mark.parametrize("close", ["viewer", "dock widget"])
def test_closing_mid_embedding_stops_cleanly(make_napari_viewer, qtbot, close):
    """Closing the viewer or the dock while a slice is embedded: no exception."""
    recorder = Recorder(tiny_factory)
    viewer = make_napari_viewer()
    image, labels = make_phantom(PHANTOM_SHAPE)
    viewer, widget = build_viewer(
        image, labels, RunConfig(), viewer=viewer, segmenter_factory=recorder
    )
    wait_idle(qtbot, widget)
    embedding = threading.Event()
    release = threading.Event()
    seg = recorder.built[-1]
    original = seg.embed

    def slow_embed(*args, **kwargs):
        embedding.set()
        release.wait(WAIT_S)
        return original(*args, **kwargs)

    seg.embed = slow_embed
    with qtbot.capture_exceptions() as exceptions, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        try:
            go_to_slice(viewer, image_layer(viewer), 1)  # a slice not embedded yet
            qtbot.waitUntil(embedding.is_set, timeout=10_000)
            assert widget.workers.busy and "embedding slice 1" in widget.status.value
            if close == "viewer":
                viewer.close()
            else:  # what the close button of napari's dock does
                viewer.window.remove_dock_widget(widget.native)
            assert widget.closed
        finally:
            release.set()
        qtbot.waitUntil(lambda: not widget.workers.busy, timeout=10_000)
        qtbot.wait(50)  # let late signals arrive
    assert exceptions == []
    assert not [w for w in warned if "deleted" in str(w.message)]  # nothing reached it late


@pytest.mark.parametrize("run", ["volume", "propagate"])
@pytest.mark.parametrize("layer", ["image", "output"])
def test_removing_a_layer_mid_run_stops_cleanly(phantom_widget, qtbot, run, layer):
    viewer, widget, _ = phantom_widget
    wf = widget.image_layers
    output = wf.writer.layer
    with qtbot.capture_exceptions() as exceptions:
        gate = _start_gated_run(widget, qtbot, run)
        written = output.data.copy()
        viewer.layers.remove(image_layer(viewer) if layer == "image" else output)
        gate.open()
        wait_idle(qtbot, widget)
    assert exceptions == []
    assert not widget.runs.running and gate.calls <= 3
    assert not widget.cancel_button.enabled
    np.testing.assert_array_equal(output.data, written)  # nothing written after the removal
    if layer == "output":
        # the next segmentation makes a new output layer
        go_to_slice(viewer, image_layer(viewer), MID)
        widget.segment_slice_button.clicked()
        wait_idle(qtbot, widget)
        assert wf.writer.layer is not output and wf.writer.layer in viewer.layers
        assert wf.writer.layer.data[MID].any()
    else:
        assert widget.image.value is None and wf.writer is None


def test_export_asks_before_replacing_a_file(phantom_widget, qtbot, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QMessageBox

    viewer, widget, _ = phantom_widget
    go_to_slice(viewer, image_layer(viewer), MID)
    wait_idle(qtbot, widget)
    widget.segment_slice_button.clicked()
    wait_idle(qtbot, widget)
    target = tmp_path / "scores.csv"
    target.write_text("keep me")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    questions = []

    def answer_no(parent, title, text, *args):
        questions.append(text)
        return QMessageBox.No

    monkeypatch.setattr(QMessageBox, "question", answer_no)
    assert widget.export_metrics() is None
    assert target.read_text() == "keep me"
    assert questions == [f"{target} exists. Replace it?"]
    monkeypatch.setattr(QMessageBox, "question", lambda *a: QMessageBox.Yes)
    assert widget.export_metrics() == target
    assert target.read_text().startswith("case,slice")


# --------------------------------------------------------------------------- soak


def _spin_until(predicate, timeout_s: float = 20.0) -> None:
    """Process Qt events until ``predicate()`` (faster than qtbot's 10 ms polling)."""
    app = QApplication.instance()
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not become idle")
        app.processEvents(QEventLoop.AllEvents, 5)
        time.sleep(0.0005)


@pytest.mark.slow
def test_soak_500_prompt_edits_keep_memory_bounded(make_napari_viewer, qtbot):
    limit_mb = 0.07  # two 64x64 embeddings of the micro model
    recorder = Recorder(
        lambda *args: Segmenter.from_registry(
            "micro_random", device="cpu", precision="fp32", cache_limit_mb=limit_mb
        )
    )
    viewer = make_napari_viewer()
    image, labels = make_phantom(PHANTOM_SHAPE)
    viewer, widget = build_viewer(
        image, labels, RunConfig(), viewer=viewer, segmenter_factory=recorder
    )
    wait_idle(qtbot, widget)
    widget.set_debounce(0)  # each edit is segmented at the next turn of the event loop
    wf = widget.image_layers
    img = image_layer(viewer)
    points, shapes, output = wf.points_layer, wf.shapes_layer, wf.writer.layer
    rng = random.Random(0)
    z = MID
    go_to_slice(viewer, img, z)
    edits: dict[str, int] = {}

    def rc():
        return [rng.uniform(2, 61), rng.uniform(2, 61)]

    with capture_notifications() as shown, qtbot.capture_exceptions() as exceptions:
        for _ in range(500):
            op = rng.choice(OPS)
            here = [i for i, p in enumerate(points.data) if round(p[0]) == z]
            boxes = [i for i, b in enumerate(shapes.data) if round(b[0][0]) == z]
            if op == "add point" or (op in ("move point", "delete point") and not here):
                op = "add point"
                add_points(points, z, [rc()], positive=[rng.random() < 0.8])
            elif op == "move point":
                data = np.asarray(points.data).copy()
                data[rng.choice(here), 1:] = rc()
                points.data = data
            elif op == "delete point":
                points.selected_data = {rng.choice(here)}
                points.remove_selected()
            elif op == "add box" or not boxes:
                op = "add box"
                (r0, c0), (r1, c1) = sorted([rc(), rc()])
                shapes.add_rectangles([box_vertices(z, r0, min(c0, c1), r1 + 2, max(c0, c1) + 2)])
            elif op == "move box":
                shapes.selected_data = {rng.choice(boxes)}
                shapes.remove_selected()
                (r0, c0), (r1, c1) = sorted([rc(), rc()])
                shapes.add_rectangles([box_vertices(z, r0, min(c0, c1), r1 + 2, max(c0, c1) + 2)])
            elif op == "delete box":
                shapes.selected_data = {rng.choice(boxes)}
                shapes.remove_selected()
            else:
                z = rng.randrange(N_SLICES)
                go_to_slice(viewer, img, z)
            edits[op] = edits.get(op, 0) + 1
            # deterministically: wait for the debounce and the workers after each edit
            _spin_until(lambda: not widget.busy)
            seg = recorder.built[-1]
            assert seg.cache_bytes <= seg.cache_limit_bytes
    assert undo_steps(output) <= NAPARI_UNDO_LIMIT  # the undo history stays bounded
    assert exceptions == []
    assert not [m for s, m in shown if s == "error"]
    assert min(edits.values()) >= 20, edits
    assert len(recorder.built) == 1 and recorder.built[0].encoder_calls > N_SLICES  # evictions
    assert not widget.workers.busy
    widget.shutdown()
