"""The "SAM lung segmentation" dock widget: controls and their wiring only.

It owns a Qt-free ``LungSession`` (image, model, window, scores) and, per viewer,
``ImageLayers`` (the layers worked on), ``Workers`` (model calls in threads),
``Interactive`` (embed ahead, prompt edits), ``Runs`` (volume runs, automatic runs,
propagation), ``WindowSync`` (window controls <-> contrast) and ``QualityView``
(the per-slice quality strip and the doubtful-slice keys).  Closing the dock or the viewer stops
timers and workers (:meth:`SamLungWidget.shutdown`).  Tests pass ``segmenter_factory``.
"""

from pathlib import Path

from magicgui.widgets import (
    Container,
)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from napari.viewer import Viewer

from ..core.config import RunConfig
from ..core.models import get_spec, public_models
from ..core.windowing import Window
from ..errors import SamlungError
from .compat import avoid_triton_llvm_clash
from .controls import AUTO_TOOLTIP, DEVICES, build_controls
from .export import export_scores
from .interactive import Interactive
from .layers import (
    ImageLayers,
    image_modality_and_spacing,
    marked_truth_layer,
    output_problem,
    prompt_layers_for,
    truth_problem,
    volume_from_image_layer,
)
from .prompt_layers import activate_prompt_tool
from .quality_strip import QualityView
from .run_jobs import AUTO_XRAY_MESSAGE
from .runs import Runs
from .seg_export import SegExport
from .session import LungSession, SegmenterFactory
from .session_file import SessionFiles
from .shortcuts import Shortcuts, shortcuts_help
from .window_sync import WindowSync
from .workers import DownloadBar, Feedback, Workers, stop_with


