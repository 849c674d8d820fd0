"""Long runs in the widget: a volume from the ground truth or automatically, or a propagation.

:class:`Runs` runs one at a time, in a job of
:class:`~napari_samlung._napari.workers.Workers` that yields each slice as it
is done, and shows it at once:

- the whole run is one undo step (Ctrl-Z), with a progress bar;
- slices the user painted (or labels the plugin did not write) are kept
  unless "overwrite slices I edited" is ticked;
- Cancel stops after the slice being segmented; every slice shown is whole;
- a change of image or output stops the run, and its late slices are dropped.

The automatic run (CT only) finds the candidate lungs from the CT's air in
its worker (:meth:`~napari_samlung._napari.session.LungSession.lung_candidates`,
once per image) and prompts the model on every slice with candidate lung
(:func:`napari_samlung.core.auto.iter_segment_auto`); lung-free slices are
never written.

Propagation starts from every slice with points or boxes
(:func:`~napari_samlung._napari.prompt_layers.seeds_from_layers`) and runs
:func:`napari_samlung.core.propagation.propagate`, guarded on CT by the same
candidate lungs (it stops where the CT's air ends).  Slices an earlier
propagation wrote that this run no longer reaches are cleared (a correction
that stops a leak removes the leak), in the same undo step.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from napari.utils import progress
from napari.utils.notifications import show_info, show_warning

from ..core.propagation import PropagationResult, PropagationSettings
from ..errors import PromptError
from .layers import ImageLayers
from .output import OutputWriter
from .prompt_layers import seeds_from_layers
from .run_jobs import (
    AUTO_XRAY_MESSAGE,
    OVERWRITE_EDITED_TEXT,
    Planned,
    auto_job,
    propagation_job,
    volume_job,
)
from .session import LungSession
from .workers import Feedback, Workers, notify_error


@dataclass
class _Run:
    """One long run: where it writes and how far it got."""

    writer: OutputWriter
    generation: int
    total: int | None  # None: not known yet (an automatic run before its candidates)
    bar: object
    cancel: Callable[[], None] = lambda: None
    done: int = 0
    # propagation only
    seeds: list[int] = field(default_factory=list)
    protected: set[int] = field(default_factory=set)
    written: set[int] = field(default_factory=set)
    kept: set[int] = field(default_factory=set)
    result: PropagationResult | None = None
    # automatic only: the slices with candidate lung it segments
    planned: list[int] = field(default_factory=list)


class Runs:
    """Volume runs and propagations for the layers of one image.

    Parameters
    ----------
    layers
        The layers being worked on (shared with the interactive path).
    workers
        Runs the jobs.
    feedback
        Where status, scores, the run state and the volume summary are shown.
    """

    def __init__(self, layers: ImageLayers, workers: Workers, feedback: Feedback) -> None:
        self.layers = layers
        self.session: LungSession = layers.session
        self.workers = workers
        self.feedback = feedback
        #: When a propagation stops early (tests use permissive settings).
        self.propagation_settings = PropagationSettings()
        #: On CT, propagation stops where the CT's air ends (the candidate lungs).
        self.guard_with_candidates = True
        self._run: _Run | None = None
        self._last_done = 0
        #: Called after each volume run from the ground truth ends (the summary is set).
        self.volume_listeners: list[Callable[[], None]] = []
        layers.output_listeners.append(self._stop)  # its results belong to the old output

    @property
    def running(self) -> bool:
        """True while a volume run or a propagation runs."""
        return self._run is not None

    @property
    def slices_done(self) -> int:
        """Slices the run in progress (or the last one) has shown so far."""
        return self._last_done

    def cancel(self) -> None:
        """Stop the run after the slice being segmented (nothing when none runs)."""
        if self._run is not None:
            self.feedback.status("cancelling after the current slice…")
            self._run.cancel()

    def _stop(self) -> None:
        if self._run is not None:
            self._run.cancel()

    def close(self) -> None:
        """Stop the run and close its progress bar (the widget is going away)."""
        run, self._run = self._run, None
        if run is not None:
            run.cancel()
            run.bar.close()

    def _start(
        self, job, *args, total: int | None, desc: str, on_yield, on_done, **run_kwargs
    ) -> _Run:
        """Start a long run: one undo step, a progress bar."""
        writer = self.layers.writer
        run = _Run(writer, self.layers.generation, total, progress(total=total, desc=desc))
        for key, value in run_kwargs.items():
            setattr(run, key, value)
        self._run, self._last_done = run, 0
        writer.begin_group()
        worker = self.workers.start(
            job,
            *args,
            on_yield=partial(on_yield, run),
            on_return=lambda value: setattr(run, "result", value),
            on_error=notify_error,
            on_done=partial(on_done, run),
        )
        if "cancel" not in run_kwargs:
            run.cancel = worker.quit
        self.feedback.running(True)
        return run

    def _can_start(self) -> bool:
        """Whether a run may start now: none runs, and there is an image (else says why)."""
        if self.running:
            show_info("a run is in progress; wait for it or press Cancel")
            return False
        if self.layers.output() is None:
            show_warning("choose an image first")
            return False
        return True

    def _current(self, run: _Run) -> bool:
        """Whether ``run``'s results still belong on screen."""
        return run is self._run and self._current_generation(run)

    def _current_generation(self, run: _Run) -> bool:
        """Whether ``run`` still writes to the image and output on screen."""
        return run.generation == self.layers.generation and self.layers.writer is not None

    def _count(self, run: _Run) -> None:
        run.done += 1
        self._last_done = run.done

    def _finish(self, run: _Run) -> None:
        """Commit the run's writes as one undo step; close the progress bar."""
        if run is self._run:
            self._run = None
        run.writer.end_group()
        run.bar.close()
        self.feedback.running(False)

    # ------------------------------------------------------------------ volume

    def segment_volume_from_truth(self, overwrite_edited: bool = False) -> bool:
        """Segment every slice with lung in a worker; slices the user edited are kept.

        Returns False when the run did not start (a notification says why).
        """
        layers = self.layers
        if not self._can_start():
            return False
        if not layers.ensure_truth():
            if layers.truth_layer is None:  # else ensure_truth said what is wrong with it
                show_warning("choose a ground-truth Labels layer first")
            return False
        lung = self.session.lung_slices()
        protected = set() if overwrite_edited else layers.writer.protected_slices()
        todo = [z for z in lung if z not in protected]
        kept = len(lung) - len(todo)
        _say_kept(kept)
        if not todo:
            show_info("nothing to segment: no slice with lung left")
            return False
        self.session.skipped_empty = self.session.n_slices - len(lung)
        self.feedback.summary = ""
        self.feedback.status(f"segmenting {len(todo)} slices…")
        self._start(
            volume_job,
            self.session,
            todo,
            total=len(todo),
            desc="napari-samlung: segmenting volume",
            on_yield=self._on_volume_slice,
            on_done=self._on_volume_done,
        )
        return True

    def _on_volume_slice(self, run: _Run, result) -> None:
        if not self._current(run):
            return
        run.writer.write_slice(result.slice_index, result.labels)
        self.session.record_quality(result.slice_index, result.labels, result.predicted_iou)
        if result.metrics is not None:
            self.session.scores[result.slice_index] = result.metrics
        self._count(run)
        self.feedback.status(f"segmented slice {result.slice_index} ({run.done}/{run.total})")
        self.feedback.scores()
        # Last: napari's progress bar processes Qt events, so the next slices (and the
        # end of the run) may be handled inside this call.
        run.bar.update(1)

    def _on_volume_done(self, run: _Run) -> None:
        self._finish(run)
        head = (
            f"volume: {run.done} slices segmented"
            if run.done == run.total
            else f"volume cancelled: {run.done} of {run.total} slices segmented"
        )
        self.feedback.summary = head + "\n" + self.session.summary().format_table()
        self.feedback.status(head)
        self.feedback.scores()
        for listener in list(self.volume_listeners):
            listener()

    # ------------------------------------------------------------------ automatic

    def segment_volume_automatically(self, overwrite_edited: bool = False) -> bool:
        """Segment every slice with candidate lung (CT only) in a worker; edits are kept.

        Returns False when the run did not start (a notification says why).
        """
        layers, session = self.layers, self.session
        if not self._can_start():
            return False
        if not session.is_ct:
            show_warning(AUTO_XRAY_MESSAGE)
            return False
        if layers.truth_layer is not None:
            layers.ensure_truth()  # the slices are scored as they come
        session.skipped_empty = session.n_slices - len(session.lung_slices())
        protected = set() if overwrite_edited else layers.writer.protected_slices()
        self.feedback.summary = ""
        self.feedback.status("finding the lungs from the CT's air…")
        self._start(
            auto_job,
            session,
            protected,
            total=None,
            desc="napari-samlung: segmenting automatically",
            on_yield=self._on_auto_item,
            on_done=self._on_auto_done,
        )
        return True

    def _on_auto_item(self, run: _Run, item) -> None:
        if not isinstance(item, Planned):
            self._on_volume_slice(run, item)
            return
        if not self._current(run):
            return
        run.total, run.planned, run.kept = len(item.slices), item.slices, set(item.kept)
        run.bar.total = run.total
        _say_kept(len(item.kept))
        self.feedback.status(f"segmenting {run.total} slices with lung…")

    def _on_auto_done(self, run: _Run) -> None:
        self._finish(run)
        if not self._current_generation(run):
            return
        planned = run.planned
        if run.total is None:  # no candidates: cancelled or failed before (see the notification)
            head = "automatic run stopped before it started segmenting"
        elif not planned and not run.kept:
            head = "automatic: no air-filled lung found in this CT; prompt a slice instead"
        elif run.done == run.total:
            span = f" (slices {planned[0]}–{planned[-1]})" if planned else ""
            head = f"automatic: {run.done} slices with lung segmented{span}"
        else:
            head = f"automatic run cancelled: {run.done} of {run.total} slices segmented"
        if run.kept:
            head += f"; kept your edits on {len(run.kept)} slice(s)"
        lines = [head]
        if self.session.scores:
            lines.append(self.session.summary().format_table())
        self.feedback.summary = "\n".join(lines)
        self.feedback.status(head)
        self.feedback.scores()

    # ------------------------------------------------------------------ propagation

    def propagate(self, overwrite_edited: bool = False) -> bool:
        """Propagate from every prompted slice in a worker; False when it did not start."""
        layers = self.layers
        if not self._can_start():
            return False
        try:
            seeds = seeds_from_layers(layers.points_layer, layers.shapes_layer, self.session)
        except PromptError as exc:
            show_warning(str(exc))
            return False
        cancel = threading.Event()
        where = ", ".join(str(s.slice_index) for s in seeds)
        self.feedback.status(f"propagating from slice(s) {where}…")
        # read on the main thread: the worker must not see later changes
        session = self.session
        self._start(
            propagation_job,
            session,
            session.volume,
            seeds,
            session.effective_window(),
            self.propagation_settings,
            cancel,
            self.guard_with_candidates and session.is_ct,
            total=session.n_slices,
            desc="napari-samlung: propagating",
            on_yield=self._on_propagated_slice,
            on_done=self._on_propagation_done,
            cancel=cancel.set,
            seeds=[s.slice_index for s in seeds],
            protected=set() if overwrite_edited else layers.writer.protected_slices(),
        )
        return True

    def _on_propagated_slice(self, run: _Run, item) -> None:
        if not self._current(run):
            return  # the image or the output changed: the run is stale
        z, labels = item
        self._count(run)
        if z in run.protected:
            run.kept.add(z)
        else:
            run.writer.write_slice(z, labels, propagated=True)
            self.session.record_quality(z, labels)
            run.written.add(z)
            if self.layers.truth_layer is not None and self.layers.ensure_truth():
                self.session.score(z, labels)
        self.feedback.status(f"propagating: slice {z} ({run.done} slices)")
        self.feedback.scores()
        # Last: napari's progress bar processes Qt events (see the volume run).
        run.bar.update(1)

    def _on_propagation_done(self, run: _Run) -> None:
        current = self._current(run)
        result = run.result
        cleared: list[int] = []
        if current and result is not None and not result.cancelled:
            # labels of an earlier propagation this run no longer reaches are stale
            reached = set(result.written)
            for z in sorted(run.writer.propagated - reached - run.protected):
                run.writer.clear_slice(z)
                self.session.forget_score(z)
                cleared.append(z)
        self._finish(run)
        if not current:
            return  # the image or the output changed meanwhile: nothing to report
        if result is not None:
            for z in run.written:
                self.session.quality.set_predicted_iou(z, result.predicted_iou.get(z, math.nan))
        if result is None:
            self.feedback.status("propagation failed: see the notification")
            return
        self.feedback.summary = ""
        self.feedback.status(_describe(result, run, cleared, self.session.n_slices))
        self.feedback.scores()


