"""The widget's "Save session" and "Load session" buttons: pick up an annotation tomorrow.

:class:`SessionFiles` saves, beside the output labels in the image's folder:

- ``<image stem>_lungs.nii.gz`` (``.png`` for a 2D image): the output labels, on the
  image's grid (:func:`~napari_samlung.io.writers.write_labels`);
- ``<image stem>_samlung_session.json``: the points and boxes of every prompted slice, in
  the prompts format ``napari-samlung segment IMAGE --propagate-from`` reads, and the
  model, checkpoint, device, window and strategy
  (:mod:`napari_samlung.io.session_file`).

Both are written atomically, never over the image or ground-truth file the layers came
from, and an existing file is replaced only after a question.  Loading restores the
controls first (model, window, strategy), then the prompts, then the labels as one
undo step.  Opening an image whose folder holds a saved session shows a hint; nothing
is loaded without the button.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.models import public_models
from ..core.prompts import NEGATIVE, POSITIVE, STRATEGIES, Prompt, points_rc_to_xy
from ..errors import SamlungError, ShapeMismatchError
from ..io import read_image, write_labels
from ..io.session_file import (
    SESSION_SUFFIX,
    SavedSlice,
    SessionFile,
    box_sides,
    check_session_paths,
    labels_path_for,
    read_session,
    session_path_for,
    write_session,
)
from .controls import DEVICES
from .export import layer_files
from .layers import like_from_metadata, samlung_meta
from .prompt_layers import (
    POSITIVE_FEATURE,
    prompted_slices,
    read_slice_prompts,
    replace_slice_prompts,
)

SAVE_TOOLTIP = (
    "save the prompts, the output labels, the model, window and strategy beside the image: "
    "<image>_samlung_session.json (also a prompts file for 'segment --propagate-from') and "
    "<image>_lungs.nii.gz (.png for 2D)"
)
LOAD_TOOLTIP = (
    "restore a saved <image>_samlung_session.json: model, window, strategy, prompts and "
    "labels (one undo step)"
)
FILE_FILTER = "napari-samlung session (*.json)"

#: ``confirm(question) -> bool``: may an existing file be replaced?
Confirm = Callable[[str], bool]


class SessionFiles:
    """The "Save session" and "Load session" buttons of the dock widget."""

    def __init__(self, widget) -> None:
        from magicgui.widgets import Container, PushButton

        self.widget = widget
        self.save_button = PushButton(text="Save session")
        self.save_button.tooltip = SAVE_TOOLTIP
        self.load_button = PushButton(text="Load session")
        self.load_button.tooltip = LOAD_TOOLTIP
        self.box = Container(
            widgets=[self.save_button, self.load_button], layout="horizontal", labels=False
        )
        self.box.native.layout().setContentsMargins(0, 0, 0, 0)
        layout = widget.native.layout()
        seg_export = getattr(widget, "seg_export", None)
        anchor = seg_export.button.native if seg_export is not None else None
        index = layout.indexOf(anchor) if anchor is not None else -1
        if index < 0:
            index = layout.indexOf(widget.export_button.native)
        layout.insertWidget(index + 1 if index >= 0 else layout.count(), self.box.native)
        self.save_button.changed.connect(lambda: self.save())
        self.load_button.changed.connect(lambda: self.load())
        self._hinted: set[str] = set()
        widget.image.changed.connect(self.hint)
        self.hint()

    # ------------------------------------------------------------------ the image

    def image_path(self) -> Path | None:
        """The file (or DICOM folder) the image layer was read from, if known."""
        layer = self.widget.image.value
        recorded = (samlung_meta(getattr(layer, "metadata", None)) or {}).get("source_path")
        if recorded:  # our reader's record comes first (a DICOM series: its folder)
            return Path(recorded)
        paths = layer_files(layer) if layer is not None else []
        return paths[0] if paths else None

    def default_path(self) -> Path:
        """``<image stem>_samlung_session.json`` in the image's folder (else the working
        folder, named after the layer)."""
        image_path = self.image_path()
        if image_path is not None:
            return session_path_for(image_path)
        return Path.cwd() / f"{self.widget.image.value.name}{SESSION_SUFFIX}"

    def input_paths(self) -> list[Path]:
        """Files that are never written: the image's, the ground truth's, and those of every
        layer our reader opened as an image or a ground truth."""
        w = self.widget
        layers = [w.image.value, w.ground_truth.value]
        for layer in w.viewer.layers:
            role = (samlung_meta(getattr(layer, "metadata", None)) or {}).get("role")
            if role in ("image", "ground_truth"):
                layers.append(layer)
        return [p for layer in layers if layer is not None for p in layer_files(layer)]

    def hint(self, value=None) -> None:
        """Say, once per session file, that the image just chosen has a saved session."""
        from napari.utils.notifications import show_info

        layer = self.widget.image.value
        image_path = self.image_path()
        if layer is None or image_path is None:
            return
        path = session_path_for(image_path)
        if str(path) in self._hinted or not path.is_file():
            return
        self._hinted.add(str(path))
        show_info(
            f"{layer.name!r} has a saved session, {path}: press 'Load session' to restore "
            "its prompts, labels, model and window"
        )

    def _like(self):
        w = self.widget
        layer = w.image.value
        return like_from_metadata(w.image_layers.shape, layer.metadata, scale=layer.scale)

    def _labels(self) -> np.ndarray | None:
        """The output labels, or None when there is no output or it is empty."""
        writer = self.widget.image_layers.writer
        if writer is None:
            return None
        labels = np.asarray(writer.layer.data)
        return labels if labels.any() else None

    # ------------------------------------------------------------------ save

    def snapshot(self, labels_path: Path | None) -> SessionFile:
        """The session as the widget shows it now (PromptError: a prompt off the image)."""
        w = self.widget
        layers, session = w.image_layers, w.session
        points, shapes = layers.points_layer, layers.shapes_layer
        slices = []
        for z in prompted_slices(points, shapes, session.n_slices):
            here = read_slice_prompts(points, shapes, z)
            if here.empty:
                continue
            boxes_xyxy = [points_rc_to_xy(b).reshape(4) for b in here.boxes_rc]
            midline = session.midline_col(z) if boxes_xyxy else None
            if midline is None:  # an X-ray: the image's centre
                midline = (session.volume.shape[-1] - 1) / 2.0
            labels = np.where(here.positive, POSITIVE, NEGATIVE)
            sides = box_sides(boxes_xyxy, midline)
            slices.append(SavedSlice(z, here.points_rc, labels, boxes_xyxy, sides))
        windowed = session.windowable
        checkpoint = w._checkpoint_path()
        writer = layers.writer
        image_path = self.image_path()
        return SessionFile(
            image_shape=tuple(int(n) for n in layers.shape),
            slices=slices,
            image_path=None if image_path is None else str(image_path.resolve()),
            model_id=str(w.model.value),
            checkpoint=None if checkpoint is None else str(checkpoint),
            device=str(w.device.value),
            window_preset=str(w.window_preset.value) if windowed else None,
            window_level=float(w.window_level.value) if windowed else None,
            window_width=float(w.window_width.value) if windowed else None,
            strategy=str(w.strategy.value),
            labels_file=None if labels_path is None else labels_path.name,
            edited_slices=sorted(writer.protected_slices()) if labels_path and writer else [],
        )

    def save(self, path: str | Path | None = None, confirm: Confirm | None = None) -> Path | None:
        """Write the session and the output labels; asks for a file and before replacing one.

        Returns the session file written, or None (no image, a refusal, or the user said no).
        """
        from napari.utils.notifications import show_error, show_info, show_warning
        from qtpy.QtWidgets import QFileDialog

        w = self.widget
        if w.image.value is None:
            show_warning("open an image first: a session belongs to an image")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                w.native,
                "Save session",
                str(self.default_path()),
                FILE_FILTER,
                options=QFileDialog.DontConfirmOverwrite,
            )
            if not path:
                return None
        path = Path(path).expanduser()
        if path.suffix.lower() != ".json":
            path = path.with_name(path.name + ".json")
        labels = self._labels()
        labels_path = None if labels is None else labels_path_for(path, w.session.is_2d)
        inputs = self.input_paths()
        try:
            session = self.snapshot(labels_path)
            check_session_paths(path, labels_path, inputs, overwrite=True)
        except SamlungError as exc:
            show_error(str(exc))
            return None
        existing = [str(p) for p in (path, labels_path) if p is not None and p.exists()]
        if existing:
            question = (
                f"{existing[0]} exists. Replace it?"
                if len(existing) == 1
                else f"{existing[0]} and {existing[1]} exist. Replace them?"
            )
            if not (confirm or self._ask)(question):
                return None
        try:
            if labels is not None:
                write_labels(labels_path, labels, like=self._like(), overwrite=True, inputs=inputs)
            write_session(path, session, inputs=inputs, overwrite=True)
        except SamlungError as exc:
            show_error(str(exc))
            return None
        what = f"{len(session.slices)} prompted slices"
        if labels_path is not None:
            what += f" and the labels ({labels_path.name})"
        show_info(f"saved the session, {what}, to {path}; 'Load session' restores it")
        return path

    def _ask(self, question: str) -> bool:
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self.widget.native, "napari-samlung", question)
        return answer == QMessageBox.Yes

    # ------------------------------------------------------------------ load

    def load(self, path: str | Path | None = None) -> Path | None:
        """Restore a saved session: controls, then prompts, then labels (one undo step).

        Returns the session file read, or None (no image, a refusal, or no file chosen).
        """
        from napari.utils.notifications import show_error, show_info, show_warning
        from qtpy.QtWidgets import QFileDialog

        w = self.widget
        if w.image.value is None:
            show_warning("open the image of the session first, then load the session")
            return None
        if w.runs.running:
            show_warning("a run is going: cancel it or let it finish, then load the session")
            return None
        if path is None:
            path, _ = QFileDialog.getOpenFileName(
                w.native, "Load session", str(self.default_path()), FILE_FILTER
            )
            if not path:
                return None
        path = Path(path).expanduser()
        notes: list[str] = []
        try:
            saved = read_session(path, image_shape=w.image_layers.shape)
            labels = self._read_labels(saved.labels_path(path), notes)
        except SamlungError as exc:
            show_error(str(exc))
            return None
        self._restore_controls(saved, notes)
        self._restore_prompts(saved)
        written = 0 if labels is None else self._restore_labels(labels, saved.edited_slices)
        for note in notes:
            show_warning(note)
        show_info(
            f"loaded the session {path.name}: {len(saved.slices)} prompted slices, labels on "
            f"{written} slices, model {w.model.value}, strategy {w.strategy.value}"
        )
        return path

    def _read_labels(self, path: Path | None, notes: list[str]) -> np.ndarray | None:
        """The saved labels (None: none saved, or the file is gone: a note says so)."""
        if path is None:
            return None
        if not path.is_file():
            notes.append(f"{path} is missing: the prompts and settings were loaded, no labels")
            return None
        data = np.asarray(read_image(path).data)
        shape = self.widget.image_layers.shape
        if data.shape != shape:
            raise ShapeMismatchError(
                f"{path}: labels of shape {data.shape} do not fit the image of shape {shape}; "
                "use the labels saved with this image"
            )
        if data.size and (data.min() < 0 or data.max() > 255 or not np.all(data == np.rint(data))):
            raise ShapeMismatchError(
                f"{path}: not lung labels (values outside 0..255 whole numbers); "
                "use the labels saved with the session"
            )
        return data.astype(np.uint8)

    def _restore_controls(self, saved: SessionFile, notes: list[str]) -> None:
        """Model (checkpoint, device), then the window, then the strategy."""
        w = self.widget
        if saved.model_id in public_models():
            checkpoint = saved.checkpoint
            if checkpoint and not Path(checkpoint).is_file():
                notes.append(f"checkpoint {checkpoint} is missing; choose it again")
                checkpoint = None
            with w.checkpoint.changed.blocked(), w.device.changed.blocked():
                if checkpoint:
                    w.checkpoint.value = checkpoint
                if saved.device in DEVICES:
                    w.device.value = saved.device
            if w.model.value != saved.model_id:
                w.model.value = saved.model_id  # configures the model with both
            else:
                w.device.changed.emit(w.device.value)  # the same model: a new checkpoint/device
        else:
            notes.append(
                f"model {saved.model_id!r} of the session is not available here; "
                f"kept {w.model.value}"
            )
        has_window = saved.window_level is not None and saved.window_width is not None
        if has_window and w.session.windowable:  # an X-ray has no window
            w.set_window(saved.window_level, saved.window_width)
        if saved.strategy in STRATEGIES:
            w.strategy.value = saved.strategy

    def _restore_prompts(self, saved: SessionFile) -> None:
        """The saved points and boxes become the only prompts (no segmentation runs)."""
        layers = self.widget.image_layers
        layers.restore_prompt_layers()
        points, shapes = layers.points_layer, layers.shapes_layer
        try:
            old = prompted_slices(points, shapes, self.widget.session.n_slices)
        except SamlungError:
            old = []

        def put_back() -> None:
            _clear_prompts(points, shapes)
            for s in saved.slices:
                replace_slice_prompts(points, shapes, s.slice_index, _prompts_of(s))

        touched = sorted(set(old) | {s.slice_index for s in saved.slices})
        self.widget.interactive.put_back_prompts(put_back, touched)

    def _restore_labels(self, labels: np.ndarray, edited_slices: list[int]) -> int:
        """Write the labels into the output (made when missing) as one undo step; returns the
        number of slices with lung.  Slices the user had edited stay protected."""
        layers, session = self.widget.image_layers, self.widget.session
        writer = layers.output()
        volume = labels if labels.ndim == 3 else labels[None]
        current = np.asarray(writer.layer.data)
        current = current if current.ndim == 3 else current[None]
        filled = volume.reshape(len(volume), -1).any(axis=1)
        had = current.reshape(len(current), -1).any(axis=1)
        slices = [int(z) for z in np.flatnonzero(filled | had)]
        writer.begin_group()
        try:
            for z in slices:
                writer.write_slice(z, volume[z])
        finally:
            writer.end_group()
        layers.generation += 1  # a result computed for the old labels is stale now
        writer.user_edited.update(z for z in edited_slices if 0 <= z < len(volume))
        with_lung = [int(z) for z in np.flatnonzero(filled)]
        has_truth = layers.truth_layer is not None and layers.ensure_truth()
        for z in with_lung:
            session.record_quality(z, volume[z])
            if has_truth:
                session.score(z, volume[z])
        self.widget.feedback.scores()
        return len(with_lung)


def _prompts_of(saved: SavedSlice) -> list[Prompt]:
    """The slice's points (one prompt) and boxes (one prompt each), to show in the layers."""
    prompts = []
    if len(saved.points_rc):
        prompts.append(Prompt(points_rc_to_xy(saved.points_rc), saved.point_labels))
    prompts.extend(Prompt(box_xyxy=box) for box in saved.boxes_xyxy)
    return prompts


def _clear_prompts(points, shapes) -> None:
    """Remove every point and box (the next click keeps its kind)."""
    defaults = points.feature_defaults.copy()
    points.data = np.zeros((0, points.ndim))
    points.features = pd.DataFrame({POSITIVE_FEATURE: pd.Series([], dtype=bool)})
    points.feature_defaults = defaults
    if len(shapes.data):
        shapes.selected_data = set(range(len(shapes.data)))
        shapes.remove_selected()
