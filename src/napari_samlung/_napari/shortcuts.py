"""Keyboard shortcuts of the dock widget, bound on the viewer while the widget is open.

The keys avoid napari's own (single letters switch layer modes, ``[``/``]`` the
brush size).  Every key the widget binds is here, given back on close.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .prompt_layers import read_slice_prompts
from .quality_strip import NEXT_DOUBTFUL_KEY, PREVIOUS_DOUBTFUL_KEY

#: (key, what it does, method of :class:`Shortcuts`).
SHORTCUTS: tuple[tuple[str, str, str], ...] = (
    ("Shift-S", "segment the slice (its prompts, else the ground truth)", "segment_slice"),
    ("Shift-G", "propagate from the prompted slices", "propagate"),
    ("Shift-C", "clear the slice", "clear_slice"),
    ("Shift-Right", "next slice with lung", "next_lung"),
    ("Shift-Left", "previous slice with lung", "previous_lung"),
    ("Shift-B", "switch between the box and point tools", "switch_tool"),
    (NEXT_DOUBTFUL_KEY, "next doubtful slice", "next_doubtful"),
    (PREVIOUS_DOUBTFUL_KEY, "previous doubtful slice", "previous_doubtful"),
)


def shortcuts_help() -> str:
    """All the widget's keys, one per line (the widget's tooltip and the README)."""
    lines = [f"{key}: {what}" for key, what, _ in SHORTCUTS]
    lines.append("click the quality strip: go to that slice")
    return "Keys in the viewer:\n" + "\n".join(lines)


def next_with_lung(has_lung: np.ndarray, current: int, step: int) -> int | None:
    """The nearest slice after (``step`` +1) or before (-1) ``current`` with lung, or None."""
    found = np.flatnonzero(has_lung)
    found = found[found > current] if step > 0 else found[found < current][::-1]
    return int(found[0]) if len(found) else None


class Shortcuts:
    """Binds :data:`SHORTCUTS` on the viewer for the widget ``w``; :meth:`close` unbinds them."""

    def __init__(self, w) -> None:
        self.w = w
        self.viewer = w.viewer
        self._previous: dict[str, Callable | None] = {}
        for key, _, method in SHORTCUTS:
            action = getattr(self, method)
            self._previous[key] = self.viewer.bind_key(
                key, lambda viewer=None, action=action: action(), overwrite=True
            )

    # ---------------------------------------------------------------- actions

    def _busy(self) -> bool:
        if self.w.runs.running:
            self.viewer.status = "a run is going: Cancel it first"
            return True
        return False

    def segment_slice(self) -> None:
        """Segment the slice on screen now: from its prompts, else from the ground truth."""
        w = self.w
        layers = w.image_layers
        z = layers.current_slice()
        if z is None or self._busy():
            return
        here = read_slice_prompts(layers.points_layer, layers.shapes_layer, z)
        if not here.empty:
            w.interactive.segment_again(z)
        elif w.ground_truth.value is not None:
            w.interactive.segment_slice_from_truth()
        else:
            self.viewer.status = (
                f"slice {z} has no prompts: draw a box (or points) first, or choose a ground truth"
            )

    def propagate(self) -> None:
        """The "Propagate" button."""
        if not self._busy():
            self.w.runs.propagate(self.w.overwrite_edited.value)

    def clear_slice(self) -> None:
        """The "Clear slice" button."""
        if not self._busy():
            self.w.interactive.clear_slice()

    def next_doubtful(self) -> int | None:
        """Go to the next doubtful slice (the quality strip's rule); returns it (or None)."""
        return self.w.quality_view.go_doubtful(+1)

    def previous_doubtful(self) -> int | None:
        """Go to the previous doubtful slice; returns it (or None)."""
        return self.w.quality_view.go_doubtful(-1)

    def next_lung(self) -> int | None:
        """Go to the next slice with lung; returns it (or None)."""
        return self._go_lung(+1)

    def previous_lung(self) -> int | None:
        """Go to the previous slice with lung; returns it (or None)."""
        return self._go_lung(-1)

    def _go_lung(self, step: int) -> int | None:
        w = self.w
        current = w.image_layers.current_slice()
        if current is None or w.session.is_2d:
            return None
        has_lung = self.lung_slices()
        if has_lung is None:
            self.viewer.status = "no lung yet: segment first (or choose a ground truth)"
            return None
        target = next_with_lung(has_lung, current, step)
        if target is None:
            where = "after" if step > 0 else "before"
            self.viewer.status = f"no slice with lung {where} slice {current}"
            return None
        w.quality_view.go_to(target)
        return target

    def lung_slices(self) -> np.ndarray | None:
        """Per slice: has lung in the output labels, else in the ground truth (None: neither)."""
        w = self.w
        n = w.session.n_slices
        sources = []
        if w.image_layers.writer is not None:
            sources.append(w.image_layers.writer.layer.data)
        if w.ground_truth.value is not None:
            sources.append(w.ground_truth.value.data)
        for data in sources:
            data = np.asarray(data)
            if data.size and data.shape[0] == n and data.any():
                return data.reshape(n, -1).any(axis=1)
        return None

    def switch_tool(self) -> str | None:
        """Switch between adding boxes and adding points; returns the active tool's layer kind."""
        layers = self.w.image_layers
        points, shapes = layers.points_layer, layers.shapes_layer
        if points is None or shapes is None:
            return None
        selection = self.viewer.layers.selection
        if selection.active is shapes:
            selection.active = points
            points.mode = "add"
            if not self.w.session.accepts_points:
                self.viewer.status = "this model takes boxes only: points are not used"
            return "points"
        selection.active = shapes
        shapes.mode = "add_rectangle"
        return "boxes"

    def close(self) -> None:
        """Give the keys back to what they did before."""
        for key, previous in self._previous.items():
            self.viewer.bind_key(key, previous, overwrite=True)
        self._previous = {}
