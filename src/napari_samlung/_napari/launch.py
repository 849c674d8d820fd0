"""The main job's window: napari with the image, its ground truth and the widget docked."""

from __future__ import annotations

import numpy as np

from ..core.config import RunConfig
from ..io import ImageData
from ..io.names import strip_suffix
from .reader import image_tuple, labels_tuple

WIDGET_NAME = "SAM lung segmentation"


def build_viewer(
    image: ImageData,
    labels: np.ndarray | None,
    config: RunConfig,
    *,
    viewer=None,
    segmenter_factory=None,
):
    """Add ``image`` (and ``labels`` as ground truth) to a viewer and dock the widget.

    Returns ``(viewer, widget)``.  A new viewer is made when none is given.
    """
    import napari

    from .widget import SamLungWidget

    if viewer is None:
        viewer = napari.Viewer(title="napari-samlung")
    name = strip_suffix(image.source_path.name) if image.source_path is not None else "phantom"
    data, kwargs, _ = image_tuple(image, name)
    viewer.add_image(data, **kwargs)
    if labels is not None:
        data, kwargs, _ = labels_tuple(labels, image, f"{name} ground truth")
        viewer.add_labels(data, **kwargs)
    widget = SamLungWidget(viewer, segmenter_factory=segmenter_factory, config=config)
    viewer.window.add_dock_widget(widget, name=WIDGET_NAME, area="right")
    return viewer, widget


def open_viewer(image: ImageData, labels: np.ndarray | None, config: RunConfig) -> None:
    """Open napari with the image, its labels as ground truth and the widget; run it."""
    import napari

    build_viewer(image, labels, config)
    napari.run()
