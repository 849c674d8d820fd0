"""Dice and Jaccard, per slice and as Table-1 style summaries.

Empty cases, defined once here:

- ground truth empty: the slice is *not scored* (the paper skips it); it is
  counted in ``skipped_empty``.  :func:`dice` itself returns 1.0 when both
  masks are empty and 0.0 when only one is.
- prediction empty on a slice with lung: Dice = Jaccard = 0, and the slice
  is counted in ``empty_predictions``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .labels import lung_union


def _counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    pred = np.asarray(pred, bool)
    truth = np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {truth.shape}")
    inter = int(np.count_nonzero(pred & truth))
    return inter, int(np.count_nonzero(pred)), int(np.count_nonzero(truth))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice = 2|A∩B| / (|A|+|B|); 1.0 when both are empty."""
    inter, a, b = _counts(pred, truth)
    return 1.0 if a + b == 0 else 2.0 * inter / (a + b)


def jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    """Jaccard = |A∩B| / |A∪B|; 1.0 when both are empty."""
    inter, a, b = _counts(pred, truth)
    union = a + b - inter
    return 1.0 if union == 0 else inter / union


@dataclass
class SliceScore:
    """Scores of one predicted slice against its ground truth."""

    case: str
    slice_index: int
    dice: float
    jaccard: float
    dice_per_lung: dict[int, float] = field(default_factory=dict)
    score: float = float("nan")
    seconds: float = float("nan")
    empty_prediction: bool = False


def score_slice(
    pred_labels: np.ndarray,
    truth_labels: np.ndarray,
    *,
    case: str = "",
    slice_index: int = 0,
    score: float = float("nan"),
    seconds: float = float("nan"),
) -> SliceScore | None:
    """Score one slice: the union of lungs, and each lung label of the truth.

    Returns ``None`` when the ground truth has no lung (the slice is skipped).
    """
    truth = np.asarray(truth_labels)
    pred = np.asarray(pred_labels)
    truth_union = lung_union(truth)
    if not truth_union.any():
        return None
    pred_union = lung_union(pred)
    per_lung = {int(v): dice(pred == v, truth == v) for v in np.unique(truth) if v > 0}
    return SliceScore(
        case=case,
        slice_index=int(slice_index),
        dice=dice(pred_union, truth_union),
        jaccard=jaccard(pred_union, truth_union),
        dice_per_lung=per_lung,
        score=float(score),
        seconds=float(seconds),
        empty_prediction=not pred_union.any(),
    )


@dataclass
class Stats:
    n: int
    mean: float
    std: float
    min: float
    max: float
    median: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        arr = np.asarray(values, np.float64)
        if arr.size == 0:
            nan = float("nan")
            return cls(0, nan, nan, nan, nan, nan)
        return cls(
            int(arr.size),
            float(arr.mean()),
            float(arr.std()),
            float(arr.min()),
            float(arr.max()),
            float(np.median(arr)),
        )


@dataclass
class Summary:
    """Table-1 style summary over all scored slices."""

    dice: Stats
    jaccard: Stats
    cases: int
    slices: int
    skipped_empty: int
    empty_predictions: int

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("dice", "jaccard"):
            out[key].pop("n")
        return out

    def format_table(self) -> str:
        """Human-readable summary, percentages like the paper's Table 1."""
        lines = [
            f"cases {self.cases}  scored slices {self.slices}  "
            f"skipped (empty ground truth) {self.skipped_empty}  "
            f"empty predictions {self.empty_predictions}",
            f"{'metric':<8} {'mean':>7} {'std':>7} {'min':>7} {'max':>7} {'median':>7}",
        ]
        for name, st in (("Dice", self.dice), ("Jaccard", self.jaccard)):
            cells = [_pct(v) for v in (st.mean, st.std, st.min, st.max, st.median)]
            lines.append(f"{name:<8} " + " ".join(f"{c:>7}" for c in cells))
        return "\n".join(lines)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def summarize(scores: Iterable[SliceScore], skipped_empty: int = 0) -> Summary:
    """Summarise per-slice scores (slices with empty ground truth must not be in ``scores``)."""
    scores = list(scores)
    return Summary(
        dice=Stats.of([s.dice for s in scores]),
        jaccard=Stats.of([s.jaccard for s in scores]),
        cases=len({s.case for s in scores}),
        slices=len(scores),
        skipped_empty=int(skipped_empty),
        empty_predictions=sum(s.empty_prediction for s in scores),
    )
