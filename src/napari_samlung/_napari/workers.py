"""Background work for the widget: every model call runs in a napari thread_worker.

Errors never reach napari's traceback dialog: the work function's exception is
caught in the thread and handed to ``on_error`` on the main thread, which shows
a one-line notification.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

from napari.qt.threading import create_worker

log = logging.getLogger(__name__)


@dataclass
class Failure:
    """An exception raised inside a worker, carried back to the main thread."""

    error: BaseException


def _guard(fn: Callable) -> Callable:
    if inspect.isgeneratorfunction(fn):

        def run_generator(*args, **kwargs):
            try:
                result = yield from fn(*args, **kwargs)
            except Exception as exc:  # handed to on_error on the main thread
                log.debug("worker failed", exc_info=True)
                return Failure(exc)
            return result

        return run_generator

    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # handed to on_error on the main thread
            log.debug("worker failed", exc_info=True)
            return Failure(exc)

    return run


class Tasks:
    """Starts workers and keeps them alive until they finish."""

    def __init__(self) -> None:
        self._live: set = set()

    @property
    def busy(self) -> bool:
        return bool(self._live)

    def start(
        self,
        fn: Callable,
        *args,
        on_result: Callable | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_yield: Callable | None = None,
        on_done: Callable[[], None] | None = None,
    ):
        """Run ``fn(*args)`` in a thread; callbacks run on the main thread."""
        worker = create_worker(_guard(fn), *args, _start_thread=False)

        def returned(value) -> None:
            if isinstance(value, Failure):
                if on_error is not None:
                    on_error(value.error)
            elif on_result is not None:
                on_result(value)

        def finished() -> None:
            self._live.discard(worker)
            if on_done is not None:
                on_done()

        worker.returned.connect(returned)
        if on_yield is not None and hasattr(worker, "yielded"):
            worker.yielded.connect(on_yield)
        worker.finished.connect(finished)
        self._live.add(worker)
        worker.start()
        return worker

    def quit_all(self) -> None:
        for worker in list(self._live):
            worker.quit()
