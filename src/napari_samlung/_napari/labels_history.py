"""The Labels layer's undo history (napari's private API, in this one place) and a watch
that notices every change of a Labels layer's data.

napari has no public API to record an undo step for data written from code, so
:func:`save_undo_step` and :func:`save_undo_group` use ``Labels._save_history``,
``Labels._redo_history`` and ``Labels._append_to_undo_history``.  They go to
the layer behind napari's ``PublicOnlyProxy`` (plugin widgets get proxies,
which warn on private access).  ``tests/napari/test_napari_readout.py`` fails
when napari renames or removes any name in :data:`PRIVATE_HISTORY_API`.

:class:`LabelsWatch` calls back, debounced, with the slices whose labels
changed since it last looked: painting, erasing, fill, undo and redo (which
emit no ``paint`` event, only a refresh), and the ``data`` setter.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xxhash

from .workers import Debounce

#: The private members of ``napari.layers.Labels`` used here (a test checks they exist).
PRIVATE_HISTORY_API = ("_save_history", "_redo_history", "_append_to_undo_history")
#: The layer events after which the labels may have changed.
CHANGE_EVENTS = ("data", "paint", "labels_update", "set_data")
WATCH_DEBOUNCE_MS = 60


def _real(layer):
    """The layer itself, not napari's ``PublicOnlyProxy`` of it."""
    return getattr(layer, "__wrapped__", layer)


def save_undo_step(layer, atom) -> None:
    """Record one write (``(key, before, after)``) as one undo step of ``layer``."""
    _real(layer)._save_history(atom)


def save_undo_group(layer, atoms: list) -> None:
    """Record several writes as a single undo step of ``layer`` (redo history is dropped)."""
    real = _real(layer)
    real._redo_history.clear()
    real._append_to_undo_history(atoms)


def slice_fingerprints(data) -> list[int]:
    """A hash of every slice of a ``(z, y, x)`` array (one for a 2D array)."""
    data = np.asarray(data)
    if data.ndim == 2:
        return [xxhash.xxh3_64_intdigest(np.ascontiguousarray(data))]
    return [xxhash.xxh3_64_intdigest(np.ascontiguousarray(part)) for part in data]


class LabelsWatch:
    """Calls ``on_change(slices)`` shortly after the labels of some slices changed.

    Writes the caller makes itself are reported with :meth:`remember` and are
    not passed on.
    """

    def __init__(self, layer, on_change: Callable[[set[int]], None], ms: int = WATCH_DEBOUNCE_MS):
        self.layer = layer
        self.on_change = on_change
        self._prints = slice_fingerprints(layer.data)
        self.debounce = Debounce(ms, self.check)
        for name in CHANGE_EVENTS:
            getattr(layer.events, name).connect(self._on_event)

    def _on_event(self, event=None) -> None:
        self.debounce.start()

    def remember(self, slice_index: int | None = None) -> None:
        """Take the current labels (of one slice, or all) as known: no callback for them."""
        data = np.asarray(self.layer.data)
        n = 1 if data.ndim == 2 else data.shape[0]
        if slice_index is None or len(self._prints) != n:
            self._prints = slice_fingerprints(data)
            return
        part = data if data.ndim == 2 else data[slice_index]
        self._prints[slice_index] = xxhash.xxh3_64_intdigest(np.ascontiguousarray(part))

    def check(self) -> set[int]:
        """Compare with the labels last seen now; calls back with the changed slices."""
        prints = slice_fingerprints(self.layer.data)
        if len(prints) != len(self._prints):
            changed = set(range(len(prints)))
        else:
            pairs = enumerate(zip(prints, self._prints, strict=True))
            changed = {z for z, (a, b) in pairs if a != b}
        self._prints = prints
        if changed:
            self.on_change(changed)
        return changed

    def close(self) -> None:
        """Stop watching."""
        self.debounce.close()
        for name in CHANGE_EVENTS:
            getattr(self.layer.events, name).disconnect(self._on_event)
