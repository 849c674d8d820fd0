"""What napari docks: a light widget that appears at once and builds the real one when
PyTorch is loaded.

Importing the widget imports PyTorch (seconds on a laptop).  Done on napari's
main thread, docking froze the window for 3-4.6 s.  :class:`SamLungDock`
shows a "loading" line instead, imports the widget's modules in a helper
thread, and puts :class:`~napari_samlung._napari.widget.SamLungWidget` in
itself once they are there (its construction is quick).  The import still
takes Python's global lock while PyTorch's C libraries load, so the window can
pause briefly; ``benchmarks/ui_stalls.py`` measures it.
"""

from __future__ import annotations

import importlib
import threading
import time

from napari.viewer import Viewer
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

#: The module that imports PyTorch.
WIDGET_MODULE = "napari_samlung._napari.widget"
POLL_MS = 50


def import_in_background(module: str = WIDGET_MODULE) -> threading.Thread:
    """Start importing ``module`` in a daemon thread; returns the thread."""
    thread = threading.Thread(
        target=importlib.import_module, args=(module,), name="samlung-import", daemon=True
    )
    thread.start()
    return thread


class SamLungDock(QWidget):
    """The dock widget napari makes: "loading…", then the real widget (``.widget``)."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer  # napari passes the viewer by this parameter name
        self.widget = None
        self.started = time.perf_counter()
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._label = QLabel("loading the SAM lung widget (PyTorch)…")
        self._label.setWordWrap(True)
        self._layout.addWidget(self._label)
        self._layout.addStretch(1)
        self._thread = import_in_background()
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._check)
        self._timer.start()
        self.destroyed.connect(self._timer.stop)

    def _check(self) -> None:
        if self._thread.is_alive():
            return
        self._timer.stop()
        try:
            from .widget import SamLungWidget

            self.widget = SamLungWidget(self.viewer)
        except Exception as exc:  # the import failed in the thread: say why, here
            from napari.utils.notifications import show_error

            self._label.setText(f"napari-samlung could not start: {type(exc).__name__}: {exc}")
            show_error(f"napari-samlung could not start: {exc}")
            return
        self._label.hide()
        self._layout.insertWidget(0, self.widget.native)
        from .workers import stop_with

        stop_with(self, self.widget.shutdown)  # napari's close button takes *this* out

    @property
    def ready(self) -> bool:
        """True once the real widget is in."""
        return self.widget is not None
