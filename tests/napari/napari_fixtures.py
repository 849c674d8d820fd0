"""Helpers for the napari tests: tiny models, a widget on the phantom, waiting for workers.

Import torch's optional stack here, at collection time: on machines without
an OpenGL driver napari's canvas loads Mesa's LLVM, and importing triton
(via torchvision) after that crashes the process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import segment_anything  # noqa: F401  (see the module docstring)
import torchvision  # noqa: F401  (see the module docstring)

from napari_samlung.core.config import RunConfig
from napari_samlung.core.engine import Segmenter
from napari_samlung.core.models import REGISTRY, get_spec, register_model
from napari_samlung.core.propagation import PropagationSettings
from napari_samlung.io.phantom import make_phantom

DATA_DIR = Path(
    os.environ.get("SAMLUNG_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")
)
REPO = Path(__file__).resolve().parents[2]
BOX_ONLY_ID = "tiny_box_only"
WAIT_MS = 60_000
#: A small phantom keeps the tests fast: 6 of its 8 slices have lung.
PHANTOM_SHAPE = (8, 64, 64)
MID = 4  # a slice with both lungs
LUNG_SLICES = [1, 2, 3, 4, 5, 6]


def tiny_factory(model_id=None, checkpoint=None, device=None, progress=None) -> Segmenter:
    """Segmenter factory for widget tests: the micro random model (256 px), on the CPU."""
    return Segmenter.from_registry("micro_random", device="cpu", precision="fp32")


def box_only_factory(model_id=None, checkpoint=None, device=None, progress=None) -> Segmenter:
    """A tiny random model that, like LiteMedSAM, takes boxes only."""
    if BOX_ONLY_ID not in REGISTRY:
        register_model(
            dataclasses.replace(
                get_spec("micro_random"), id=BOX_ONLY_ID, accepts_points=False, hidden=True
            )
        )
    return Segmenter.from_registry(BOX_ONLY_ID, device="cpu", precision="fp32")


class Recorder:
    """Keeps every segmenter a factory built (to count encoder calls)."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.built: list[Segmenter] = []

    def __call__(self, model_id, checkpoint, device, progress=None) -> Segmenter:
        seg = self.factory(model_id, checkpoint, device)
        self.built.append(seg)
        return seg

    @property
    def encoder_calls(self) -> int:
        return sum(s.encoder_calls for s in self.built)


def wait_idle(qtbot, widget, timeout: int = WAIT_MS) -> None:
    """Wait until no worker runs and no debounce timer is pending."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def fast_debounce(widget, ms: int = 10) -> None:
    """Shorten the widget's debounce timers: the tests wait for them after every edit."""
    widget.set_debounce(ms)


def go_to_slice(viewer, layer, slice_index: int) -> None:
    """Move the viewer to ``slice_index`` of ``layer`` (in world coordinates)."""
    world = layer.data_to_world([slice_index, 0, 0])
    viewer.dims.set_point(0, float(world[0]))


def phantom_widget_fixture(make_napari_viewer, qtbot):
    """Body of a fixture yielding (viewer, widget, recorder): phantom, ground truth, tiny model.

    Use as ``yield from phantom_widget_fixture(make_napari_viewer, qtbot)``; the tests
    request it as the ``phantom_widget`` fixture of conftest.py.
    """
    from napari_samlung._napari.launch import build_viewer

    viewer = make_napari_viewer()
    image, labels = make_phantom(PHANTOM_SHAPE)
    recorder = Recorder(tiny_factory)
    viewer, widget = build_viewer(
        image, labels, RunConfig(model_id="lite_medsam"), viewer=viewer, segmenter_factory=recorder
    )
    fast_debounce(widget)
    wait_idle(qtbot, widget)
    yield viewer, widget, recorder
    wait_idle(qtbot, widget)
    widget.shutdown()


def image_layer(viewer):
    from napari.layers import Image

    return next(layer for layer in viewer.layers if isinstance(layer, Image))


def label_slices(data: np.ndarray) -> list[int]:
    flat = np.asarray(data).reshape(data.shape[0], -1)
    return [int(z) for z in np.flatnonzero(flat.any(axis=1))]


#: Propagation settings that never stop early: the random test models score low.
PERMISSIVE = PropagationSettings(min_area_px=1, min_score=-math.inf, max_area_change=1e9)


def never_stop_early(widget) -> None:
    """Let the widget's propagations walk to the ends of the volume: permissive stop rules
    (:data:`PERMISSIVE`) and no guard by the CT's air (the phantom's air ends with its lung)."""
    widget.runs.propagation_settings = PERMISSIVE
    widget.runs.guard_with_candidates = False


@contextmanager
def capture_notifications():
    """Collect ``(severity, message)`` of every napari notification shown meanwhile."""
    from napari.utils.notifications import notification_manager

    shown: list[tuple[str, str]] = []

    def record(notification) -> None:
        shown.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(record)
    try:
        yield shown
    finally:
        notification_manager.notification_ready.disconnect(record)


def messages(shown, severity: str | None = None) -> str:
    """All captured messages (of one severity) as one text, for ``in`` checks."""
    return "\n".join(m for s, m in shown if severity is None or s == severity)


