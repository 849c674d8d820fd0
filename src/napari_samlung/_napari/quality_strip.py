"""The per-slice quality strip of the dock, and the keys that jump to doubtful slices.

:class:`QualityStrip` draws one bar per slice (QPainter, no plotting library):
its height is the slice's quality (Dice with a ground truth, else agreement
with the CT's air, else the model's predicted IoU; see
:mod:`~napari_samlung._napari.quality`), green at or above
:data:`~napari_samlung._napari.quality.DOUBTFUL_BELOW`, orange or red below;
the slice on screen is marked, and a click goes to that slice.

:class:`QualityView` keeps the strip and its one-line caption up to date and
moves to the next or previous doubtful slice; the keys for that
(:data:`NEXT_DOUBTFUL_KEY`, :data:`PREVIOUS_DOUBTFUL_KEY`) are bound with the
widget's other keys in :mod:`~napari_samlung._napari.shortcuts`.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from .quality import DOUBTFUL_BELOW

NEXT_DOUBTFUL_KEY = "."
PREVIOUS_DOUBTFUL_KEY = ","
#: For the widget's tooltip.
KEYS_HELP = (
    f"Keys in the viewer: '{NEXT_DOUBTFUL_KEY}' next doubtful slice, "
    f"'{PREVIOUS_DOUBTFUL_KEY}' previous doubtful slice (Dice with a ground truth, else "
    f"agreement with the CT's air, else predicted IoU, below {DOUBTFUL_BELOW:.2f}). "
    "Click the quality strip to go to a slice."
)
#: The strip shows qualities from this value (empty bar) up to 1 (full bar).
FLOOR = 0.5
_GOOD, _DOUBTFUL, _BAD = QColor(80, 200, 120), QColor(240, 160, 40), QColor(230, 60, 60)


class QualityStrip(QWidget):
    """One bar per slice; ``on_pick(slice_index)`` is called on a click."""

    def __init__(self, on_pick: Callable[[int], None], parent=None) -> None:
        super().__init__(parent)
        self._on_pick = on_pick
        self._values: list[float | None] = []
        self._current: int | None = None
        self.setMinimumHeight(36)
        self.setMaximumHeight(44)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip(KEYS_HELP)

    @property
    def values(self) -> list[float | None]:
        """The quality of each slice (None: nothing written or known)."""
        return list(self._values)

    def set_values(self, values: list[float | None], current: int | None) -> None:
        """Show these qualities, with ``current`` marked."""
        if values != self._values or current != self._current:
            self._values, self._current = list(values), current
            self.update()

    def slice_at(self, x: float) -> int | None:
        """The slice whose bar is at ``x`` pixels from the left (None without slices)."""
        n = len(self._values)
        if n == 0:
            return None
        return min(max(int(x * n / max(self.width(), 1)), 0), n - 1)

    def x_of(self, slice_index: int) -> float:
        """The centre of a slice's bar, in pixels from the left."""
        return (slice_index + 0.5) * self.width() / max(len(self._values), 1)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt API
        position = event.position() if hasattr(event, "position") else event.pos()
        z = self.slice_at(position.x())
        if z is not None:
            self._on_pick(z)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        w, h = float(self.width()), float(self.height())
        painter.fillRect(QRectF(0, 0, w, h), QColor(38, 41, 48))
        n = len(self._values)
        if n == 0:
            return
        step = w / n
        for z, value in enumerate(self._values):
            if value is None:
                continue
            height = max(0.06, min(1.0, (value - FLOOR) / (1.0 - FLOOR))) * (h - 2)
            colour = _GOOD if value >= DOUBTFUL_BELOW else _DOUBTFUL
            if value < FLOOR + (DOUBTFUL_BELOW - FLOOR) / 2:
                colour = _BAD
            painter.fillRect(QRectF(z * step, h - height, max(step - 1, 1), height), colour)
        level = h - 2 - (DOUBTFUL_BELOW - FLOOR) / (1.0 - FLOOR) * (h - 2)
        painter.setPen(QPen(QColor(200, 200, 200, 140), 1, Qt.DashLine))
        painter.drawLine(QPointF(0, level), QPointF(w, level))
        if self._current is not None and 0 <= self._current < n:
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            x = self.x_of(self._current)
            painter.drawLine(QPointF(x, 0), QPointF(x, h))


class QualityView:
    """The strip and its caption for one widget; moves to doubtful slices.

    Parameters
    ----------
    viewer
        The napari viewer (its slice is moved).
    layers
        The :class:`~napari_samlung._napari.layers.ImageLayers` worked on.
    """

    def __init__(self, viewer, layers) -> None:
        self.viewer = viewer
        self.layers = layers
        self.session = layers.session
        self.strip = QualityStrip(self.go_to)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.caption.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.caption.setToolTip(KEYS_HELP)
        self.box = QWidget()
        layout = QVBoxLayout(self.box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.strip)
        layout.addWidget(self.caption)

    def refresh(self) -> None:
        """Show the qualities of the slices and the caption for the slice on screen."""
        session = self.session
        if self.layers.image_layer is None:
            self.strip.set_values([], None)
            self.caption.setText("")
            return
        scores = session.scores
        n = session.n_slices
        current = self.layers.current_slice()
        self.strip.set_values(session.quality.values(n, scores), current)
        doubtful = session.quality.doubtful(n, scores)
        parts = []
        if current is not None:
            parts.append(session.quality.describe(current, scores))
        if doubtful:
            parts.append(
                f"{len(doubtful)} doubtful (< {DOUBTFUL_BELOW:.2f}): '{NEXT_DOUBTFUL_KEY}' "
                f"next, '{PREVIOUS_DOUBTFUL_KEY}' previous"
            )
        self.caption.setText(" · ".join(parts))

    def go_to(self, slice_index: int) -> None:
        """Show ``slice_index`` of the image in the viewer."""
        layer = self.layers.image_layer
        if layer is None or self.session.is_2d:
            return
        dims = self.viewer.dims
        world = layer.data_to_world([int(slice_index), 0, 0])
        dims.set_point(dims.ndim - 3, float(world[0]))

    def go_doubtful(self, step: int) -> int | None:
        """Go to the next (``step`` +1) or previous (-1) doubtful slice; returns it or None."""
        current = self.layers.current_slice()
        if current is None:
            return None
        session = self.session
        target = session.quality.next_doubtful(current, step, session.n_slices, session.scores)
        if target is None:
            where = "after" if step > 0 else "before"
            self.viewer.status = f"no doubtful slice {where} slice {current}"
            return None
        self.go_to(target)
        return target
