"""The dock's results table: the slice on screen and the whole volume, side by side.

Rows: Dice, Jaccard, Dice of each lung (with a ground truth), and the lung
volumes in mL from the voxel spacing, per lung and in total (with or without a
ground truth).  A 2D image (an X-ray) gets areas in cm² and one column.

:func:`result_rows` is Qt-free; :class:`LungCounts` keeps each slice's voxel
counts and recounts only the slices whose labels changed, so moving through
slices or painting one slice does not recount the volume.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.labels import LEFT_LUNG, RIGHT_LUNG
from ..core.volumes import voxel_size
from .labels_history import slice_fingerprints

#: Row names, in order.
ROWS = ("Dice", "Jaccard", "Dice left", "Dice right", "left", "right", "total")
NONE = "–"


class LungCounts:
    """Voxel counts of the left and right lung on every slice of a labels array."""

    def __init__(self) -> None:
        self._prints: list[int] = []
        self._counts: list[tuple[int, int]] = []

    def counts(self, labels) -> np.ndarray:
        """``(n_slices, 2)`` counts of (left, right); only changed slices are recounted."""
        data = np.asarray(labels)
        parts = [data] if data.ndim == 2 else list(data)
        prints = slice_fingerprints(data)
        if len(parts) != len(self._prints):
            self._prints = [0] * len(parts)
            self._counts = [(-1, -1)] * len(parts)
        for z, (part, digest) in enumerate(zip(parts, prints, strict=True)):
            if digest != self._prints[z] or self._counts[z][0] < 0:
                values = np.bincount(part.ravel().astype(np.intp, copy=False), minlength=3)
                self._counts[z] = (int(values[LEFT_LUNG]), int(values[RIGHT_LUNG]))
                self._prints[z] = digest
        return np.asarray(self._counts, dtype=np.int64).reshape(-1, 2)


def _pct(value: float | None) -> str:
    return NONE if value is None or math.isnan(value) else f"{100 * value:.1f} %"


def _size(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}"


def result_rows(
    session, counts: np.ndarray | None, slice_index: int | None, has_truth: bool
) -> tuple[list[str], list[str], list[list[str]]]:
    """The table's column headers, row headers and cells.

    ``counts`` are the ``(n_slices, 2)`` left/right voxel counts of the output
    labels (None: no output yet).  Scores come from ``session.scores``; the
    volume column holds the mean over the scored slices (``n`` in its header).
    """
    scores = session.scores if has_truth else {}
    is_2d = session.is_2d
    try:
        unit_size, unit = voxel_size(session.spacing_zyx_mm, 2 if is_2d else 3)
    except ValueError:  # a spacing that cannot be a voxel size: counts only
        unit_size, unit = 1.0, "voxels"
    unit = "cm²" if unit == "cm2" else unit
    rows = [*ROWS[:4], *(f"{name} ({unit})" for name in ROWS[4:])]

    def column(score_list, lung_counts) -> list[str]:
        if score_list:
            dice = float(np.mean([s.dice for s in score_list]))
            jaccard = float(np.mean([s.jaccard for s in score_list]))
            per_lung = [
                [s.dice_per_lung[v] for s in score_list if v in s.dice_per_lung]
                for v in (LEFT_LUNG, RIGHT_LUNG)
            ]
            lungs = [float(np.mean(p)) if p else None for p in per_lung]
        else:
            dice = jaccard = math.nan
            lungs = [None, None]
        if lung_counts is None:
            sizes = [None, None, None]
        else:
            left, right = (float(c) * unit_size for c in lung_counts)
            sizes = [left, right, left + right]
        return [_pct(dice), _pct(jaccard), *(_pct(v) for v in lungs), *map(_size, sizes)]

    if is_2d:
        score = scores.get(0)
        return (
            ["image"],
            rows,
            [[c] for c in column([score] if score else [], None if counts is None else counts[0])],
        )
    here = None if slice_index is None else scores.get(int(slice_index))
    slice_counts = None
    if counts is not None and slice_index is not None and 0 <= slice_index < len(counts):
        slice_counts = counts[slice_index]
    volume_scores = [scores[z] for z in sorted(scores)]
    headers = [
        NONE if slice_index is None else f"slice {slice_index}",
        "volume",
    ]
    first = column([here] if here else [], slice_counts)
    second = column(volume_scores, None if counts is None else counts.sum(axis=0))
    return headers, rows, [list(pair) for pair in zip(first, second, strict=True)]


class ResultsTable:
    """A compact read-only ``QTableWidget`` that shows :func:`result_rows`."""

    def __init__(self) -> None:
        from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QSizePolicy, QTableWidget

        self.counter = LungCounts()
        table = QTableWidget(len(ROWS), 2)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        table.setFocusPolicy(table.focusPolicy().NoFocus)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 4)
        table.setVerticalScrollBarPolicy(table.verticalScrollBarPolicy().ScrollBarAlwaysOff)
        table.setHorizontalScrollBarPolicy(table.verticalScrollBarPolicy().ScrollBarAlwaysOff)
        table.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)
        table.setToolTip(
            "Dice and Jaccard against the ground truth (slice on screen; mean over the "
            "scored slices), and the lung volumes of the output labels from the voxel spacing"
        )
        self.table = table
        self.cells: list[list[str]] = []
        self.headers: list[str] = []
        self._fit()

    def _fit(self) -> None:
        table = self.table
        height = table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth() + 4
        height += table.verticalHeader().defaultSectionSize() * table.rowCount()
        table.setFixedHeight(height)

    def show(self, session, labels, slice_index: int | None, has_truth: bool) -> None:
        """Fill the table for ``labels`` (the output labels, or None) and the slice on screen."""
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QTableWidgetItem

        counts = None
        if labels is not None and np.size(labels) and np.size(labels) == session.volume.size:
            counts = self.counter.counts(labels)
        headers, rows, cells = result_rows(session, counts, slice_index, has_truth)
        if (headers, cells) == (self.headers, self.cells):
            return
        table = self.table
        table.setColumnCount(len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.setVerticalHeaderLabels(rows)
        for r, row in enumerate(cells):
            for c, text in enumerate(row):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                table.setItem(r, c, item)
        self.headers, self.cells = headers, cells

    def show_nothing(self) -> None:
        """An empty table (no image)."""
        self.table.clearContents()
        self.headers, self.cells = [], []

    def text(self) -> str:
        """The table as text (for tests and the clipboard): one line per row."""
        lines = ["\t".join(["", *self.headers])]
        for name, row in zip(self.row_names(), self.cells, strict=False):
            lines.append("\t".join([name, *row]))
        return "\n".join(lines)

    def row_names(self) -> list[str]:
        """The row headers shown."""
        table = self.table
        return [table.verticalHeaderItem(r).text() for r in range(table.rowCount())]
