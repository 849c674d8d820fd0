"""Helpers for the napari tests: tiny models, a widget on the phantom, waiting for workers.

Import torch's optional stack here, at collection time: on machines without
an OpenGL driver napari's canvas loads Mesa's LLVM, and importing triton
(via torchvision) after that crashes the process.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import segment_anything  # noqa: F401  (see the module docstring)
import torchvision  # noqa: F401  (see the module docstring)

from napari_samlung.core.engine import Segmenter
from napari_samlung.core.models import REGISTRY, get_spec, register_model
from napari_samlung.io.phantom import make_phantom
from napari_samlung.runner import RunConfig

DATA_DIR = Path(
    os.environ.get("SAMLUNG_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)
REPO = Path(__file__).resolve().parents[1]
BOX_ONLY_ID = "tiny_box_only"
WAIT_MS = 60_000
#: A small phantom keeps the tests fast: 6 of its 8 slices have lung.
PHANTOM_SHAPE = (8, 64, 64)
MID = 4  # a slice with both lungs
LUNG_SLICES = [1, 2, 3, 4, 5, 6]


def tiny_factory(model_id=None, checkpoint=None, device=None) -> Segmenter:
    """Segmenter factory for widget tests: the tiny random model, on the CPU."""
    return Segmenter.from_registry("tiny_random", device="cpu", precision="fp32")


def box_only_factory(model_id=None, checkpoint=None, device=None) -> Segmenter:
    """A tiny random model that, like LiteMedSAM, takes boxes only."""
    if BOX_ONLY_ID not in REGISTRY:
        register_model(
            dataclasses.replace(
                get_spec("tiny_random"), id=BOX_ONLY_ID, accepts_points=False, hidden=True
            )
        )
    return Segmenter.from_registry(BOX_ONLY_ID, device="cpu", precision="fp32")


class Recorder:
    """Keeps every segmenter a factory built (to count encoder calls)."""

    def __init__(self, factory) -> None:
        self.factory = factory
        self.built: list[Segmenter] = []

    def __call__(self, model_id, checkpoint, device) -> Segmenter:
        seg = self.factory(model_id, checkpoint, device)
        self.built.append(seg)
        return seg

    @property
    def encoder_calls(self) -> int:
        return sum(s.encoder_calls for s in self.built)


def wait_idle(qtbot, widget, timeout: int = WAIT_MS) -> None:
    """Wait until no worker runs and no debounce timer is pending."""
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def go_to_slice(viewer, layer, slice_index: int) -> None:
    """Move the viewer to ``slice_index`` of ``layer`` (in world coordinates)."""
    world = layer.data_to_world([slice_index, 0, 0])
    viewer.dims.set_point(0, float(world[0]))


def phantom_widget_fixture(make_napari_viewer, qtbot):
    """Body of a fixture yielding (viewer, widget, recorder): phantom, ground truth, tiny model.

    Use as ``yield from phantom_widget_fixture(make_napari_viewer, qtbot)``.
    """
    from napari_samlung._napari.launch import build_viewer

    viewer = make_napari_viewer()
    image, labels = make_phantom(PHANTOM_SHAPE)
    recorder = Recorder(tiny_factory)
    viewer, widget = build_viewer(
        image, labels, RunConfig(model_id="lite_medsam"), viewer=viewer, segmenter_factory=recorder
    )
    wait_idle(qtbot, widget)
    yield viewer, widget, recorder
    wait_idle(qtbot, widget)
    widget.close_workflow()


def image_layer(viewer):
    from napari.layers import Image

    return next(layer for layer in viewer.layers if isinstance(layer, Image))


def label_slices(data: np.ndarray) -> list[int]:
    flat = np.asarray(data).reshape(data.shape[0], -1)
    return [int(z) for z in np.flatnonzero(flat.any(axis=1))]
