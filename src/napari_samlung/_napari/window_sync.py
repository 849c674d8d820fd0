"""The CT window: the widget's level/width/preset controls and the image's contrast limits, in sync.

What the user sees is what the model gets.  :class:`WindowSync` keeps three
things equal: the session's :class:`~napari_samlung.core.windowing.Window`,
the level/width/preset controls, and the image layer's contrast limits
(``level -/+ width / 2``, in Hounsfield units).  Moving any of them moves the
others; edits are debounced (:attr:`WindowSync.debounce`) so that dragging
a slider re-embeds once.

When the widget takes an image (:meth:`WindowSync.adopt`), one rule decides
which window wins: a display window our reader set on the layer is kept (it
becomes the model's window), unless the run's configuration named a window;
otherwise the session's window is applied to the layer.  8-bit data (X-rays,
pre-windowed CT) is used as it is: the controls are disabled.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from napari.utils.notifications import show_info, show_warning

from ..core.windowing import WINDOW_PRESETS, Window
from .layers import has_reader_window
from .session import LungSession
from .workers import Debounce

#: The preset control's entry for a window that matches no preset.
CUSTOM = "custom"
#: Quiet time (ms) after the last level/width/contrast change before the window is applied.
WINDOW_DEBOUNCE_MS = 300


def preset_name(level: float, width: float) -> str:
    """The preset whose level and width these are, else :data:`CUSTOM`."""
    for name, values in WINDOW_PRESETS.items():
        if values is not None and math.isclose(values[0], level) and math.isclose(values[1], width):
            return name
    return CUSTOM


class WindowSync:
    """Keeps the session's window, the window controls and the image's contrast in step.

    Parameters
    ----------
    session
        Holds the window the model uses.
    preset, level, width
        The magicgui controls (preset ComboBox, level and width FloatSpinBoxes, in HU).
    on_window_changed
        Called (main thread) after the session's window changed, to re-embed.
    explicit
        The configuration named a window: it wins over the reader's display window.
    """

    def __init__(
        self,
        session: LungSession,
        preset,
        level,
        width,
        on_window_changed: Callable[[], None],
        explicit: bool = False,
    ) -> None:
        self.session = session
        self.preset, self.level, self.width = preset, level, width
        self.on_window_changed = on_window_changed
        self.explicit = explicit
        self._layer = None  # the image layer whose contrast limits we follow
        self._updating = False
        self._applying_contrast = False
        #: Quiet time after the last level/width/contrast change before it applies.
        self.debounce = Debounce(WINDOW_DEBOUNCE_MS, self.apply_controls)
        preset.changed.connect(self._on_preset)
        level.changed.connect(self._on_level_width)
        width.changed.connect(self._on_level_width)

    def close(self) -> None:
        """Stop the debounce and stop following the image's contrast limits."""
        self.debounce.close()
        self._follow(None)

    # ------------------------------------------------------------------ the image

    def adopt(self, layer) -> None:
        """Follow ``layer`` (None: no image) and decide its window: the one rule of the module."""
        self._follow(None)
        if layer is None:
            return
        enabled = self.session.windowable
        for widget in (self.preset, self.level, self.width):
            widget.enabled = enabled
            widget.tooltip = (
                "CT window in Hounsfield units; it sets the image's contrast limits, "
                "and moving those sets the window"
                if enabled
                else "8-bit data is used as it is: no window"
            )
        self._blank(not enabled)
        if enabled and not self.explicit and has_reader_window(layer):
            window = self._from_limits(*layer.contrast_limits)
            self.session.window = window
            self.show(window)
        else:
            if enabled:
                self.show(self.session.window)
                self._say_if_changed(layer)
            self.apply_contrast(layer)
        self._follow(layer)

    def _say_if_changed(self, layer) -> None:
        """Say so when the display window of ``layer`` is about to change to the model's."""
        limits = self.session.effective_window().limits_hu
        if limits is None or getattr(layer, "rgb", False):
            return
        old = [float(v) for v in layer.contrast_limits]
        if all(math.isclose(a, b, abs_tol=1.0) for a, b in zip(old, limits, strict=True)):
            return
        window = self.session.window
        show_info(
            f"{layer.name}: display set to the '{self.preset.value}' window "
            f"(level {window.level:g}, width {window.width:g} HU; was {old[0]:g}..{old[1]:g}), "
            "the window the model sees; change it under 'window'"
        )

    def _blank(self, blank: bool) -> None:
        """Show no level or width (a dash) while there is no window (8-bit X-rays)."""
        self._updating = True
        try:
            for spin in (self.level, self.width):
                spin.native.setSpecialValueText("–" if blank else "")
                if blank:
                    spin.value = spin.min
        finally:
            self._updating = False

    def _follow(self, layer) -> None:
        """Follow ``layer``'s contrast limits (and stop following the previous layer's)."""
        if self._layer is not None:
            self._layer.events.contrast_limits.disconnect(self._on_contrast_limits)
            self._layer = None
        if layer is not None and not getattr(layer, "rgb", False):
            layer.events.contrast_limits.connect(self._on_contrast_limits)
            self._layer = layer

    def apply_contrast(self, layer=None) -> None:
        """Set the image's contrast limits to the session's window (not for 8-bit data)."""
        layer = self._layer if layer is None else layer
        limits = self.session.effective_window().limits_hu
        if layer is not None and limits is not None and not getattr(layer, "rgb", False):
            self._applying_contrast = True
            try:
                layer.contrast_limits = limits
            finally:
                self._applying_contrast = False

    def _from_limits(self, low: float, high: float) -> Window:
        """The window whose limits are ``low``..``high`` (HU), within the controls' ranges."""
        level = min(max((low + high) / 2.0, self.level.min), self.level.max)
        width = min(max(high - low, self.width.min), self.width.max)
        return Window(level, width, self.session.window.normalization)

    def _on_contrast_limits(self, event=None) -> None:
        """The user moved the image's contrast limits: what they see becomes the CT
        window the model sees (debounced like the level/width controls)."""
        if self._applying_contrast or self._updating or self._layer is None:
            return
        if self.session.effective_window().limits_hu is None:
            return  # 8-bit data: no window to follow
        window = self._from_limits(*(float(v) for v in self._layer.contrast_limits))
        if math.isclose(window.level, self.level.value) and math.isclose(
            window.width, self.width.value
        ):
            return
        self.show(window)
        self.debounce.start()

    # ------------------------------------------------------------------ the controls

    def show(self, window: Window) -> None:
        """Show ``window`` in the controls without running their handlers."""
        if window.is_none:
            return
        self._updating = True
        try:
            self.level.value = window.level
            self.width.value = window.width
            self.preset.value = preset_name(window.level, window.width)
        finally:
            self._updating = False

    def set_window(self, level: float, width: float) -> None:
        """Set the CT window (as the level/width controls do) and apply it now."""
        self.show(Window(level, width, self.session.window.normalization))
        self.apply_controls()

    def use_default(self, window: Window) -> None:
        """Show and use ``window`` (a model's default) at once, without re-embedding."""
        self.show(window)
        self.session.window = Window(window.level, window.width, self.session.window.normalization)
        self.apply_contrast()

    def _on_preset(self, value=None) -> None:
        if self._updating or self.preset.value == CUSTOM:
            return
        level, width = WINDOW_PRESETS[self.preset.value]  # type: ignore[misc]
        self._updating = True
        try:
            self.level.value = level
            self.width.value = width
        finally:
            self._updating = False
        self.apply_controls()

    def _on_level_width(self, value=None) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self.preset.value = preset_name(self.level.value, self.width.value)
        finally:
            self._updating = False
        self.debounce.start()

    def apply_controls(self) -> None:
        """Use the controls' level and width as the session's window (re-embeds if it changed)."""
        self.debounce.stop()
        try:
            window = Window(
                float(self.level.value), float(self.width.value), self.session.window.normalization
            )
        except ValueError as exc:
            show_warning(str(exc))
            return
        if window == self.session.window:
            return
        self.session.window = window
        self.apply_contrast()
        if self.session.windowable:
            self.on_window_changed()
