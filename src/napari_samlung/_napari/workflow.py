"""The widget's workflow: napari layers + session + background workers.

:class:`Workflow` ties the layers of one image (the image, the prompt layers,
the output Labels layer, the ground truth) to a Qt-free
:class:`~napari_samlung._napari.session.LungSession`.  It runs every model
call in a thread_worker, debounces prompt edits, writes results through an
:class:`~napari_samlung._napari.output.OutputWriter` (undoable) and reports
through callbacks: ``on_status(text)``, ``on_scores()`` and ``on_running(bool)``
(a volume run or a propagation started or ended).  Propagation lives in
:mod:`napari_samlung._napari.propagation`.

Threading rule: layers are only touched on the main thread (in the callbacks
of the workers); the workers only touch the session.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal

from ..errors import PromptError, SamlungError
from .output import OutputWriter, ProvenanceBook
from .prompt_layers import (
    BOX_ONLY_MESSAGE,
    POSITIVE_FEATURE,
    SlicePrompts,
    clear_slice_prompts,
    read_slice_prompts,
    replace_slice_prompts,
)
from .propagation import PropagationMixin
from .session import LungSession
from .workers import Tasks

#: Quiet time after the last prompt edit before the slice is segmented.
PROMPT_DEBOUNCE_MS = 150
__all__ = ["BOX_ONLY_MESSAGE", "Workflow", "notify_error"]
_SETTLED = {"added", "removed", "changed"}


def notify_error(error: BaseException) -> None:
    """One-line notification for an error from a worker (no traceback dialog)."""
    if isinstance(error, SamlungError):
        show_error(str(error))
    elif isinstance(error, MemoryError):
        show_error("out of memory: choose a smaller model, the CPU, or a smaller image")
    else:
        show_error(f"{type(error).__name__}: {error}")


def _ignore(*args) -> None:
    pass


class _DownloadRelay(QObject):
    """Carries download progress from the loading thread to the main thread."""

    bytes_done = Signal(object, object)  # done_bytes, total_bytes or None


class Workflow(PropagationMixin):
    """Segmentation workflow for the layers of one image."""

    def __init__(
        self,
        viewer,
        session: LungSession,
        on_status: Callable[[str], None],
        on_scores: Callable[[], None],
    ) -> None:
        self.viewer = viewer
        self.session = session
        self.on_status = on_status
        self.on_scores = on_scores
        self.on_running: Callable[[bool], None] = _ignore
        #: Called (main thread) to create the output layer when there is none.
        self.make_output: Callable[[], object] | None = None
        self.tasks = Tasks()
        self.image_layer = None
        self.points_layer = None
        self.shapes_layer = None
        self.truth_layer = None
        self.writer: OutputWriter | None = None
        self._provenance = ProvenanceBook()  # who wrote what, per output layer
        self.summary_text = ""
        self._truth_dirty = True
        self._last_sig: dict[int, tuple] = {}
        self._points_seen: dict[int, int] = {}  # points per slice at the last segmentation
        self._suppress_prompts = False
        self._segmenting = False
        self._prompts_dirty = False
        self._embedding = False
        self._embed_again = False
        self._model_failed = False
        # one long run at a time: a volume run or a propagation
        self._run_worker = None
        self._run_cancel: Callable[[], None] = _ignore
        self._run_writer: OutputWriter | None = None
        self._run_token = -1
        self._progress = None
        self._run_total = 0
        self._run_done = 0
        self._prop: dict | None = None  # the propagation in progress
        # weights downloads (first use of a SAM ViT): a progress bar in MiB
        self._download_bar = None
        self._download_latest: tuple[int, int | None] | None = None
        self._download_busy = False
        self._relay = _DownloadRelay()
        self._relay.bytes_done.connect(self._on_download_bytes)
        session.on_download = self._relay.bytes_done.emit
        self.negative_default = False
        self._token = 0  # changes whenever the image or output changes
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(PROMPT_DEBOUNCE_MS)
        self._timer.timeout.connect(self.segment_from_prompts)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.dims.events.ndisplay.connect(self._on_step)
        self._last_slice: int | None = None

    # ------------------------------------------------------------------ state

    @property
    def busy(self) -> bool:
        """True while a worker runs or a prompt edit waits for its debounce."""
        return self.tasks.busy or self._timer.isActive()

    @property
    def running(self) -> bool:
        """True while a volume run or a propagation runs."""
        return self._run_worker is not None

    volume_running = running

    def close(self) -> None:
        """Stop the workers; from now on nothing reaches the (closing) widget."""
        self.on_status = self.on_scores = self.on_running = _ignore
        self.session.on_download = None
        self._close_download_bar()
        self._timer.stop()
        self._run_cancel()
        self.tasks.quit_all()
        self.viewer.dims.events.current_step.disconnect(self._on_step)
        self.viewer.dims.events.ndisplay.disconnect(self._on_step)
        self.set_image_layers(None, None, None)
        self.set_truth_layer(None)

    def current_slice(self) -> int | None:
        """The image slice on screen, or None (no image, 3D view, or a rolled axis)."""
        layer = self.image_layer
        if layer is None:
            return None
        if self.session.is_2d:
            return 0
        dims = self.viewer.dims
        if dims.ndisplay != 2 or (dims.ndim - 3) in dims.displayed:
            return None
        position = layer.world_to_data(dims.point)
        return self.session.clamp(int(round(float(position[0]))))

    # ------------------------------------------------------------------ layers

    def set_image_layers(self, image, points, shapes) -> None:
        """Use this image and its prompt layers (None: no image); the model is kept."""
        for layer in (self.points_layer, self.shapes_layer):
            if layer is not None:
                layer.events.data.disconnect(self._on_prompt_edit)
        if self.points_layer is not None:
            self.points_layer.events.features.disconnect(self._on_prompt_edit)
            cbs = self.points_layer.mouse_drag_callbacks
            if self._on_points_press in cbs:
                cbs.remove(self._on_points_press)
        self.image_layer, self.points_layer, self.shapes_layer = image, points, shapes
        if points is not None:
            points.events.data.connect(self._on_prompt_edit)
            points.events.features.connect(self._on_prompt_edit)
            points.mouse_drag_callbacks.insert(0, self._on_points_press)
        if shapes is not None:
            shapes.events.data.connect(self._on_prompt_edit)
        self._last_slice = None
        self.set_output(None)

    def set_output(self, layer) -> None:
        """Write into this Labels layer (None: made by ``make_output`` when first needed).

        A run in progress is stopped: its results belong to the old output.
        """
        self._run_cancel()
        if self.writer is not None:
            self.writer.disconnect()
            self.writer = None
        if layer is not None:
            self.writer = OutputWriter(
                layer, on_user_edit=self._on_user_edit, provenance=self._provenance.of(layer)
            )
        self._token += 1
        self._last_sig.clear()
        self._points_seen.clear()
        self.session.reset_scores()
        self.summary_text = ""

    def output(self) -> OutputWriter | None:
        """The output writer, creating the output layer when there is none."""
        if self.writer is None and self.image_layer is not None and self.make_output is not None:
            self.set_output(self.make_output())
        return self.writer

    def set_truth_layer(self, layer) -> None:
        if self.truth_layer is not None:
            self.truth_layer.events.data.disconnect(self._on_truth_edit)
            self.truth_layer.events.paint.disconnect(self._on_truth_edit)
        self.truth_layer = layer
        self.session.truth = None
        self._truth_dirty = True
        if layer is not None:
            layer.events.data.connect(self._on_truth_edit)
            layer.events.paint.connect(self._on_truth_edit)

    def _on_truth_edit(self, event=None) -> None:
        self._truth_dirty = True

    def ensure_truth(self) -> bool:
        """Load the ground truth into the session; False (with a notification) if unusable."""
        if self.truth_layer is None:
            self.session.truth = None
            return False
        if self._truth_dirty or self.session.truth is None:
            try:
                self.session.set_truth(np.asarray(self.truth_layer.data))
            except SamlungError as exc:
                show_error(str(exc))
                return False
            self._truth_dirty = False
        return True

    # ------------------------------------------------------------------ embedding

    def _on_step(self, event=None) -> None:
        z = self.current_slice()
        if z == self._last_slice:
            return
        self._last_slice = z
        self.request_embed()
        self.on_scores()

    def model_changed(self) -> None:
        """The model, its checkpoint or the device changed: embed the slice again."""
        self._model_failed = False
        self.request_embed()

    def request_embed(self) -> None:
        """Embed the slice on screen in a worker (one at a time; the latest slice wins)."""
        z = self.current_slice()
        if z is None:
            if self.image_layer is not None and not self.session.is_2d:
                self.on_status("switch to a 2D view of the slices to segment")
            return
        if self._model_failed:
            return
        if self._embedding:
            self._embed_again = True
            return
        if self.session.is_embedded(z):
            self.on_status(f"slice {z} ready")
            return
        self._embedding = True
        if self.session.model_loaded:
            self.on_status(f"embedding slice {z}…")
        else:
            self.on_status(f"loading model {self.session.model_id}, then embedding slice {z}…")
        self.tasks.start(
            self.session.embed,
            z,
            on_result=lambda z_done: self.on_status(f"slice {z_done} ready"),
            on_error=self._on_model_error,
            on_done=self._on_embed_done,
        )

    def _on_download_bytes(self, done: int, total: int | None) -> None:
        """Main thread: show how much of the weights has arrived.

        napari's progress bar processes Qt events while it draws, so the next
        report can arrive inside this one: it is only recorded, and the outer
        call shows the newest report when it is done."""
        self._download_latest = (done, total)
        if self._download_busy:
            return
        self._download_busy = True
        try:
            while self._download_latest is not None:
                done, total = self._download_latest
                self._download_latest = None
                self._show_download(done, total)
        finally:
            self._download_busy = False

    def _show_download(self, done: int, total: int | None) -> None:
        mib = int(done // 2**20)
        total_mib = None if total is None else max(1, -(-int(total) // 2**20))
        if self._download_bar is None:
            self._download_bar = progress(
                total=total_mib, desc=f"downloading {self.session.model_id} weights (MiB)"
            )
        finished = total is not None and done >= total
        target = total_mib if finished else mib
        if target > self._download_bar.n:
            self._download_bar.update(target - self._download_bar.n)
        of = f" of {total_mib}" if total_mib is not None else ""
        self.on_status(f"downloading {self.session.model_id} weights: {target}{of} MiB…")
        if finished:
            self._close_download_bar()

    def _close_download_bar(self) -> None:
        if self._download_bar is not None:
            self._download_bar.close()
            self._download_bar = None

    def _on_embed_done(self) -> None:
        self._close_download_bar()  # finished, or failed part way (the error says so)
        self._embedding = False
        if self._embed_again:
            self._embed_again = False
            self.request_embed()

    def _on_model_error(self, error: BaseException) -> None:
        self._close_download_bar()
        self._model_failed = True
        self.on_status("model not available: see the notification")
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
        self.negative_default = bool(negative)
        if self.points_layer is not None:
            self.points_layer.feature_defaults = {POSITIVE_FEATURE: not negative}

    def _on_prompt_edit(self, event=None) -> None:
        if self._suppress_prompts:
            return
        action = str(getattr(getattr(event, "action", None), "value", "changed"))
        if action not in _SETTLED:
            return
        self._timer.start()

    def _signature(self, prompts: SlicePrompts) -> tuple:
        return (prompts.signature(), self.session.model_key(), self.session.accepts_points)

    def segment_from_prompts(self) -> None:
        """Segment the slice on screen from its points and boxes, if they changed."""
        z = self.current_slice()
        if z is None or self.output() is None:
            return
        if self._segmenting:
            self._prompts_dirty = True
            return
        if getattr(self.shapes_layer, "_is_creating", False):  # a box is being drawn
            self._timer.start()
            return
        here = read_slice_prompts(self.points_layer, self.shapes_layer, z)
        sig = self._signature(here)
        previous = self._last_sig.get(z)
        if previous == sig:
            return
        self._last_sig[z] = sig
        if previous is not None and previous[0] == sig[0] and z in self.writer.user_edited:
            # only the model or the window changed: the user's paint stays
            self.on_status(f"slice {z} kept as you edited it; change its prompts to redo it")
            return
        n_points = len(here.points_rc)
        if n_points > self._points_seen.get(z, 0) and not self.session.accepts_points:
            show_info(BOX_ONLY_MESSAGE)
        self._points_seen[z] = n_points
        if here.empty:
            if z in self.writer.plugin_written:
                self.writer.clear_slice(z)
                self.session.forget_score(z)
                self.on_scores()
            return
        prompts = here.to_prompts(self.session.accepts_points)
        if not prompts:
            self.on_status(BOX_ONLY_MESSAGE)
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
        self.on_status(f"{loading}segmenting slice {z}…")
        self.tasks.start(
            self.session.segment,
            z,
            prompts,
            strategy,
            on_result=partial(self._on_segmented, z, self._token),
            on_error=partial(self._on_segment_error, z),
            on_done=self._on_segment_done,
        )

    def _on_segmented(self, z: int, token: int, labels: np.ndarray) -> None:
        if token != self._token or self.writer is None:
            return  # the image or the output changed meanwhile: the result is stale
        self.writer.write_slice(z, labels)
        self.summary_text = ""
        if self.ensure_truth():
            self.session.score(z, labels)
        self.on_status(f"slice {z} segmented")
        self.on_scores()

    def _on_segment_error(self, z: int, error: BaseException) -> None:
        self._last_sig.pop(z, None)  # allow a retry with the same prompts
        if not isinstance(error, PromptError):
            self._model_failed = not self.session.model_loaded
        failed = self._model_failed and not self.session.model_loaded
        self.on_status(
            "model not available: see the notification" if failed else f"slice {z} not segmented"
        )
        notify_error(error)

    def _on_segment_done(self) -> None:
        self._segmenting = False
        if self._prompts_dirty:
            self._prompts_dirty = False
            self.segment_from_prompts()

    # ------------------------------------------------------------------ from ground truth

    def segment_slice_from_truth(self) -> None:
        """Prompt the slice on screen from the ground truth, show the prompts, segment."""
        z = self.current_slice()
        if z is None or self.output() is None:
            show_warning("choose an image and go to a 2D view of its slices first")
            return
        if not self.ensure_truth():
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
        self._restore_prompt_layers()
        self._suppress_prompts = True
        try:
            replace_slice_prompts(self.points_layer, self.shapes_layer, z, prompts)
        finally:
            self._suppress_prompts = False
        # The prompts now on screen are what was segmented: no second run for them.
        shown = read_slice_prompts(self.points_layer, self.shapes_layer, z)
        self._last_sig[z] = self._signature(shown)
        self._points_seen[z] = len(shown.points_rc)
        self._segment(z, prompts, self.session.strategy)

    def _restore_prompt_layers(self) -> None:
        """Put back prompt layers the user deleted, so generated prompts are visible."""
        for layer in (self.shapes_layer, self.points_layer):
            if layer is not None and layer not in self.viewer.layers:
                self.viewer.layers.append(layer)

    def segment_volume_from_truth(self, overwrite_edited: bool = False) -> None:
        """Segment every slice with lung in a worker; slices the user edited are kept."""
        if self.running:
            show_info("a run is in progress; wait for it or press Cancel")
            return
        if self.output() is None:
            show_warning("choose an image first")
            return
        if not self.ensure_truth():
            show_warning("choose a ground-truth Labels layer first")
            return
        lung = self.session.lung_slices()
        protected = set() if overwrite_edited else self.writer.protected_slices()
        todo = [z for z in lung if z not in protected]
        kept = len(lung) - len(todo)
        if kept:
            show_info(
                f"{kept} slice(s) with your own edits are kept; tick 'overwrite edited "
                "slices' to segment them too"
            )
        if not todo:
            show_info("nothing to segment: no slice with lung left")
            return
        self.session.skipped_empty = self.session.n_slices - len(lung)
        self.summary_text = ""
        self.on_status(f"segmenting {len(todo)} slices…")
        self._start_run(
            self._volume_job,
            todo,
            total=len(todo),
            desc="napari-samlung: segmenting volume",
            on_yield=partial(self._on_volume_slice, self._token),
            on_done=self._on_volume_done,
        )

    def _start_run(
        self, fn, *args, total, desc, on_yield=None, on_result=None, on_done, cancel=None
    ) -> None:
        """Start a long run (volume or propagation): one undo step, a progress bar."""
        self._run_total, self._run_done = total, 0
        self._run_writer, self._run_token = self.writer, self._token
        self._progress = progress(total=total, desc=desc)
        self.writer.begin_group()
        worker = self.tasks.start(
            fn,
            *args,
            on_yield=on_yield,
            on_result=on_result,
            on_error=notify_error,
            on_done=on_done,
        )
        self._run_worker = worker
        self._run_cancel = cancel or worker.quit
        self.on_running(True)

    def _finish_run(self) -> None:
        """Commit the run's writes as one undo step; close the progress bar."""
        self._run_worker = None
        self._run_cancel = _ignore
        writer, self._run_writer = self._run_writer, None
        if writer is not None:
            writer.end_group()
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self.on_running(False)

    def _volume_job(self, todo: list[int]):
        yield from self.session.iter_volume(todo)

    def _on_volume_slice(self, token: int, result) -> None:
        if token != self._token or self.writer is None:
            return
        self.writer.write_slice(result.slice_index, result.labels)
        if result.metrics is not None:
            self.session.scores[result.slice_index] = result.metrics
        self._run_done += 1
        self.on_status(f"segmented slice {result.slice_index} ({self._run_done}/{self._run_total})")
        self.on_scores()
        # Last: napari's progress bar processes Qt events, so the next slices (and the
        # end of the run) may be handled inside this call.
        if self._progress is not None:
            self._progress.update(1)

    def cancel_run(self) -> None:
        """Stop the volume run or propagation after the slice being segmented."""
        if self._run_worker is not None:
            self.on_status("cancelling after the current slice…")
            self._run_cancel()

    cancel_volume = cancel_run

    def _on_volume_done(self) -> None:
        self._finish_run()
        done, total = self._run_done, self._run_total
        head = (
            f"volume: {done} slices segmented"
            if done == total
            else f"volume cancelled: {done} of {total} slices segmented"
        )
        self.summary_text = head + "\n" + self.session.summary().format_table()
        self.on_status(head)
        self.on_scores()

    # ------------------------------------------------------------------ editing

    def clear_slice(self) -> None:
        """Erase the output and the prompts of the slice on screen (undoable)."""
        z = self.current_slice()
        if z is None or self.writer is None:
            return
        self._suppress_prompts = True
        try:
            clear_slice_prompts(self.points_layer, self.shapes_layer, z)
        finally:
            self._suppress_prompts = False
        self._last_sig[z] = self._signature(SlicePrompts())
        self.writer.clear_slice(z)
        self.session.forget_score(z)
        self.on_status(f"slice {z} cleared")
        self.on_scores()

    def _on_user_edit(self, slices: set[int]) -> None:
        """The user painted: rescore those slices against the ground truth."""
        if self.writer is None or self.truth_layer is None or not self.ensure_truth():
            return
        rescored = [z for z in sorted(slices) if z in self.session.scores]
        for z in rescored:
            self.session.score(z, np.asarray(self.writer.slice_view(z)))
        if rescored:
            self.on_scores()

    def window_changed(self) -> None:
        """The CT window changed: re-embed, and re-segment the slice's prompts."""
        self.request_embed()
        self.segment_from_prompts()