def _say_kept(kept: int) -> None:
    if kept:
        show_info(
            f"{kept} slice(s) with your own edits are kept; tick "
            f"'{OVERWRITE_EDITED_TEXT}' to segment them too"
        )


def _describe(result: PropagationResult, run: _Run, cleared: list[int], n: int) -> str:
    """One status line: what was segmented and where each direction stopped."""
    written = sorted(run.written | run.kept)
    seeds = ", ".join(str(z) for z in run.seeds)
    count = len(run.written)
    done = f"{count} slice{'' if count == 1 else 's'} segmented"
    if result.cancelled:
        head = f"propagation cancelled: {done}"
    else:
        span = f" ({written[0]}–{written[-1]})" if len(written) > 1 else ""
        head = f"propagated from slice(s) {seeds}: {done}{span}"
    parts = [head]
    if run.kept:
        kept = ", ".join(str(z) for z in sorted(run.kept))
        parts.append(f"kept your edits on slice(s) {kept}")
    if cleared:
        parts.append(f"cleared {len(cleared)} slice(s) it no longer reaches")
    empty = [z for z in run.seeds if not np.asarray(result.labels[z]).any()]
    if empty:
        parts.append(f"no lung found on seed slice(s) {', '.join(map(str, empty))}")
    if result.stop_reasons:
        parts.append("stopped at " + "; ".join(result.stop_reasons))
    elif written and not result.cancelled and n > 1:
        parts.append("reached " + _ends(written, n))
    return "; ".join(parts)


def _ends(written: list[int], n: int) -> str:
    if written[0] == 0 and written[-1] == n - 1:
        return "both ends of the volume"
    if written[0] == 0:
        return "the first slice"
    if written[-1] == n - 1:
        return "the last slice"
    return "the limits between seeds"
