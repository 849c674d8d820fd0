"""The interactive path: embed the slice on screen ahead of time, segment it from its prompts.

:class:`Interactive` listens to the viewer's slice position and to the
prompt layers of :class:`~napari_samlung._napari.layers.ImageLayers`:

- moving to another slice embeds it in the background (one embedding at a
  time; the latest slice asked for wins);
- an edit of the points or boxes is debounced (:attr:`Interactive.debounce`)
  and then segments that slice, unless its prompts did not really change;
- "Slice from GT" shows the generated prompts and segments;
- "Clear slice" erases the slice's labels and prompts.

Every model call is a job of :class:`~napari_samlung._napari.workers.Workers`;
layers are only touched on the main thread, in the job's callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning

from ..errors import PromptError, SamlungError
from .layers import ImageLayers
from .prompt_layers import (
    BOX_ONLY_MESSAGE,
    POSITIVE_FEATURE,
    SlicePrompts,
    clear_slice_prompts,
    read_slice_prompts,
    replace_slice_prompts,
    user_prompts,
)
from .session import LungSession
from .workers import Debounce, Feedback, Workers, load_model, notify_error

#: Quiet time after the last prompt edit before the slice is segmented.
PROMPT_DEBOUNCE_MS = 150
_SETTLED = {"added", "removed", "changed"}


def _embed_job(session: LungSession, slice_index: int):
    yield from load_model(session)
    return session.embed(slice_index)


def _segment_job(session: LungSession, slice_index: int, prompts, strategy):
    yield from load_model(session)
    return session.segment(slice_index, prompts, strategy)


class Interactive:
    """Embedding ahead, debounced prompt edits and per-slice segmentation.

    Parameters
    ----------
    layers
        The layers being worked on (shared with the long runs).
    workers
        Runs the model calls.
    feedback
        Where status and scores are shown.
    """

    def __init__(self, layers: ImageLayers, workers: Workers, feedback: Feedback) -> None:
        self.layers = layers
        self.session: LungSession = layers.session
        self.viewer = layers.viewer
        self.workers = workers
        self.feedback = feedback
        #: Shift+click adds the other kind of point than this default.
        self.negative_default = False
        self._connected: tuple = (None, None)  # the prompt layers we listen to
        self._last_slice: int | None = None
        self._last_sig: dict[int, tuple] = {}
        self._points_seen: dict[int, int] = {}  # points per slice at the last segmentation
        self._suppress_prompts = False
        self._segmenting = False
        self._prompts_dirty = False
        self._embedding = False
        self._embed_again = False
        self._model_failed = False
        #: Quiet time after the last prompt edit before the slice is segmented.
        self.debounce = Debounce(PROMPT_DEBOUNCE_MS, self.segment_from_prompts)
        self.viewer.dims.events.current_step.connect(self._on_step)
        self.viewer.dims.events.ndisplay.connect(self._on_step)
        layers.output_listeners.append(self._on_output_changed)

    # ------------------------------------------------------------------ state

    def close(self) -> None:
        """Stop the debounce and stop listening to the viewer and the prompt layers."""
        self.debounce.close()
        self.viewer.dims.events.current_step.disconnect(self._on_step)
        self.viewer.dims.events.ndisplay.disconnect(self._on_step)
        self._listen_to(None, None)

    def image_changed(self) -> None:
        """The image (and its prompt layers) changed: listen to the new prompt layers."""
        self._listen_to(self.layers.points_layer, self.layers.shapes_layer)
        self.set_negative_default(self.negative_default)
        self._last_slice = None

    def _listen_to(self, points, shapes) -> None:
        old_points, old_shapes = self._connected
        for layer in (old_points, old_shapes):
            if layer is not None:
                layer.events.data.disconnect(self._on_prompt_edit)
        if old_points is not None:
            old_points.events.features.disconnect(self._on_prompt_edit)
            if self._on_points_press in old_points.mouse_drag_callbacks:
                old_points.mouse_drag_callbacks.remove(self._on_points_press)
        self._connected = (points, shapes)
        if points is not None:
            points.events.data.connect(self._on_prompt_edit)
            points.events.features.connect(self._on_prompt_edit)
            points.mouse_drag_callbacks.insert(0, self._on_points_press)
        if shapes is not None:
            shapes.events.data.connect(self._on_prompt_edit)

    def _on_output_changed(self) -> None:
        self._last_sig.clear()
        self._points_seen.clear()
        self.feedback.summary = ""

    # ------------------------------------------------------------------ embedding

    def _on_step(self, event=None) -> None:
        z = self.layers.current_slice()
        if z == self._last_slice:
            return
        self._last_slice = z
        self.request_embed()
        self.feedback.scores()

    def model_changed(self) -> None:
        """The model, its checkpoint or the device changed: embed and segment again."""
        self._model_failed = False
        self.request_embed()
        self.segment_from_prompts()

    def window_changed(self) -> None:
        """The CT window changed: re-embed, and re-segment the slice's prompts."""
        self.request_embed()
        self.segment_from_prompts()

    def request_embed(self) -> None:
        """Embed the slice on screen in a worker (one at a time; the latest slice wins)."""
        z = self.layers.current_slice()
        if z is None:
            if self.layers.image_layer is not None and not self.session.is_2d:
                self.feedback.status("switch to a 2D view of the slices to segment")
            return
        if self._model_failed:
            return
        if self._embedding:
            self._embed_again = True
            return
        if self.session.is_embedded(z):
            self.feedback.status(f"slice {z} ready")
            return
        self._embedding = True
        if self.session.model_loaded:
            self.feedback.status(f"embedding slice {z}…")
        else:
            self.feedback.status(
                f"loading model {self.session.model_id}, then embedding slice {z}…"
            )
        self.workers.start(
            _embed_job,
            self.session,
            z,
            on_return=lambda z_done: self.feedback.status(f"slice {z_done} ready"),
            on_error=self._on_model_error,
            on_done=self._on_embed_done,
        )

    def _on_embed_done(self) -> None:
        self._embedding = False
        if self._embed_again:
            self._embed_again = False
            self.request_embed()

    def _on_model_error(self, error: BaseException) -> None:
        self._model_failed = True
        self.feedback.status("model not available: see the notification")
        notify_error(error)

    # ------------------------------------------------------------------ prompts

    def _on_points_press(self, layer, event) -> None:
        """Shift+click adds a negative point (or a positive one while 'negative' is on)."""
        if str(layer.mode) != "add":
            return
        negative = self.negative_default != ("Shift" in event.modifiers)
        if bool(layer.feature_defaults[POSITIVE_FEATURE].iloc[0]) == negative:
            layer.feature_defaults = {POSITIVE_FEATURE: not negative}

    def set_negative_default(self, negative: bool) -> None:
        """Make new points negative (True) or positive (False) by default."""
        self.negative_default = bool(negative)
        if self.layers.points_layer is not None:
            self.layers.points_layer.feature_defaults = {POSITIVE_FEATURE: not negative}

    def _on_prompt_edit(self, event=None) -> None:
        if self._suppress_prompts:
            return
        action = str(getattr(getattr(event, "action", None), "value", "changed"))
        if action not in _SETTLED:
            return
        self.debounce.start()

    def put_back_prompts(self, put_back: Callable[[], None], slices: Iterable[int]) -> None:
        """Rewrite the prompt layers with ``put_back()`` without segmenting: the prompts it
        leaves on ``slices`` count as segmented already (a loaded session's labels stay)."""
        self._suppress_prompts = True
        try:
            put_back()
        finally:
            self._suppress_prompts = False
        self.debounce.stop()
        layers = self.layers
        for z in slices:
            shown = read_slice_prompts(layers.points_layer, layers.shapes_layer, z)
            self._last_sig[z] = self._signature(shown)
            self._points_seen[z] = len(shown.points_rc)

    def _signature(self, prompts: SlicePrompts) -> tuple:
        return (prompts.signature(), self.session.model_key(), self.session.accepts_points)

    def segment_again(self, slice_index: int) -> None:
        """Segment the slice on screen from its prompts now, even if they did not change
        (the user asked: a slice they painted is redone too, as one undo step)."""
        self._last_sig.pop(int(slice_index), None)
        self.debounce.stop()
        self.segment_from_prompts()

    def segment_from_prompts(self) -> None:
        """Segment the slice on screen from its points and boxes, if they changed."""
        layers = self.layers
        z = layers.current_slice()
        if z is None or layers.output() is None:
            return
        if self._segmenting:
            self._prompts_dirty = True
            return
        if getattr(layers.shapes_layer, "_is_creating", False):  # a box is being drawn
            self.debounce.start()
            return
        writer = layers.writer
        here = read_slice_prompts(layers.points_layer, layers.shapes_layer, z)
        sig = self._signature(here)
        previous = self._last_sig.get(z)
        if previous == sig:
            return
        self._last_sig[z] = sig
        if previous is not None and previous[0] == sig[0] and z in writer.user_edited:
            # only the model or the window changed: the user's paint stays
            self.feedback.status(f"slice {z} kept as you edited it; change its prompts to redo it")
            return
        n_points = len(here.points_rc)
        if n_points > self._points_seen.get(z, 0) and not self.session.accepts_points:
            show_info(BOX_ONLY_MESSAGE)
        self._points_seen[z] = n_points
        if here.empty:
            if z in writer.plugin_written:
                writer.clear_slice(z)
                self.session.forget_score(z)
                self.feedback.scores()
            return
        prompts = user_prompts(here, self.session, z)
        if not prompts:
            self.feedback.status(BOX_ONLY_MESSAGE)
            return
        try:
            prompts = self.session.check_prompts(z, prompts)
        except PromptError as exc:
            show_warning(str(exc))
            return
        self._segment(z, prompts, None)

    def _segment(self, z: int, prompts, strategy) -> None:
        self._segmenting = True
        loading = "" if self.session.model_loaded else f"loading model {self.session.model_id}, "
        self.feedback.status(f"{loading}segmenting slice {z}…")
        self.workers.start(
            _segment_job,
            self.session,
            z,
            prompts,
            strategy,
            on_return=partial(self._on_segmented, z, self.layers.generation),
            on_error=partial(self._on_segment_error, z),
            on_done=self._on_segment_done,
        )

    def _on_segmented(self, z: int, generation: int, result: tuple[np.ndarray, float]) -> None:
        layers = self.layers
        if generation != layers.generation or layers.writer is None:
            return  # the image or the output changed meanwhile: the result is stale
        labels, predicted_iou = result
        layers.writer.write_slice(z, labels)
        self.feedback.summary = ""
        self.session.record_quality(z, labels, predicted_iou)
        if layers.ensure_truth():
            self.session.score(z, labels)
        self.feedback.status(f"slice {z} segmented")
        self.feedback.scores()

    def _on_segment_error(self, z: int, error: BaseException) -> None:
        self._last_sig.pop(z, None)  # allow a retry with the same prompts
        if not isinstance(error, PromptError):
            self._model_failed = not self.session.model_loaded
        failed = self._model_failed and not self.session.model_loaded
        self.feedback.status(
            "model not available: see the notification" if failed else f"slice {z} not segmented"
        )
        notify_error(error)

    def _on_segment_done(self) -> None:
        self._segmenting = False
        if self._prompts_dirty:
            self._prompts_dirty = False
            self.segment_from_prompts()

    # ------------------------------------------------------------------ buttons

    def segment_slice_from_truth(self) -> None:
        """Prompt the slice on screen from the ground truth, show the prompts, segment."""
        layers = self.layers
        z = layers.current_slice()
        if z is None or layers.output() is None:
            show_warning("choose an image and go to a 2D view of its slices first")
            return
        if not layers.ensure_truth():
            if layers.truth_layer is None:  # else ensure_truth said what is wrong with it
                show_warning("choose a ground-truth Labels layer first")
            return
        if self._segmenting:
            show_info("a slice is being segmented; try again in a moment")
            return
        try:
            prompts = self.session.prompts_from_truth(z)
        except SamlungError as exc:
            show_error(str(exc))
            return
        if not prompts:
            show_info(f"no lung in the ground truth on slice {z}")
            return
        layers.restore_prompt_layers()
        self._suppress_prompts = True
        try:
            replace_slice_prompts(layers.points_layer, layers.shapes_layer, z, prompts)
        finally:
            self._suppress_prompts = False
        # The prompts now on screen are what was segmented: no second run for them.
        shown = read_slice_prompts(layers.points_layer, layers.shapes_layer, z)
        self._last_sig[z] = self._signature(shown)
        self._points_seen[z] = len(shown.points_rc)
        self._segment(z, prompts, self.session.strategy)

    def clear_slice(self) -> None:
        """Erase the output and the prompts of the slice on screen (undoable)."""
        layers = self.layers
        z = layers.current_slice()
        if z is None or layers.writer is None:
            return
        self._suppress_prompts = True
        try:
            clear_slice_prompts(layers.points_layer, layers.shapes_layer, z)
        finally:
            self._suppress_prompts = False
        self._last_sig[z] = self._signature(SlicePrompts())
        layers.writer.clear_slice(z)
        self.session.forget_score(z)
        self.feedback.status(f"slice {z} cleared")
        self.feedback.scores()
