"""The main job's window: napari with the image, its ground truth and the widget docked.

``napari-samlung demo`` on a desktop opens it (:func:`open_viewer`), segments
the volume from the ground truth at once, as the headless demo does, and prints
the same Table-1 style summary on stdout.  Without a Qt binding it says which
pip command installs one (:func:`qt_problem`) and the demo runs headless.
"""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

from ..core.config import RunConfig
from ..io import ImageData
from ..io.names import strip_suffix
from .reader import image_tuple, labels_tuple

WIDGET_NAME = "SAM lung segmentation"
#: The one line the demo prints when napari has no Qt binding to open a window with.
QT_MISSING = (
    "no Qt binding is installed, so napari cannot open a window; install one with "
    "'pip install PyQt6' (from the source folder: pip install \".[qt]\")"
)


def qt_problem() -> str | None:
    """Why napari cannot open a window here (no Qt binding), or None when it can."""
    try:
        import qtpy  # noqa: F401  (raises when no binding is installed)
    except ImportError:
        return QT_MISSING
    return None


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


def segment_and_report(widget, out: TextIO | None = None) -> bool:
    """Segment the volume from the ground truth in the widget; print the summary when done.

    The summary is the Table-1 style table the headless demo prints.  Returns
    False when the run did not start (no ground truth; a notification says why).
    """
    runs = widget.runs

    def report() -> None:
        runs.volume_listeners.remove(report)
        print(widget.session.summary().format_table(), file=out or sys.stdout, flush=True)

    runs.volume_listeners.append(report)
    if runs.segment_volume_from_truth():
        return True
    runs.volume_listeners.remove(report)
    return False


def open_viewer(image: ImageData, labels: np.ndarray | None, config: RunConfig) -> None:
    """Open napari with the image, its labels as ground truth and the widget; run it.

    With labels, the volume is segmented from them as soon as the window shows.
    """
    import napari

    _, widget = build_viewer(image, labels, config)
    if labels is not None:
        segment_and_report(widget)
    napari.run()
