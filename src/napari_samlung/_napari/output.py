"""Undoable writes into the output Labels layer, and who wrote which slice.

Every write goes through the Labels layer's own undo history, so Ctrl-Z in
napari undoes it:

- one slice: :meth:`OutputWriter.write_slice` records one undo step through
  :func:`~napari_samlung._napari.labels_history.save_undo_step` (the history
  ``Labels.data_setitem`` writes to; napari's private API lives there);
- a volume run: :meth:`OutputWriter.begin_group` ... :meth:`end_group` collects
  every slice's change and commits them as a single undo step.

The writer listens to the layer's ``paint`` event to learn which slices the
user painted (fill, brush, eraser, polygon), so a volume run can leave them
alone.  Writes of the plugin itself are not counted as user edits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import xxhash

from .labels_history import save_undo_group, save_undo_step


@dataclass
class Provenance:
    """Who wrote which slice of one output layer."""

    plugin_written: set[int] = field(default_factory=set)
    user_edited: set[int] = field(default_factory=set)
    #: Slices whose labels come from a propagation (cleared when it no longer reaches them).
    propagated: set[int] = field(default_factory=set)
    #: A hash of each slice as the plugin left it, to notice edits made while the
    #: layer was not the output (no paint events reach a writer then).
    fingerprints: dict[int, int] = field(default_factory=dict)


class ProvenanceBook:
    """The :class:`Provenance` of every output layer seen, for as long as the layer lives:
    switching to another image and back keeps what the plugin wrote (slices
    changed while the layer was not the output are found by their fingerprints
    when an :class:`OutputWriter` takes the layer again)."""

    def __init__(self) -> None:
        self._book: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def of(self, layer) -> Provenance:
        """The record of ``layer`` (a new one the first time it is seen)."""
        try:
            return self._book.setdefault(layer, Provenance())
        except TypeError:  # a layer that takes no weak reference: start afresh
            return Provenance()


class OutputWriter:
    """Writes slices into one Labels layer and tracks plugin vs user edits."""

    def __init__(self, layer, on_user_edit=None, provenance: Provenance | None = None) -> None:
        self.layer = layer
        self.on_user_edit = on_user_edit
        record = provenance if provenance is not None else Provenance()
        self.plugin_written: set[int] = record.plugin_written
        self.user_edited: set[int] = record.user_edited
        self.propagated: set[int] = record.propagated
        self._fingerprints = record.fingerprints
        # a slice that changed since the plugin wrote it, while no writer listened,
        # was edited by someone else: it is theirs now
        for z in sorted(self.plugin_written):
            if self._fingerprint(z) != self._fingerprints.get(z):
                self.plugin_written.discard(z)
                self.propagated.discard(z)
                self._fingerprints.pop(z, None)
                self.user_edited.add(z)
        self._writing = False
        self._group: list | None = None
        #: Called with the slice index after each write that changed it.
        self.after_write: list[Callable[[int], None]] = []
        layer.events.paint.connect(self._on_paint)

    def disconnect(self) -> None:
        """Stop listening to the layer's paint events."""
        self.layer.events.paint.disconnect(self._on_paint)

    @property
    def is_2d(self) -> bool:
        """True for a 2D ``(row, col)`` layer (its one slice is slice 0)."""
        return self.layer.data.ndim == 2

    def slice_view(self, slice_index: int) -> np.ndarray:
        """A ``(row, col)`` view of one slice of the layer's data (the whole 2D layer)."""
        data = self.layer.data
        return data if data.ndim == 2 else data[slice_index]

    def _fingerprint(self, slice_index: int) -> int:
        return xxhash.xxh3_64_intdigest(np.ascontiguousarray(self.slice_view(slice_index)))

    # ------------------------------------------------------------------ writes

    def write_slice(self, slice_index: int, labels: np.ndarray, propagated: bool = False) -> bool:
        """Write ``labels`` into ``slice_index``; returns True when anything changed.

        ``propagated`` marks labels that come from a propagation run.

        The undo record holds the bounding box of the change (before and after),
        not per-pixel indices: a few MB even for a full-resolution X-ray.
        """
        current = np.asarray(self.slice_view(slice_index))
        labels = np.asarray(labels).astype(self.layer.data.dtype, copy=False)
        if labels.shape != current.shape:
            raise ValueError(
                f"labels of shape {labels.shape} do not fit slice shape {current.shape}"
            )
        self.plugin_written.add(int(slice_index))
        self.user_edited.discard(int(slice_index))
        if propagated:
            self.propagated.add(int(slice_index))
        else:
            self.propagated.discard(int(slice_index))
        diff = current != labels
        rows = np.flatnonzero(diff.any(axis=1))
        if rows.size == 0:
            self._fingerprints[int(slice_index)] = self._fingerprint(slice_index)
            return False
        cols = np.flatnonzero(diff.any(axis=0))
        box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        key = box if self.is_2d else (int(slice_index), *box)
        atom = (key, np.array(self.layer.data[key], copy=True), labels[box].copy())
        self._writing = True
        try:
            self.layer.data[key] = atom[2]
            if self._group is not None:
                self._group.append(atom)
            else:
                save_undo_step(self.layer, atom)  # one undo step (Ctrl-Z)
            self.layer.refresh()
        finally:
            self._writing = False
        self._fingerprints[int(slice_index)] = self._fingerprint(slice_index)
        for listener in list(self.after_write):
            listener(int(slice_index))
        return True

    def clear_slice(self, slice_index: int) -> bool:
        """Erase ``slice_index`` (undoable) and forget who wrote it."""
        changed = self.write_slice(slice_index, np.zeros_like(self.slice_view(slice_index)))
        self.plugin_written.discard(int(slice_index))
        self._fingerprints.pop(int(slice_index), None)
        return changed

    def begin_group(self) -> None:
        """Start collecting writes into one undo step."""
        self._group = []

    def end_group(self) -> None:
        """Commit the collected writes as one undo step (nothing when none changed)."""
        atoms, self._group = self._group, None
        if not atoms:
            return
        self._writing = True
        try:
            save_undo_group(self.layer, atoms)
        finally:
            self._writing = False

    # ------------------------------------------------------------------ user edits

    def _on_paint(self, event) -> None:
        if self._writing:
            return
        slices = edited_slices(event.value, self.is_2d)
        self.user_edited.update(slices)
        self.propagated.difference_update(slices)
        if self.on_user_edit is not None and slices:
            self.on_user_edit(slices)

    def protected_slices(self) -> set[int]:
        """Slices a volume run must not overwrite by default.

        Those the user painted, and those that hold labels the plugin did not
        write (an existing layer chosen as output).
        """
        data = self.layer.data
        if data.ndim == 2:
            foreign = {0} if (0 not in self.plugin_written and np.any(data)) else set()
        else:
            filled = np.flatnonzero(np.asarray(data).reshape(data.shape[0], -1).any(axis=1))
            foreign = {int(z) for z in filled} - self.plugin_written
        return foreign | self.user_edited


def edited_slices(atoms, is_2d: bool) -> set[int]:
    """Slice indices touched by a list of Labels history atoms."""
    if is_2d:
        return {0}
    out: set[int] = set()
    for atom in atoms or []:
        key = getattr(atom, "slice_key", None)
        if key is not None:  # _MaskedPaintAtom: a bounding box of slices
            first = key[0]
            if isinstance(first, slice):
                start = first.start or 0
                out.update(range(int(start), int(first.stop)))
            else:
                out.add(int(first))
            continue
        try:
            indices = atom[0]
            out.update(int(z) for z in np.unique(np.asarray(indices[0])))
        except (TypeError, IndexError):  # pragma: no cover - unknown atom type
            continue
    return out