def checksum(layer) -> str:
    """Hash of a layer's data bytes, shape and dtype."""
    data = np.ascontiguousarray(np.asarray(layer.data))
    digest = hashlib.sha256(data.tobytes())
    digest.update(repr((data.shape, data.dtype.str)).encode())
    return digest.hexdigest()


class Gate:
    """Holds a segmenter's predictions after the first ``free`` ones until ``open()``.

    Makes "in the middle of a run" deterministic: the worker waits inside its
    next prediction while the test acts on the viewer.
    """

    def __init__(self, segmenter: Segmenter, free: int = 1) -> None:
        self._event = threading.Event()
        self._free = free
        self.calls = 0
        original = segmenter.predict

        def predict(*args, **kwargs):
            self.calls += 1
            if self.calls > self._free:
                self._event.wait(WAIT_MS / 1000)
            return original(*args, **kwargs)

        segmenter.predict = predict

    def open(self) -> None:
        self._event.set()


class PredictionCounter:
    """Counts a segmenter's predictions (one per segmented slice)."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.calls = 0
        original = segmenter.predict

        def predict(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        segmenter.predict = predict


def undo_steps(layer) -> int:
    """How many times Ctrl-Z changes ``layer``'s data (undoes them all; redo puts them back)."""
    steps = 0
    while True:
        before = np.array(layer.data, copy=True)
        layer.undo()
        if np.array_equal(layer.data, before):
            break
        steps += 1
    for _ in range(steps):
        layer.redo()
    return steps


def rerun_and_cancel(widget, qtbot, button) -> tuple[np.ndarray, np.ndarray]:
    """Run ``button``'s long run to the end, undo it, run it again and press Cancel
    while the worker waits in its third slice.  Returns ``(full, before)``: the
    output of the whole run, and the output before the cancelled one."""
    button.clicked()
    wait_idle(qtbot, widget)
    output = widget.image_layers.writer.layer
    full = output.data.copy()
    output.undo()
    before = output.data.copy()
    gate = Gate(widget.session.segmenter(), free=2)  # the worker waits in its third slice
    button.clicked()
    qtbot.waitUntil(lambda: widget.runs.slices_done == 2, timeout=10_000)
    widget.cancel_button.clicked()
    gate.open()
    wait_idle(qtbot, widget)
    return full, before


@dataclasses.dataclass
class MouseEvent:
    """A mouse event as napari's own layer tests make them."""

    type: str
    position: tuple
    modifiers: list = dataclasses.field(default_factory=list)
    is_dragging: bool = False
    pos: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))
    view_direction: list | None = None
    up_direction: list | None = None
    dims_displayed: list = dataclasses.field(default_factory=lambda: [1, 2])


def click(layer, data_position, modifiers=()) -> None:
    """Press and release the mouse on ``layer`` at ``data_position`` (as a user does)."""
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    world = tuple(float(v) for v in layer.data_to_world(data_position))
    dims = list(range(len(world) - 2, len(world)))
    for kind, callbacks in (
        ("mouse_press", mouse_press_callbacks),
        ("mouse_release", mouse_release_callbacks),
    ):
        callbacks(layer, MouseEvent(kind, world, list(modifiers), dims_displayed=dims))


def add_points(layer, slice_index: int, rows_cols, positive=None) -> None:
    """Add points on one slice of a 3D Points layer (all positive unless told)."""
    rows_cols = np.asarray(rows_cols, float).reshape(-1, 2)
    positive = [True] * len(rows_cols) if positive is None else list(positive)
    old = np.asarray(layer.data, float).reshape(-1, layer.ndim)
    old_pos = layer.features["positive"].tolist() if len(old) else []
    new = np.column_stack([np.full(len(rows_cols), float(slice_index)), rows_cols])
    layer.data = np.concatenate([old, new])
    layer.features = pd.DataFrame({"positive": [bool(p) for p in old_pos + positive]})


def box_vertices(slice_index: int, r0: float, c0: float, r1: float, c1: float) -> np.ndarray:
    """A napari rectangle on one slice of a 3D Shapes layer."""
    z = float(slice_index)
    return np.array([[z, r0, c0], [z, r0, c1], [z, r1, c1], [z, r1, c0]], float)


def dicom_widget(make_napari_viewer, qtbot, series: Path):
    """(viewer, widget, truth): the widget on a DICOM series read from ``series``, with a
    two-lung ground truth on slices 1-3 and the tiny model."""
    from napari_samlung._napari.launch import build_viewer
    from napari_samlung.io import read_image

    image = read_image(series)
    truth = np.zeros(image.data.shape, np.uint8)
    truth[1:4, 3:9, 2:7] = 2
    truth[1:4, 3:9, 9:14] = 1
    viewer, widget = build_viewer(
        image,
        truth,
        RunConfig(model_id="lite_medsam"),
        viewer=make_napari_viewer(),
        segmenter_factory=Recorder(tiny_factory),
    )
    wait_idle(qtbot, widget)
    return viewer, widget, truth
