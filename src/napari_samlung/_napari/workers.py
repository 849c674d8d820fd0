"""Background work for the widget: the one way results reach the GUI.

Every job is a generator function run in a napari ``thread_worker``
(:meth:`Workers.start`).  It yields what the GUI should show as it goes
(an embedded slice, a segmented slice, a weights-download report) and
returns its result; the callbacks run on the main thread.  Core functions
that report through a callback (the weights download, propagation) are
turned into yields by :func:`relay`.

Errors never reach napari's traceback dialog: the job's exception is caught
in the thread and handed to ``on_error`` on the main thread, which shows a
one-line notification (:func:`notify_error`).

Weights-download reports (:class:`Download`, yielded by :func:`load_model`)
go to one :class:`DownloadBar` per widget, whatever the job.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject, QTimer

from ..errors import SamlungError

log = logging.getLogger(__name__)
T = TypeVar("T")


def _ignore(*args) -> None:
    pass


@dataclass
class Feedback:
    """What the widget shows: a status line, the score readout, the run state.

    ``status(text)`` replaces the status line, ``scores()`` refreshes the
    readout, ``running(bool)`` says a long run started or ended, and
    ``summary`` is the text of the last volume run (empty: none).
    """

    status: Callable[[str], None] = _ignore
    scores: Callable[[], None] = _ignore
    running: Callable[[bool], None] = _ignore
    summary: str = ""

    def mute(self) -> None:
        """Show nothing any more (the widget is going away)."""
        self.status = self.scores = self.running = _ignore


def notify_error(error: BaseException) -> None:
    """One-line notification for an error from a worker (no traceback dialog)."""
    if isinstance(error, SamlungError):
        show_error(str(error))
    elif isinstance(error, MemoryError):
        show_error("out of memory: choose a smaller model, the CPU, or a smaller image")
    else:
        show_error(f"{type(error).__name__}: {error}")


# --------------------------------------------------------------------------- in the thread


@dataclass(frozen=True)
class Download:
    """A weights-download report: bytes received so far and the total (None: unknown)."""

    done_bytes: int
    total_bytes: int | None


@dataclass
class _Failure:
    """An exception raised inside a job, carried back to the main thread."""

    error: BaseException


def relay(
    call: Callable[[Callable[[Any], None]], T], on_stop: Callable[[], None] = _ignore
) -> Generator[Any, None, T]:
    """Run ``call(emit)`` and yield everything it passes to ``emit``; return its result.

    ``call`` runs in a helper thread so that its callback reports become
    yields of the calling job.  When the job is abandoned before ``call``
    returns (the worker was quit), ``on_stop`` is called to ask it to stop.
    """
    items: queue.SimpleQueue = queue.SimpleQueue()
    end = object()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(items.put)
        except BaseException as exc:  # re-raised in the job
            outcome["error"] = exc
        finally:
            items.put(end)

    thread = threading.Thread(target=run, name="samlung-relay", daemon=True)
    thread.start()
    finished = False
    try:
        while (item := items.get()) is not end:
            yield item
        finished = True
    finally:
        if not finished:
            on_stop()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def load_model(session) -> Generator[Download, None, Any]:
    """The session's segmenter, built on first use; yields :class:`Download` reports meanwhile."""
    if session.model_loaded:
        return session.segmenter()

    def build(emit: Callable[[Any], None]):
        return session.segmenter(on_download=lambda done, total: emit(Download(done, total)))

    return (yield from relay(build))


def _guard(job: Callable[..., Generator]) -> Callable[..., Generator]:
    def run(*args, **kwargs):
        try:
            return (yield from job(*args, **kwargs))
        except Exception as exc:  # handed to on_error on the main thread
            log.debug("worker failed", exc_info=True)
            return _Failure(exc)

    return run


# --------------------------------------------------------------------------- on the main thread


#: How long Python's exit waits for a job still running to reach its next yield (s).
CLOSE_WAIT_S = 30.0


