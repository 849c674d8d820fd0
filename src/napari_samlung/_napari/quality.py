"""Per-slice quality of the output labels, without Qt: what the quality strip shows.

For every slice the plugin wrote, :class:`QualityBook` keeps the model's
predicted IoU and the agreement (Dice of the lung union) with the candidate
lungs found from the CT's air (:mod:`napari_samlung.core.lungs_hu`).  Where a
ground truth is chosen, its Dice comes first: :meth:`QualityBook.value` takes
the scores the session holds.

A slice is *doubtful* when its value is below :data:`DOUBTFUL_BELOW`;
:meth:`QualityBook.next_doubtful` walks through them in slice order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.metrics import dice

#: A slice whose Dice (with a ground truth), or else agreement with the CT's air
#: (else predicted IoU), is below this is doubtful.
DOUBTFUL_BELOW = 0.9


@dataclass
class SliceQuality:
    """What is known of one written slice (None: not known)."""

    predicted_iou: float | None = None
    agreement: float | None = None


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class QualityBook:
    """Predicted IoU and agreement with the candidate lungs, per written slice."""

    def __init__(self) -> None:
        self.slices: dict[int, SliceQuality] = {}

    def clear(self) -> None:
        """Forget every slice (a new image or output)."""
        self.slices.clear()

    def forget(self, slice_index: int) -> None:
        """Forget one slice (its labels were cleared)."""
        self.slices.pop(int(slice_index), None)

    def record(
        self,
        slice_index: int,
        labels: np.ndarray,
        candidates_2d: np.ndarray | None = None,
        predicted_iou: float | None = None,
    ) -> SliceQuality:
        """Note the labels written on one slice; the predicted IoU is kept when not given."""
        z = int(slice_index)
        entry = self.slices.get(z, SliceQuality())
        if predicted_iou is not None:
            entry.predicted_iou = _finite(predicted_iou)
        entry.agreement = None
        if candidates_2d is not None:
            entry.agreement = dice(np.asarray(labels) > 0, np.asarray(candidates_2d) > 0)
        self.slices[z] = entry
        return entry

    def set_predicted_iou(self, slice_index: int, value: float) -> None:
        """The model's predicted IoU of a slice already recorded."""
        entry = self.slices.get(int(slice_index))
        if entry is not None:
            entry.predicted_iou = _finite(value)

    def value(self, slice_index: int, scores: dict | None = None) -> tuple[float | None, str]:
        """``(value, what)`` of one slice: Dice, else agreement, else predicted IoU."""
        z = int(slice_index)
        if scores and z in scores:
            return float(scores[z].dice), "Dice"
        entry = self.slices.get(z)
        if entry is None:
            return None, ""
        if entry.agreement is not None:
            return entry.agreement, "agreement"
        if entry.predicted_iou is not None:
            return entry.predicted_iou, "predicted IoU"
        return None, ""

    def values(self, n_slices: int, scores: dict | None = None) -> list[float | None]:
        """:meth:`value` of every slice (None where nothing is known)."""
        return [self.value(z, scores)[0] for z in range(n_slices)]

    def doubtful(self, n_slices: int, scores: dict | None = None) -> list[int]:
        """Slices whose value is below :data:`DOUBTFUL_BELOW`, in order."""
        values = self.values(n_slices, scores)
        return [z for z, v in enumerate(values) if v is not None and v < DOUBTFUL_BELOW]

    def next_doubtful(
        self, current: int, step: int, n_slices: int, scores: dict | None = None
    ) -> int | None:
        """The next doubtful slice after ``current`` (``step`` +1) or before it (-1)."""
        doubtful = self.doubtful(n_slices, scores)
        ahead = [z for z in doubtful if (z - current) * step > 0]
        if not ahead:
            return None
        return min(ahead) if step > 0 else max(ahead)

    def describe(self, slice_index: int, scores: dict | None = None) -> str:
        """One line for a slice: everything known of it."""
        z = int(slice_index)
        parts = []
        if scores and z in scores:
            parts.append(f"Dice {scores[z].dice:.3f}")
        entry = self.slices.get(z)
        if entry is not None and entry.agreement is not None:
            parts.append(f"agreement with CT air {entry.agreement:.3f}")
        if entry is not None and entry.predicted_iou is not None:
            parts.append(f"predicted IoU {entry.predicted_iou:.3f}")
        return f"slice {z}: " + (", ".join(parts) if parts else "no quality yet")
