"""Propagation in the widget: segment a volume from the slices the user prompted.

Every slice with points or boxes in the prompt layers is a seed; its prompts
are read and checked exactly as the interactive path does
(:func:`seeds_from_layers`).  :class:`PropagationMixin` (part of
:class:`~napari_samlung._napari.workflow.Workflow`) runs
:func:`napari_samlung.core.propagation.propagate` in a worker and shows each
slice as it arrives:

- the whole run is one undo step (Ctrl-Z), like a volume run;
- slices the user painted (or labels the plugin did not write) are kept
  unless "overwrite edited slices" is ticked;
- slices an earlier propagation wrote that this run no longer reaches are
  cleared (a correction that stops a leak removes the leak), in the same undo
  step;
- Cancel stops after the slice being segmented; every slice shown is whole.
"""

from __future__ import annotations

import threading

import numpy as np
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QObject, Signal

from ..core.prompts import Prompt
from ..core.propagation import PropagationResult, PropagationSettings, Seed, propagate
from ..errors import PromptError
from .prompt_layers import BOX_ONLY_MESSAGE, read_slice_prompts


def prompted_slices(points_layer, shapes_layer, n_slices: int) -> list[int]:
    """Slices holding a point or a rectangle; PromptError for one outside the volume."""
    found: set[int] = set()
    ndim = 2
    if points_layer is not None and len(points_layer.data):
        data = np.asarray(points_layer.data, float)
        ndim = data.shape[1]
        found.update(int(z) for z in np.rint(data[:, 0]))
    if shapes_layer is not None and len(shapes_layer.data):
        for verts, kind in zip(shapes_layer.data, shapes_layer.shape_type, strict=True):
            verts = np.asarray(verts, float)
            if kind == "rectangle":
                ndim = verts.shape[1]
                found.add(int(np.rint(verts[0, 0])))
    if ndim == 2:
        return [0] if found else []
    outside = sorted(z for z in found if not 0 <= z < n_slices)
    if outside:
        raise PromptError(
            f"a prompt lies on slice {outside[0]}, outside the image (slices 0..{n_slices - 1}); "
            "delete it or move it onto the image"
        )
    return sorted(found)


def slice_prompts(points_layer, shapes_layer, session, slice_index: int) -> list[Prompt]:
    """The checked prompts of one slice, as the interactive path makes them."""
    here = read_slice_prompts(points_layer, shapes_layer, slice_index)
    prompts = here.to_prompts(session.accepts_points)
    if not prompts:
        raise PromptError(BOX_ONLY_MESSAGE)
    return session.check_prompts(slice_index, prompts)


def seeds_from_layers(points_layer, shapes_layer, session) -> list[Seed]:
    """One seed per prompted slice (PromptError naming the slice when one is unusable)."""
    seeds = []
    for z in prompted_slices(points_layer, shapes_layer, session.n_slices):
        try:
            seeds.append(Seed(z, slice_prompts(points_layer, shapes_layer, session, z)))
        except PromptError as exc:
            raise PromptError(f"slice {z}: {exc}") from None
    if not seeds:
        raise PromptError(
            "nothing to propagate: click points or draw a box on one or a few slices first"
        )
    return seeds


class _Relay(QObject):
    """Carries each propagated slice from the worker thread to the main thread."""

    slice_done = Signal(int, object)


