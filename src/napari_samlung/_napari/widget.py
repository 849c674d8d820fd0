"""The "SAM lung segmentation" dock widget: controls only.

The controls feed a :class:`~napari_samlung._napari.workflow.Workflow`
(layers, workers, undoable writes), which drives a Qt-free
:class:`~napari_samlung._napari.session.LungSession` (model, window, scores).

Tests pass ``segmenter_factory`` to use a tiny model instead of the registry.
"""

import math
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    TextEdit,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QSizePolicy, QTextEdit

from ..core.models import get_spec, public_models
from ..core.prompts import STRATEGIES
from ..core.windowing import WINDOW_PRESETS, Window
from ..errors import SamlungError
from ..runner import RunConfig
from .compat import avoid_triton_llvm_clash
from .layer_utils import META_KEY, samlung_meta, volume_from_image_layer
from .prompt_layers import make_points_layer, make_shapes_layer
from .session import LungSession, SegmenterFactory
from .workflow import Workflow

CUSTOM = "custom"
DEVICES = ["auto", "cpu", "cuda", "mps"]
WINDOW_DEBOUNCE_MS = 300


class SamLungWidget(Container):
    """Segment lungs with SAM from clicks, boxes or the ground truth, with live Dice."""

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        segmenter_factory: SegmenterFactory | None = None,
        config: RunConfig | None = None,
    ) -> None:
        super().__init__(labels=False)
        avoid_triton_llvm_clash()
        self.viewer = viewer
        config = config or RunConfig()
        self.session = LungSession(segmenter_factory)
        self.workflow = Workflow(viewer, self.session, self._set_status, self._update_readout)
        self.workflow.make_output = self._make_output
        self.workflow.on_running = self._set_running
        self._updating = False
        self._closed = False
        self._contrast_layer = None  # the image layer whose contrast limits we follow
        self._applying_contrast = False
        self._build()
        self.image.value = self._default_image()
        self._connect()
        self._apply_config(config)
        self._on_image_changed()
        self.native.destroyed.connect(lambda *_: self.close_workflow())

    # ------------------------------------------------------------------ building

    def _build(self) -> None:
        self.image = ComboBox(label="image", choices=self._image_layers, nullable=True)
        self.ground_truth = ComboBox(
            label="ground truth", choices=self._labels_layers, nullable=True
        )
        self.output = ComboBox(label="output", choices=self._labels_layers, nullable=True)
        self.output.tooltip = "empty: a new Labels layer '<image> lungs' is created"
        self.model = ComboBox(label="model", choices=public_models())
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pth *.pt")
        self.device = ComboBox(label="device", choices=DEVICES)
        presets = [name for name, values in WINDOW_PRESETS.items() if values is not None]
        self.window_preset = ComboBox(label="window", choices=[*presets, CUSTOM])
        self.window_level = FloatSpinBox(label="level (HU)", min=-2000, max=3000, step=10)
        self.window_width = FloatSpinBox(label="width (HU)", min=1, max=6000, step=10)
        self.strategy = ComboBox(label="prompts from GT", choices=list(STRATEGIES))
        self.negative = CheckBox(text="negative point (or Shift+click)")
        self.overwrite_edited = CheckBox(text="overwrite slices I edited (volume, propagate)")
        self.propagate_button = PushButton(text="Propagate from my prompts")
        self.propagate_button.tooltip = (
            "segment the volume from the slices with points or boxes (no ground truth "
            "needed); prompt another slice and propagate again to correct"
        )
        self.segment_slice_button = PushButton(text="Segment slice from ground truth")
        self.segment_volume_button = PushButton(text="Segment volume from ground truth")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.clear_button = PushButton(text="Clear slice")
        self.export_button = PushButton(text="Export metrics")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        # long texts scroll or wrap instead of widening the dock
        self.status.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.readout = TextEdit(value="")
        self.readout.read_only = True
        self.readout.native.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.readout.native.setLineWrapMode(QTextEdit.NoWrap)
        self.readout.native.setMinimumHeight(170)
        self.extend(
            [
                Container(widgets=[self.image, self.ground_truth, self.output], labels=True),
                Container(
                    widgets=[self.model, self.checkpoint, self.device, self.strategy],
                    labels=True,
                ),
                Container(
                    widgets=[self.window_preset, self.window_level, self.window_width],
                    labels=True,
                ),
                self.negative,
                Container(
                    widgets=[self.propagate_button, self.clear_button],
                    layout="horizontal",
                    labels=False,
                ),
                self.segment_slice_button,
                Container(
                    widgets=[self.segment_volume_button, self.cancel_button],
                    layout="horizontal",
                    labels=False,
                ),
                self.overwrite_edited,
                self.export_button,
                self.status,
                self.readout,
            ]
        )
        self._window_timer = QTimer()
        self._window_timer.setSingleShot(True)
        self._window_timer.setInterval(WINDOW_DEBOUNCE_MS)
        self._window_timer.timeout.connect(self._on_window_changed)

    def _image_layers(self, widget=None) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _labels_layers(self, widget=None) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _connect(self) -> None:
        layers = self.viewer.layers.events
        layers.inserted.connect(self._on_layers_inserted)
        for emitter in (layers.removed, layers.reordered):
            emitter.connect(self._on_layers_changed)
        self.image.changed.connect(self._on_image_changed)
        self.ground_truth.changed.connect(self._on_truth_changed)
        self.output.changed.connect(self._on_output_changed)
        self.model.changed.connect(self._on_model_changed)
        self.checkpoint.changed.connect(self._on_model_config)
        self.device.changed.connect(self._on_model_config)
        self.strategy.changed.connect(self._on_strategy)
        self.window_preset.changed.connect(self._on_preset)
        self.window_level.changed.connect(self._on_level_width)
        self.window_width.changed.connect(self._on_level_width)
        self.negative.changed.connect(self.workflow.set_negative_default)
        self.segment_slice_button.changed.connect(self.workflow.segment_slice_from_truth)
        self.segment_volume_button.changed.connect(self._on_segment_volume)
        self.propagate_button.changed.connect(
            lambda: self.workflow.propagate(self.overwrite_edited.value)
        )
        self.cancel_button.changed.connect(self.workflow.cancel_run)
        self.clear_button.changed.connect(self.workflow.clear_slice)
        self.export_button.changed.connect(lambda: self.export_metrics())

    def _apply_config(self, config: RunConfig) -> None:
        self._updating = True
        try:
            model_id = config.model_id if config.model_id in public_models() else "lite_medsam"
            self.model.value = model_id
            self.device.value = config.device if config.device in DEVICES else "auto"
            if config.checkpoint:
                self.checkpoint.value = config.checkpoint
            self.strategy.value = config.resolved_strategy()
            window = config.window()
            self._show_window(window)
        finally:
            self._updating = False
        self.checkpoint.visible = get_spec(self.model.value).needs_checkpoint
        self.session.configure_model(self.model.value, self._checkpoint_path(), self.device.value)
        self.session.strategy = self.strategy.value
        self.session.window = window

    # ------------------------------------------------------------------ layers

    def _default_image(self):
        active = self.viewer.layers.selection.active
        if isinstance(active, Image):
            return active
        images = self._image_layers()
        return images[0] if images else None

    def _on_layers_changed(self, event=None) -> None:
        self.reset_choices()

    def _on_layers_inserted(self, event=None) -> None:
        self.reset_choices()
        if self.image.value is None and self._image_layers():
            self.image.value = self._default_image()

    def _on_image_changed(self, value=None) -> None:
        layer = self.image.value
        self._follow_contrast(None)
        if layer is None:
            self.workflow.set_image_layers(None, None, None)
            self._set_status("open a chest CT or X-ray image")
            self._update_readout()
            return
        try:
            volume, is_2d = volume_from_image_layer(layer)
        except SamlungError as exc:
            show_error(str(exc))
            self.workflow.set_image_layers(None, None, None)
            self._set_status(str(exc))
            return
        if getattr(layer, "rgb", False):
            show_info(f"{layer.name!r} is an RGB image: its grey values are segmented")
        self.session.set_image(volume, is_2d, case=layer.name)
        self._setup_window_controls()
        self._follow_contrast(layer)
        points, shapes = self._prompt_layers(layer)
        self.workflow.set_image_layers(layer, points, shapes)
        self.workflow.set_output(self._make_output())
        self._pick_truth(layer)
        self.workflow.set_truth_layer(self.ground_truth.value)
        self.workflow.set_negative_default(self.negative.value)
        self.viewer.layers.selection.active = points
        points.mode = "add"
        self.workflow.request_embed()
        self._update_readout()

    def _layer_kwargs(self, image) -> dict:
        return {"scale": tuple(image.scale), "translate": tuple(image.translate)}

    def _shape(self) -> tuple[int, ...]:
        volume = self.session.volume
        return tuple(volume.shape[1:]) if self.session.is_2d else tuple(volume.shape)

    def _find(self, name: str, kind, ndim: int):
        for layer in self.viewer.layers:
            if isinstance(layer, kind) and layer.name == name and layer.ndim == ndim:
                return layer
        return None

    def _prompt_layers(self, image):
        from napari.layers import Points, Shapes

        ndim = len(self._shape())
        kwargs = self._layer_kwargs(image)
        points = self._find(f"{image.name} prompts", Points, ndim)
        if points is None:
            points = make_points_layer(f"{image.name} prompts", ndim, **kwargs)
        shapes = self._find(f"{image.name} boxes", Shapes, ndim)
        if shapes is None:
            shapes = make_shapes_layer(f"{image.name} boxes", ndim, **kwargs)
        for layer in (shapes, points):
            if layer not in self.viewer.layers:
                self.viewer.layers.append(layer)
        shapes.mode = "add_rectangle"
        return points, shapes

    def _make_output(self):
        """Find or create '<image> lungs' and show it as the chosen output."""
        layer = self._output_for(self.image.value)
        self._updating = True
        try:
            self.output.value = layer
        finally:
            self._updating = False
        return layer

    def _output_for(self, image):
        """The Labels layer '<image> lungs', created when missing."""
        shape = self._shape()
        name = f"{image.name} lungs"
        for layer in self._labels_layers():
            if layer.name == name and layer.data.shape == shape:
                return layer
        metadata = {}
        entry = samlung_meta(image.metadata)
        if entry is not None:
            metadata = {META_KEY: {**entry, "role": "output"}}
        return self.viewer.add_labels(
            np.zeros(shape, np.uint8), name=name, metadata=metadata, **self._layer_kwargs(image)
        )

    def _pick_truth(self, image) -> None:
        """Keep a fitting ground truth, else pick one the reader marked (or none)."""
        current = self.ground_truth.value
        shape = self._shape()
        if current is not None and current.data.shape == shape:
            return
        self.ground_truth.value = None
        for layer in self._labels_layers():
            entry = samlung_meta(layer.metadata) or {}
            if (
                entry.get("role") == "ground_truth"
                and layer.data.shape == shape
                and layer is not self.output.value
            ):
                self.ground_truth.value = layer
                return

    def _on_truth_changed(self, value=None) -> None:
        layer = self.ground_truth.value
        if layer is not None and layer is self.output.value:
            show_warning("the ground truth cannot also be the output; choose another layer")
            self.ground_truth.value = None
            return
        if layer is not None and self.image.value is not None and layer.data.shape != self._shape():
            show_error(
                f"ground truth {layer.name!r} has shape {layer.data.shape} but the image has "
                f"shape {self._shape()}; choose the labels of this image"
            )
            self.ground_truth.value = None
            return
        self.workflow.set_truth_layer(layer)
        self._update_readout()

    def _on_output_changed(self, value=None) -> None:
        """A chosen output layer; none: '<image> lungs' is made at the next write."""
        if self._updating or self.image.value is None:
            return
        layer = self.output.value
        problem = None
        if layer is not None and layer is self.ground_truth.value:
            problem = "the output cannot be the ground truth; choose another Labels layer"
        elif layer is not None and layer.data.shape != self._shape():
            problem = (
                f"output {layer.name!r} has shape {layer.data.shape} but the image has shape "
                f"{self._shape()}; choose a layer of the image's shape"
            )
        if problem is not None:
            show_error(problem)
            layer = None
            self._updating = True
            try:
                self.output.value = None
            finally:
                self._updating = False
        self.workflow.set_output(layer)
        self._update_readout()

    # ------------------------------------------------------------------ model

    def _checkpoint_path(self) -> str | None:
        value = self.checkpoint.value
        if value is None or str(value) in ("", ".") or Path(value).is_dir():
            return None
        return str(value)

    def _on_model_changed(self, value=None) -> None:
        if self._updating:
            return
        spec = get_spec(self.model.value)
        self.checkpoint.visible = spec.needs_checkpoint
        self._updating = True
        try:
            self.strategy.value = spec.default_strategy
            self._show_window(Window.preset(spec.default_window))
        finally:
            self._updating = False
        self.session.strategy = self.strategy.value
        default = Window.preset(spec.default_window)
        self.session.window = Window(
            default.level, default.width, self.session.window.normalization
        )
        self._apply_contrast()
        self._on_model_config()

    def _on_model_config(self, value=None) -> None:
        if self._updating:
            return
        try:
            changed = self.session.configure_model(
                self.model.value, self._checkpoint_path(), self.device.value
            )
        except SamlungError as exc:
            show_error(str(exc))
            return
        if changed:
            self.workflow.model_changed()
            self.workflow.segment_from_prompts()

    def _on_strategy(self, value=None) -> None:
        if not self._updating:
            self.session.strategy = self.strategy.value

    # ------------------------------------------------------------------ window

    def _show_window(self, window: Window) -> None:
        if window.is_none:
            return
        self.window_level.value = window.level
        self.window_width.value = window.width
        self.window_preset.value = _preset_name(window.level, window.width)

    def _setup_window_controls(self) -> None:
        enabled = self.session.windowable
        for widget in (self.window_preset, self.window_level, self.window_width):
            widget.enabled = enabled
            widget.tooltip = (
                "CT window in Hounsfield units; it sets the image's contrast limits, "
                "and moving those sets the window"
                if enabled
                else "8-bit data is used as it is: no window"
            )
        self._apply_contrast()

    def _apply_contrast(self) -> None:
        layer = self.image.value
        limits = self.session.effective_window().limits_hu
        if layer is not None and limits is not None and not getattr(layer, "rgb", False):
            self._applying_contrast = True
            try:
                layer.contrast_limits = limits
            finally:
                self._applying_contrast = False

    def _follow_contrast(self, layer) -> None:
        """Follow ``layer``'s contrast limits (and stop following the previous layer's)."""
        if self._contrast_layer is not None:
            self._contrast_layer.events.contrast_limits.disconnect(self._on_contrast_limits)
            self._contrast_layer = None
        if layer is not None and not getattr(layer, "rgb", False):
            layer.events.contrast_limits.connect(self._on_contrast_limits)
            self._contrast_layer = layer

    def _on_contrast_limits(self, event=None) -> None:
        """The user moved the image's contrast limits: what they see becomes the CT
        window the model sees (level = centre, width = range; debounced like the
        level/width controls, so dragging the slider re-embeds once)."""
        layer = self._contrast_layer
        if self._applying_contrast or self._updating or layer is None:
            return
        if self.session.effective_window().limits_hu is None:
            return  # 8-bit data: no window to follow
        low, high = (float(v) for v in layer.contrast_limits)
        level = min(max((low + high) / 2.0, self.window_level.min), self.window_level.max)
        width = min(max(high - low, self.window_width.min), self.window_width.max)
        if math.isclose(level, self.window_level.value) and math.isclose(
            width, self.window_width.value
        ):
            return
        self._set_window_controls(level, width)
        self._window_timer.start()

    def _on_preset(self, value=None) -> None:
        if self._updating or self.window_preset.value == CUSTOM:
            return
        level, width = WINDOW_PRESETS[self.window_preset.value]  # type: ignore[misc]
        self._updating = True
        try:
            self.window_level.value = level
            self.window_width.value = width
        finally:
            self._updating = False
        self._on_window_changed()

    def _on_level_width(self, value=None) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self.window_preset.value = _preset_name(
                self.window_level.value, self.window_width.value
            )
        finally:
            self._updating = False
        self._window_timer.start()

    def _on_window_changed(self) -> None:
        self._window_timer.stop()
        try:
            window = Window(
                float(self.window_level.value),
                float(self.window_width.value),
                self.session.window.normalization,
            )
        except ValueError as exc:
            show_warning(str(exc))
            return
        if window == self.session.window:
            return
        self.session.window = window
        self._apply_contrast()
        if self.session.windowable:
            self.workflow.window_changed()

    def set_window(self, level: float, width: float) -> None:
        """Set the CT window (as the level/width controls do) and apply it now."""
        self._set_window_controls(level, width)
        self._on_window_changed()

    def _set_window_controls(self, level: float, width: float) -> None:
        """Show level, width and their preset without running the controls' handlers."""
        self._updating = True
        try:
            self.window_level.value = level
            self.window_width.value = width
            self.window_preset.value = _preset_name(level, width)
        finally:
            self._updating = False

    # ------------------------------------------------------------------ actions

    def _on_segment_volume(self, value=None) -> None:
        self.workflow.segment_volume_from_truth(self.overwrite_edited.value)

    def _set_running(self, running: bool) -> None:
        """A volume run or a propagation started (True) or ended."""
        self.cancel_button.enabled = running
        for button in (
            self.segment_volume_button,
            self.segment_slice_button,
            self.propagate_button,
            self.clear_button,
        ):
            button.enabled = not running

    def export_metrics(self, path: str | Path | None = None) -> Path | None:
        """Write the per-slice scores as CSV; asks for a file and before overwriting."""
        if not self.session.scores:
            show_warning("no scored slices yet: segment with a ground-truth layer chosen")
            return None
        if path is None:
            path = self._ask_save_path()
            if not path:
                return None
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_name(path.name + ".csv")
        if path.exists() and not self._confirm(f"{path} exists. Replace it?"):
            return None
        try:
            self.session.export_scores(path)
        except OSError as exc:
            show_error(f"cannot write {path}: {exc.strerror or exc}; choose another folder")
            return None
        show_info(f"wrote the scores of {len(self.session.scores)} slices to {path}")
        return path

    def _ask_save_path(self) -> str:
        from qtpy.QtWidgets import QFileDialog

        name = f"{self.session.case or 'scores'}_per_slice.csv"
        path, _ = QFileDialog.getSaveFileName(
            self.native,
            "Export per-slice metrics",
            name,
            "CSV (*.csv)",
            options=QFileDialog.DontConfirmOverwrite,
        )
        return path

    def _confirm(self, question: str) -> bool:
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.native, "napari-samlung", question)
        return answer == QMessageBox.Yes

    # ------------------------------------------------------------------ readout

    @property
    def busy(self) -> bool:
        return self.workflow.busy or self._window_timer.isActive()

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _update_readout(self) -> None:
        self.readout.value = self.readout_text()

    def readout_text(self) -> str:
        if self.ground_truth.value is None:
            lines = ["choose a ground-truth layer to see Dice and Jaccard"]
        else:
            z = self.workflow.current_slice()
            score = self.session.scores.get(z) if z is not None else None
            if score is not None:
                lines = [f"slice {z}: Dice {_pct(score.dice)}  Jaccard {_pct(score.jaccard)}"]
            elif z is not None:
                lines = [f"slice {z}: not scored yet"]
            else:
                lines = []
            n, dice, jaccard = self.session.mean_scores()
            if n:
                lines.append(f"mean of {n} slices: Dice {_pct(dice)}  Jaccard {_pct(jaccard)}")
        if self.workflow.summary_text:
            lines += ["", self.workflow.summary_text]
        return "\n".join(lines)

    def close_workflow(self) -> None:
        """Stop workers and disconnect from the viewer (the widget is going away)."""
        if self._closed:
            return
        self._closed = True
        self._window_timer.stop()
        self._follow_contrast(None)
        layers = self.viewer.layers.events
        layers.inserted.disconnect(self._on_layers_inserted)
        for emitter in (layers.removed, layers.reordered):
            emitter.disconnect(self._on_layers_changed)
        self.workflow.close()


def _preset_name(level: float, width: float) -> str:
    for name, values in WINDOW_PRESETS.items():
        if values is not None and math.isclose(values[0], level) and math.isclose(values[1], width):
            return name
    return CUSTOM


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f} %"
