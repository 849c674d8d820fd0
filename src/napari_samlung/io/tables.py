"""Tables on disk: per-slice scores as CSV, and prompted slices as JSON.

The score and prompt records themselves live in :mod:`napari_samlung.core`
(:class:`~napari_samlung.core.metrics.SliceScore`,
:class:`~napari_samlung.core.propagation.Seed`); this module only reads and
writes them, so ``core`` does no file I/O.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..core.metrics import SliceScore
from ..core.prompts import POSITIVE, Prompt, points_rc_to_xy
from ..core.propagation import Seed
from ..errors import PromptError

#: Columns of the per-slice scores CSV, in order.
CSV_FIELDS = [
    "case",
    "slice",
    "dice",
    "jaccard",
    "dice_left_lung",
    "dice_right_lung",
    "score",
    "seconds",
    "empty_prediction",
]


def score_to_row(s: SliceScore) -> dict:
    """One CSV row (``CSV_FIELDS`` -> text) for a slice's scores; NaN becomes ``""``."""

    def fmt(v: float | None) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6f}"

    return {
        "case": s.case,
        "slice": s.slice_index,
        "dice": fmt(s.dice),
        "jaccard": fmt(s.jaccard),
        "dice_left_lung": fmt(s.dice_per_lung.get(1)),
        "dice_right_lung": fmt(s.dice_per_lung.get(2)),
        "score": fmt(s.score),
        "seconds": fmt(s.seconds),
        "empty_prediction": int(s.empty_prediction),
    }


def row_to_score(row: dict) -> SliceScore:
    """The :class:`~napari_samlung.core.metrics.SliceScore` of one CSV row (``""`` -> NaN)."""

    def num(key: str) -> float:
        value = row.get(key, "")
        return float(value) if value not in ("", None) else float("nan")

    per_lung = {}
    for label, key in ((1, "dice_left_lung"), (2, "dice_right_lung")):
        if row.get(key, "") not in ("", None):
            per_lung[label] = float(row[key])
    return SliceScore(
        case=row["case"],
        slice_index=int(row["slice"]),
        dice=num("dice"),
        jaccard=num("jaccard"),
        dice_per_lung=per_lung,
        score=num("score"),
        seconds=num("seconds"),
        empty_prediction=row.get("empty_prediction") == "1",
    )


def write_scores_csv(path: str | Path, scores: Iterable[SliceScore], append: bool = False) -> None:
    """Write per-slice scores as CSV (one row per scored slice); ``append`` adds rows.

    Columns are :data:`CSV_FIELDS`; Dice, Jaccard and the predicted IoU
    (``score``) are fractions in 0..1, ``seconds`` is wall time per slice.
    The file is flushed and fsynced before returning.
    """
    path = Path(path)
    new = not (append and path.exists())
    with open(path, "a" if append else "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        for s in scores:
            writer.writerow(score_to_row(s))
        fh.flush()
        os.fsync(fh.fileno())


def read_scores_csv(path: str | Path) -> list[SliceScore]:
    """Read a CSV written by :func:`write_scores_csv`."""
    with open(path, newline="") as fh:
        return [row_to_score(r) for r in csv.DictReader(fh)]


_PROMPTS_FORMAT = '{"slices": [{"slice": K, "boxes_xyxy": [[x0, y0, x1, y1]], ...}]}'


def seeds_from_json(path: str | Path, shape: tuple[int, ...]) -> list[Seed]:
    """Read seeds from a small JSON file.

    Format::

        {"slices": [{"slice": 32,
                     "points_rc": [[120, 80], [130, 300]], "point_labels": [1, 1],
                     "boxes_xyxy": [[40, 60, 200, 400]], "box_labels": [2]}]}

    ``points_rc`` are (row, col) like napari; ``boxes_xyxy`` are (x0, y0, x1, y1);
    ``box_labels`` (optional) name the lung each box outlines (1 left, 2 right).
    """
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
        entries = spec["slices"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PromptError(
            f"{path}: not a prompts file ({type(exc).__name__}); expected "
            '{"slices": [{"slice": K, "boxes_xyxy": [[x0, y0, x1, y1]], ...}]}'
        ) from None
    n_slices = shape[0] if len(shape) == 3 else 1
    if not isinstance(entries, list):
        raise PromptError(f"{path}: 'slices' must be a list; expected {_PROMPTS_FORMAT}")
    seeds = []
    for i, entry in enumerate(entries):
        try:
            seeds.append(_seed_from_entry(entry, n_slices, path))
        except PromptError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise PromptError(
                f"{path}: slice entry {i} is malformed ({exc}); expected {_PROMPTS_FORMAT}"
            ) from None
    if not seeds:
        raise PromptError(f"{path}: no prompted slices")
    return seeds


def _seed_from_entry(entry: dict, n_slices: int, path: Path) -> Seed:
    z = int(entry.get("slice", 0))
    if not 0 <= z < n_slices:
        raise PromptError(f"{path}: slice {z} is outside the volume (0..{n_slices - 1})")
    prompts: list[Prompt] = []
    boxes = entry.get("boxes_xyxy", [])
    box_labels = entry.get("box_labels", [None] * len(boxes))
    points = points_rc_to_xy(np.asarray(entry.get("points_rc", []), np.float32))
    point_labels = np.asarray(entry.get("point_labels", [POSITIVE] * len(points)))
    for box, label in zip(boxes, box_labels, strict=True):
        prompts.append(Prompt(box_xyxy=box, target_label=label))
    if len(points):
        if prompts and len(prompts) == 1:
            prompts[0].points_xy, prompts[0].point_labels = points, point_labels
        else:
            prompts.append(Prompt(points_xy=points, point_labels=point_labels))
    if not prompts:
        raise PromptError(f"{path}: slice {z} has no boxes or points")
    return Seed(z, prompts)
