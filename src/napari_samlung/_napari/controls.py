"""The dock widget's controls: built and laid out on the widget (wiring stays in widget.py)."""

from __future__ import annotations

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
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import QSizePolicy, QTextEdit

from ..core.models import public_models
from ..core.prompts import STRATEGIES
from ..core.windowing import WINDOW_PRESETS
from .results_table import ResultsTable
from .run_jobs import OVERWRITE_EDITED_TEXT
from .window_sync import CUSTOM

DEVICES = ["auto", "cpu", "cuda", "mps"]
AUTO_TOOLTIP = (
    "CT only, no ground truth needed: finds the lungs from the CT's air and prompts the "
    "model on every slice with lung (slices without lung stay empty); one undo step"
)


def build_controls(w) -> None:
    """Make the controls of the widget ``w`` as its attributes and lay them out."""
    w.image = ComboBox(label="image", choices=w._image_layers, nullable=True)
    w.ground_truth = ComboBox(
        label="ground truth", choices=w._labels_layers, nullable=True
    )
    w.output = ComboBox(label="output", choices=w._labels_layers, nullable=True)
    w.output.tooltip = "empty: a new Labels layer '<image> lungs' is created"
    w.model = ComboBox(label="model", choices=public_models())
    w.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pth *.pt")
    w.device = ComboBox(label="device", choices=DEVICES)
    presets = [name for name, values in WINDOW_PRESETS.items() if values is not None]
    w.window_preset = ComboBox(label="window", choices=[*presets, CUSTOM])
    w.window_level = FloatSpinBox(label="level (HU)", min=-2000, max=3000, step=10)
    w.window_width = FloatSpinBox(label="width (HU)", min=1, max=6000, step=10)
    w.strategy = ComboBox(label="prompts from GT", choices=list(STRATEGIES))
    w.negative = CheckBox(text="negative point (or Shift+click)")
    w.overwrite_edited = CheckBox(text=OVERWRITE_EDITED_TEXT)
    w.overwrite_edited.tooltip = (
        "volume runs and propagation leave the slices you painted or erased alone "
        "unless this is ticked"
    )
    w.propagate_button = PushButton(text="Propagate")
    w.propagate_button.tooltip = (
        "segment the volume from the slices with points or boxes (no ground truth "
        "needed); prompt another slice and propagate again to correct"
    )
    w.segment_slice_button = PushButton(text="Slice from GT")
    w.segment_slice_button.tooltip = "segment the slice on screen from ground-truth prompts"
    w.segment_volume_button = PushButton(text="Volume from GT")
    w.segment_volume_button.tooltip = "segment every slice with lung from ground-truth prompts"
    w.auto_button = PushButton(text="Segment automatically")
    w.auto_button.tooltip = AUTO_TOOLTIP
    w.cancel_button = PushButton(text="Cancel", enabled=False)
    w.clear_button = PushButton(text="Clear slice")
    w.export_button = PushButton(text="Export metrics")
    w.export_button.tooltip = "write the per-slice scores as CSV"
    w.status = Label(value="")
    w.status.native.setWordWrap(True)
    # long texts wrap instead of widening the dock
    w.status.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
    w.results = ResultsTable()
    w.readout = TextEdit(value="")
    w.readout.read_only = True
    w.readout.native.setLineWrapMode(QTextEdit.LineWrapMode.WidgetWidth)
    w.readout.native.setMinimumHeight(60)
    w.readout.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Expanding)
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))  # the run summary's columns fit
    w.readout.native.setFont(font)
    for combo in (w.image, w.ground_truth, w.output, w.model, w.strategy, w.window_preset):
        # a long layer name must not widen the dock (it is elided instead)
        combo.native.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        combo.native.setMinimumContentsLength(8)
    w.extend(
        [
            Container(widgets=[w.image, w.ground_truth, w.output], labels=True),
            Container(
                widgets=[w.model, w.checkpoint, w.device, w.strategy],
                labels=True,
            ),
            Container(
                widgets=[w.window_preset, w.window_level, w.window_width],
                labels=True,
            ),
            w.negative,
            _row(w.propagate_button, w.clear_button),
            _row(w.segment_slice_button, w.segment_volume_button),
            _row(w.auto_button, w.cancel_button),
            w.overwrite_edited,
            w.export_button,
            w.status,
            w.readout,
        ]
    )
    layout = w.native.layout()
    layout.insertWidget(layout.indexOf(w.readout.native), w.quality_view.box)
    layout.insertWidget(layout.indexOf(w.readout.native), w.results.table)
    for container in w:
        if isinstance(container, Container):
            container.native.layout().setContentsMargins(0, 0, 0, 0)


def _row(*buttons) -> Container:
    """Buttons side by side, sharing the dock's width."""
    for button in buttons:
        button.native.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
    return Container(widgets=list(buttons), layout="horizontal", labels=False)