class SamLungWidget(Container):
    """Segment lungs with SAM from clicks, boxes or the ground truth, with live Dice.

    Parameters
    ----------
    viewer
        The napari viewer to work in.
    segmenter_factory
        Builds the model (tests hand in a tiny one); default: the model registry.
    config
        Initial model, device, strategy and CT window.
    """

    def __init__(
        self,
        viewer: Viewer,
        segmenter_factory: SegmenterFactory | None = None,
        config: RunConfig | None = None,
    ) -> None:
        super().__init__(labels=False)
        avoid_triton_llvm_clash()
        self.viewer = viewer
        config = config or RunConfig()
        self.session = LungSession(segmenter_factory)
        self.feedback = Feedback(self._set_status, self._update_readout, self._set_running)
        self.workers = Workers(DownloadBar(lambda: self.session.model_id, self.feedback))
        self.image_layers = ImageLayers(
            viewer, self.session, on_output_made=self._show_output, on_scores=self._update_readout
        )
        self.interactive = Interactive(self.image_layers, self.workers, self.feedback)
        self.runs = Runs(self.image_layers, self.workers, self.feedback)
        self.quality_view = QualityView(viewer, self.image_layers)
        self._updating = False
        self._closed = False
        self._table = ""  # the summary table last shown
        build_controls(self)
        self.seg_export = SegExport(self)
        self.session_files = SessionFiles(self)
        self.shortcuts = Shortcuts(self)
        self.tooltip = shortcuts_help()
        explicit = any(
            v is not None for v in (config.window_preset, config.window_level, config.window_width)
        )
        self.window_sync = WindowSync(
            self.session,
            self.window_preset,
            self.window_level,
            self.window_width,
            self.interactive.window_changed,
            explicit=explicit,
        )
        self.image.value = self._default_image()
        self._connect()
        self._apply_config(config)
        self._on_image_changed()
        stop_with(self.native, self.shutdown)

    # ------------------------------------------------------------------ building

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
        self.negative.changed.connect(self.interactive.set_negative_default)
        self.segment_slice_button.changed.connect(self.interactive.segment_slice_from_truth)
        self.segment_volume_button.changed.connect(
            lambda: self.runs.segment_volume_from_truth(self.overwrite_edited.value)
        )
        self.propagate_button.changed.connect(
            lambda: self.runs.propagate(self.overwrite_edited.value)
        )
        self.auto_button.changed.connect(
            lambda: self.runs.segment_volume_automatically(self.overwrite_edited.value)
        )
        self.cancel_button.changed.connect(self.runs.cancel)
        self.clear_button.changed.connect(self.interactive.clear_slice)
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
        finally:
            self._updating = False
        window = config.window()
        self.window_sync.show(window)
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
        elif self.image.value is not None and self.ground_truth.value is None:
            self._pick_truth()  # a ground truth opened after the image

    def _clear_image(self, status: str) -> None:
        self.window_sync.adopt(None)
        self.image_layers.set_image(None, None, None)
        self.interactive.image_changed()
        self._set_status(status)

    def _on_image_changed(self, value=None) -> None:
        layer = self.image.value
        if layer is None:
            self._clear_image("open a chest CT or X-ray image")
            self._update_readout()
            return
        try:
            volume, is_2d = volume_from_image_layer(layer)
        except SamlungError as exc:
            show_error(str(exc))
            self._clear_image(str(exc))
            return
        if getattr(layer, "rgb", False):
            show_info(f"{layer.name!r} is an RGB image: its grey values are segmented")
        modality, spacing = image_modality_and_spacing(layer, volume, is_2d)
        self.session.set_image(
            volume, is_2d, case=layer.name, modality=modality, spacing_zyx_mm=spacing
        )
        self.window_sync.adopt(layer)
        points, shapes = prompt_layers_for(self.viewer, layer, len(self.image_layers.shape))
        self.image_layers.set_image(layer, points, shapes)
        self.interactive.image_changed()
        self.image_layers.output()
        self._pick_truth()
        self.image_layers.set_truth_layer(self.ground_truth.value)
        self._activate_prompt_tool()
        self.interactive.request_embed()
        self._set_running(self.runs.running)
        self._update_readout()

    def _show_output(self, layer) -> None:
        """Show an output layer the plugin made (or found) as the chosen output."""
        self._updating = True
        try:
            self.output.value = layer
        finally:
            self._updating = False

    def _pick_truth(self) -> None:
        """Keep a fitting ground truth, else pick one the reader marked (or none)."""
        current = self.ground_truth.value
        shape = self.image_layers.shape
        if current is not None and current.data.shape == shape:
            return
        self.ground_truth.value = marked_truth_layer(self.viewer, shape, self.output.value)

    def _on_truth_changed(self, value=None) -> None:
        layer = self.ground_truth.value
        if layer is not None and layer is self.output.value:
            show_warning("the ground truth cannot also be the output; choose another layer")
            self.ground_truth.value = None
            return
        problem = truth_problem(layer, self.image_layers.shape)
        if problem is not None and self.image.value is not None:
            show_error(problem)
            self.ground_truth.value = None
            return
        self.image_layers.set_truth_layer(layer)
        self._update_readout()

    def _on_output_changed(self, value=None) -> None:
        """A chosen output layer; none: '<image> lungs' is made at the next write."""
        if self._updating or self.image.value is None:
            return
        layer = self.output.value
        problem = output_problem(layer, self.ground_truth.value, self.image_layers.shape)
        if problem is not None:
            show_error(problem)
            layer = None
            self._show_output(None)
        self.image_layers.set_output(layer)
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
        finally:
            self._updating = False
        self.session.strategy = self.strategy.value
        self.window_sync.use_default(Window.preset(spec.default_window))
        self._on_model_config()
        self._activate_prompt_tool()

    def _activate_prompt_tool(self) -> None:
        """Boxes first for box-only models (LiteMedSAM), points for the others."""
        wl = self.image_layers
        accepts = get_spec(self.model.value).accepts_points
        activate_prompt_tool(self.viewer, wl.points_layer, wl.shapes_layer, accepts)

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
            self.interactive.model_changed()

    def _on_strategy(self, value=None) -> None:
        if not self._updating:
            self.session.strategy = self.strategy.value

    def set_window(self, level: float, width: float) -> None:
        """Set the CT window in HU (as the level/width controls do) and apply it now."""
        self.window_sync.set_window(level, width)

    # ------------------------------------------------------------------ actions

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
        self.auto_button.enabled = not running and self.session.is_ct
        self.auto_button.tooltip = AUTO_TOOLTIP if self.session.is_ct else AUTO_XRAY_MESSAGE

    def export_metrics(self, path: str | Path | None = None) -> Path | None:
        """Write the per-slice scores as CSV; asks for a file and before overwriting.

        Returns the file written, or None (nothing scored, or the user said no).
        """
        return export_scores(self.native, self.session, path)

    # ------------------------------------------------------------------ readout

    @property
    def busy(self) -> bool:
        """True while a worker runs or an edit waits for its debounce."""
        return (
            self.workers.busy
            or self.interactive.debounce.pending
            or self.window_sync.debounce.pending
            or (self.image_layers.watch is not None and self.image_layers.watch.debounce.pending)
        )

    @property
    def closed(self) -> bool:
        """True once the widget stopped (closed with its dock or its viewer)."""
        return self._closed

    def set_debounce(self, ms: int) -> None:
        """Set both debounce times: prompt edits and window changes (ms)."""
        self.interactive.debounce.ms = ms
        self.window_sync.debounce.ms = ms

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _update_readout(self) -> None:
        # the last run's summary table follows later changes of the labels (undo, painting)
        table = self.session.summary().format_table()
        if self._table and self._table != table and self._table in self.feedback.summary:
            self.feedback.summary = self.feedback.summary.replace(self._table, table)
        self._table = table
        self.readout.value = self.readout_text()
        self._show_results()
        self.quality_view.refresh()

    def _show_results(self) -> None:
        """The results table for the slice on screen and the output labels."""
        wl = self.image_layers
        if self.image.value is None or self.session.volume is None:
            self.results.show_nothing()
            return
        labels = None if wl.writer is None else wl.writer.layer.data
        has_truth = self.ground_truth.value is not None
        self.results.show(self.session, labels, wl.current_slice(), has_truth)

    def readout_text(self) -> str:
        """Dice and Jaccard of the slice on screen, their means, the run summary, the volumes."""
        z = self.image_layers.current_slice()
        has_truth = self.ground_truth.value is not None
        return self.session.readout(z, has_truth, self.feedback.summary) + self.seg_export.lines()

    def shutdown(self) -> None:
        """Stop timers and workers and let go of the viewer (the widget is going away)."""
        if self._closed:
            return
        self._closed = True
        self.feedback.mute()
        self.window_sync.close()
        self.interactive.close()
        self.runs.close()
        self.shortcuts.close()
        self.workers.close()
        layers = self.viewer.layers.events
        layers.inserted.disconnect(self._on_layers_inserted)
        for emitter in (layers.removed, layers.reordered):
            emitter.disconnect(self._on_layers_changed)
        self.image_layers.close()