class Workers:
    """Starts the generator jobs of one widget and keeps them alive until they finish.

    Parameters
    ----------
    downloads
        Shows every :class:`Download` a job yields; closed when that job ends.
    """

    def __init__(self, downloads: DownloadBar | None = None) -> None:
        self.downloads = downloads
        self._live: set = set()
        self._closed = False
        _ALL_WORKERS.add(self)

    @property
    def busy(self) -> bool:
        """True while a job runs."""
        return bool(self._live)

    def start(
        self,
        job: Callable[..., Generator],
        *args,
        on_yield: Callable[[Any], None] | None = None,
        on_return: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_done: Callable[[], None] | None = None,
    ):
        """Run the generator function ``job(*args)`` in a thread; returns its worker.

        ``on_yield(item)`` gets each yielded item (except downloads),
        ``on_return(value)`` the return value unless the worker was quit,
        ``on_error(exc)`` the exception it raised, and ``on_done()`` runs last,
        whatever happened.  Nothing is called once :meth:`close` was called.
        """
        worker = create_worker(_guard(job), *args, _start_thread=False)
        downloaded = []

        def yielded(item) -> None:
            if self._closed:
                return
            if isinstance(item, Download):
                downloaded.append(True)
                if self.downloads is not None:
                    self.downloads.report(item)
            elif on_yield is not None:
                on_yield(item)

        def returned(value) -> None:
            if self._closed:
                return
            if isinstance(value, _Failure):
                if on_error is not None:
                    on_error(value.error)
            elif on_return is not None:
                on_return(value)

        def finished() -> None:
            self._live.discard(worker)
            if downloaded and self.downloads is not None:
                self.downloads.close()  # finished, or failed part way (the error says so)
            if on_done is not None and not self._closed:
                on_done()

        worker.yielded.connect(yielded)
        worker.returned.connect(returned)
        worker.finished.connect(finished)
        self._live.add(worker)
        worker.start()
        return worker

    def quit_all(self) -> None:
        """Ask every job to stop at its next yield."""
        for worker in list(self._live):
            worker.quit()

    def close(self) -> None:
        """Stop every job (at its next yield); from now on no callback runs.

        It does not wait: a job still running when Python exits is waited for
        by :func:`_close_at_exit`.
        """
        self._closed = True
        self.quit_all()
        if self.downloads is not None:
            self.downloads.close()

    def wait(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Wait (up to ``wait_s``) until no job's thread runs any more."""
        deadline = time.monotonic() + wait_s
        while any(_is_running(w) for w in list(self._live)) and time.monotonic() < deadline:
            time.sleep(0.02)  # each job stops at its next yield (one slice, one step)
        time.sleep(0.05 if self._live else 0)  # let a thread finish its last emit


def _is_running(worker) -> bool:
    try:
        return bool(worker.is_running)
    except RuntimeError:  # Qt already deleted it
        return False


class DownloadBar:
    """A napari progress bar, in MiB, while SAM weights download.

    Parameters
    ----------
    describe
        Returns the bar's text (it names the model being downloaded).
    feedback
        Its status line tells how many MiB have arrived.
    """

    def __init__(self, describe: Callable[[], str], feedback: Feedback) -> None:
        self.describe = describe
        self.feedback = feedback
        self._bar = None
        self._latest: Download | None = None
        self._busy = False

    def report(self, download: Download) -> None:
        """Show how much of the weights has arrived (main thread).

        napari's progress bar processes Qt events while it draws, so the next
        report can arrive inside this one: it is only recorded, and the outer
        call shows the newest report when it is done.
        """
        self._latest = download
        if self._busy:
            return
        self._busy = True
        try:
            while self._latest is not None:
                latest, self._latest = self._latest, None
                self._show(latest.done_bytes, latest.total_bytes)
        finally:
            self._busy = False

    def _show(self, done: int, total: int | None) -> None:
        mib = int(done // 2**20)
        total_mib = None if total is None else max(1, -(-int(total) // 2**20))
        what = self.describe()
        if self._bar is None:
            self._bar = progress(total=total_mib, desc=f"downloading {what} weights (MiB)")
        finished = total is not None and done >= total
        target = total_mib if finished else mib
        if target > self._bar.n:
            self._bar.update(target - self._bar.n)
        of = f" of {total_mib}" if total_mib is not None else ""
        self.feedback.status(f"downloading {what} weights: {target}{of} MiB…")
        if finished:
            self.close()

    def close(self) -> None:
        """Close the bar (the download finished, failed, or the widget closes)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Debounce:
    """Calls ``callback`` once, ``ms`` milliseconds after the last :meth:`start` (main thread)."""

    def __init__(self, ms: int, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(ms))
        self._timer.timeout.connect(callback)

    @property
    def ms(self) -> int:
        """The quiet time in milliseconds."""
        return self._timer.interval()

    @ms.setter
    def ms(self, value: int) -> None:
        self._timer.setInterval(int(value))

    @property
    def pending(self) -> bool:
        """True while a call waits for its quiet time."""
        return self._timer.isActive()

    def start(self) -> None:
        """(Re)start the quiet time."""
        self._timer.start()

    def stop(self) -> None:
        """Drop a pending call."""
        with contextlib.suppress(RuntimeError):  # Qt already deleted the timer (app exit)
            self._timer.stop()

    def close(self) -> None:
        """Drop a pending call and never call again (also after Qt deleted the timer)."""
        with contextlib.suppress(RuntimeError, TypeError):
            self._timer.stop()
            self._timer.timeout.disconnect(self._callback)


class _CloseWatch(QObject):
    """Calls ``on_close`` once its widget leaves the dock it was in."""

    def __init__(self, native, on_close: Callable[[], None]) -> None:
        super().__init__(native)
        self._on_close = on_close
        self._docked = native.parent() is not None

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt API
        if event.type() == QEvent.Type.ParentChange:
            if obj.parent() is not None:
                self._docked = True
            elif self._docked:
                self._on_close()
        return False


def stop_with(native, on_close: Callable[[], None]) -> None:
    """Call ``on_close`` when the Qt widget ``native`` is destroyed or taken out of its dock.

    napari's dock close button takes the widget out of its dock without
    deleting it; closing the viewer deletes it.  Either way the widget's
    timers and workers must stop.
    """
    native.destroyed.connect(lambda *_: on_close())
    native.installEventFilter(_CloseWatch(native, on_close))
    _AT_EXIT.append(weakref.WeakMethod(on_close) if hasattr(on_close, "__self__") else on_close)


#: ``on_close`` of every widget made, for :func:`_close_at_exit` (weak for methods).
_AT_EXIT: list = []


def _close_at_exit() -> None:
    """Stop the widgets still open when Python exits, and wait for their running jobs.

    At exit Python deletes the Qt objects in no set order; a job still running
    would then emit into a deleted signal object and abort the process (closing
    napari's window ends ``napari.run()``, and then Python exits).
    """
    while _AT_EXIT:
        entry = _AT_EXIT.pop()
        on_close = entry() if isinstance(entry, weakref.WeakMethod) else entry
        if on_close is not None:
            with contextlib.suppress(Exception):
                on_close()
    for workers in list(_ALL_WORKERS):
        with contextlib.suppress(Exception):
            workers.quit_all()
            workers.wait()


#: Every :class:`Workers` made (weakly), for :func:`_close_at_exit`.
_ALL_WORKERS: weakref.WeakSet = weakref.WeakSet()
atexit.register(_close_at_exit)