class PropagationMixin:
    """The Propagate action of :class:`~napari_samlung._napari.workflow.Workflow`."""

    propagation_settings = PropagationSettings()

    def propagate(self, overwrite_edited: bool = False) -> bool:
        """Propagate from every prompted slice in a worker; False when it did not start."""
        if self.running:
            show_info("a run is in progress; wait for it or press Cancel")
            return False
        if self.image_layer is None or self.output() is None:
            show_warning("choose an image first")
            return False
        try:
            seeds = seeds_from_layers(self.points_layer, self.shapes_layer, self.session)
        except PromptError as exc:
            show_warning(str(exc))
            return False
        protected = set() if overwrite_edited else self.writer.protected_slices()
        self._prop = {
            "seeds": [s.slice_index for s in seeds],
            "protected": protected,
            "written": set(),
            "kept": set(),
            "result": None,
        }
        cancel = threading.Event()
        relay = _Relay()
        relay.slice_done.connect(self._on_propagated_slice)
        self._prop["relay"] = relay  # keep it alive while the worker runs
        # read on the main thread: the worker must not see later changes
        token, session, volume = self._token, self.session, self.session.volume
        window, settings = self.session.effective_window(), self.propagation_settings

        def job() -> PropagationResult:
            def on_slice(z: int, labels: np.ndarray) -> None:
                relay.slice_done.emit(z, (token, np.array(labels, np.uint8, copy=True)))

            return propagate(
                session.segmenter(),
                volume,
                seeds,
                window=window,
                settings=settings,
                should_cancel=cancel.is_set,
                on_slice=on_slice,
            )

        where = ", ".join(str(z) for z in self._prop["seeds"])
        self.on_status(f"propagating from slice(s) {where}…")
        self._start_run(
            job,
            total=self.session.n_slices,
            desc="napari-samlung: propagating",
            on_result=self._on_propagation_result,
            on_done=self._on_propagation_done,
            cancel=cancel.set,
        )
        return True

    def _on_propagated_slice(self, z: int, payload) -> None:
        token, labels = payload
        if token != self._token or self.writer is None or self._prop is None:
            return  # the image or the output changed: the run is stale
        state = self._prop
        self._run_done += 1
        if z in state["protected"]:
            state["kept"].add(z)
        else:
            self.writer.write_slice(z, labels, propagated=True)
            state["written"].add(z)
            if self.truth_layer is not None and self.ensure_truth():
                self.session.score(z, labels)
        self.on_status(f"propagating: slice {z} ({self._run_done} slices)")
        self.on_scores()
        # Last: napari's progress bar processes Qt events (see the volume run).
        if self._progress is not None:
            self._progress.update(1)

    def _on_propagation_result(self, result: PropagationResult) -> None:
        if self._prop is not None:
            self._prop["result"] = result

    def _on_propagation_done(self) -> None:
        state, self._prop = self._prop, None
        result: PropagationResult | None = state["result"] if state else None
        cleared: list[int] = []
        stale_run = self._run_token != self._token or self.writer is None
        if result is not None and not result.cancelled and not stale_run:
            # labels of an earlier propagation this run no longer reaches are stale
            reached = set(result.written)
            for z in sorted(self.writer.propagated - reached - state["protected"]):
                self.writer.clear_slice(z)
                self.session.forget_score(z)
                cleared.append(z)
        self._finish_run()
        if stale_run or state is None:
            return  # the image or the output changed meanwhile: nothing to report
        if result is None:
            self.on_status("propagation failed: see the notification")
            return
        self.summary_text = ""
        self.on_status(_describe(result, state, cleared, self.session.n_slices))
        self.on_scores()


def _describe(result: PropagationResult, state: dict, cleared: list[int], n: int) -> str:
    """One status line: what was segmented and where each direction stopped."""
    written = sorted(state["written"] | state["kept"])
    seeds = ", ".join(str(z) for z in state["seeds"])
    count = len(state["written"])
    done = f"{count} slice{'' if count == 1 else 's'} segmented"
    if result.cancelled:
        head = f"propagation cancelled: {done}"
    else:
        span = f" ({written[0]}–{written[-1]})" if len(written) > 1 else ""
        head = f"propagated from slice(s) {seeds}: {done}{span}"
    parts = [head]
    if state["kept"]:
        kept = ", ".join(str(z) for z in sorted(state["kept"]))
        parts.append(f"kept your edits on slice(s) {kept}")
    if cleared:
        parts.append(f"cleared {len(cleared)} slice(s) it no longer reaches")
    empty = [z for z in state["seeds"] if not np.asarray(result.labels[z]).any()]
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
