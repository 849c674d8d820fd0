"""Tables on disk: per-slice scores as CSV, and prompted slices as JSON.

The score and prompt records themselves live in :mod:`napari_samlung.core`
(:class:`~napari_samlung.core.metrics.SliceScore`,
:class:`~napari_samlung.core.propagation.Seed`); this module only reads and
writes them, so ``core`` does no file I/O.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.labels import LEFT_LUNG, RIGHT_LUNG
from ..core.metrics import SliceScore
from ..core.prompts import (
    MAX_COORDINATE,
    MAX_POINTS_PER_SLICE,
    NEGATIVE,
    POSITIVE,
    Prompt,
    points_rc_to_xy,
)
from ..core.propagation import Seed
from ..errors import PromptError
from .atomic import Inputs, atomic_write
from .checks import stat_input
from .outputs import check_output, write_error

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


def write_scores_csv(
    path: str | Path,
    scores: Iterable[SliceScore],
    append: bool = False,
    inputs: Inputs = (),
) -> None:
    """Write per-slice scores as CSV (one row per scored slice); ``append`` adds rows.

    Columns are :data:`CSV_FIELDS`; Dice, Jaccard and the predicted IoU
    (``score``) are fractions in 0..1, ``seconds`` is wall time per slice.
    Without ``append`` the file is replaced atomically; with it the rows are
    appended, flushed and fsynced before returning.  ``path`` is never one of
    ``inputs`` (:func:`~napari_samlung.io.outputs.check_output`), and an OS
    error (a full disk) is one :class:`~napari_samlung.errors.InputFileError` line.
    """
    rows = [score_to_row(s) for s in scores]
    if not append:
        atomic_write(path, lambda tmp: _write_rows(tmp, rows, "w", True), True, inputs)
        return
    path = check_output(path, overwrite=True, inputs=inputs)
    try:
        _write_rows(path, rows, "a", not path.exists())
    except OSError as exc:
        raise write_error(path, exc) from None


def _write_rows(path: Path, rows: list[dict], mode: str, header: bool) -> None:
    with open(path, mode, newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        if header:
            writer.writeheader()
        writer.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def read_scores_csv(path: str | Path) -> list[SliceScore]:
    """Read a CSV written by :func:`write_scores_csv`."""
    with open(path, newline="") as fh:
        return [row_to_score(r) for r in csv.DictReader(fh)]


def rows_digest(scores: Iterable[SliceScore]) -> str:
    """SHA-256 of the CSV text of ``scores`` (as :func:`write_scores_csv` writes them).

    A run record keeps it per case, so a resumed run notices any changed row.
    """
    buffer = io.StringIO()
    csv.DictWriter(buffer, fieldnames=CSV_FIELDS).writerows(score_to_row(s) for s in scores)
    return hashlib.sha256(buffer.getvalue().encode("utf-8")).hexdigest()


@dataclass
class ScoreRows:
    """What :func:`read_score_rows` made of a scores CSV that may be damaged.

    Attributes
    ----------
    scores : list of SliceScore
        The rows that are whole and valid, in file order.
    bad_cases : set of str
        Cases named by a row that is not (a wrong field count, a non-number
        where a number belongs, a value out of range, a torn last line).
    dropped : int
        Lines dropped (bad rows, garbage, a torn last line).
    readable : bool
        False when the header is not :data:`CSV_FIELDS` (an emptied or random
        file): nothing in it can be trusted.
    """

    scores: list[SliceScore] = field(default_factory=list)
    bad_cases: set[str] = field(default_factory=set)
    dropped: int = 0
    readable: bool = True


def read_score_rows(path: str | Path) -> ScoreRows:
    """Read a scores CSV, keeping only whole, valid rows; never raises on its content.

    Raises
    ------
    OSError
        When the file cannot be read at all (e.g. it is a folder).
    """
    data = Path(path).read_bytes()
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines(keepends=True)
    result = ScoreRows()
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines.pop()  # torn: the write was cut short
        result.dropped += 1
    if not lines or next(csv.reader([lines[0]]), None) != CSV_FIELDS:
        result.readable = False
        result.dropped += max(len(lines) - 1, 0)
        return result
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            fields = next(csv.reader([line], strict=True))
        except (csv.Error, StopIteration):
            result.dropped += 1
            continue
        try:
            result.scores.append(_checked_row(fields))
        except ValueError:
            result.dropped += 1
            if fields:
                result.bad_cases.add(fields[0])
    return result


def _checked_row(fields: list[str]) -> SliceScore:
    """A :class:`SliceScore` from one CSV row, or ``ValueError`` for anything off."""
    if len(fields) != len(CSV_FIELDS):
        raise ValueError("wrong number of fields")
    row = dict(zip(CSV_FIELDS, fields, strict=True))
    if not row["case"] or not row["slice"].isdigit() or row["empty_prediction"] not in "01":
        raise ValueError("bad case, slice or empty_prediction")
    if len(row["empty_prediction"]) != 1:
        raise ValueError("bad empty_prediction")
    for key in ("dice", "jaccard", "dice_left_lung", "dice_right_lung"):
        value = row[key]
        if value == "" and key.startswith("dice_"):
            continue
        if not 0.0 <= _finite(value) <= 1.0:
            raise ValueError(f"{key} out of range")
    if row["score"] != "":
        _finite(row["score"])
    if row["seconds"] != "" and _finite(row["seconds"]) < 0:
        raise ValueError("negative seconds")
    return row_to_score(row)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not finite")
    return value


_PROMPTS_FORMAT = '{"slices": [{"slice": K, "boxes_xyxy": [[x0, y0, x1, y1]], ...}]}'
#: Largest prompts file read, in bytes (a hand-written or exported file is a few kB).
MAX_PROMPTS_BYTES = 16 * 1024 * 1024
#: Keys a slice entry of a prompts file may have.
_ENTRY_KEYS = frozenset({"slice", "points_rc", "point_labels", "boxes_xyxy", "box_labels"})


def seeds_from_json(path: str | Path, shape: tuple[int, ...]) -> list[Seed]:
    """Read seeds from a small JSON file.

    Format::

        {"slices": [{"slice": 32,
                     "points_rc": [[120, 80], [130, 300]], "point_labels": [1, 1],
                     "boxes_xyxy": [[40, 60, 200, 400]], "box_labels": [2]}]}

    ``points_rc`` are (row, col) like napari; ``boxes_xyxy`` are (x0, y0, x1, y1);
    ``point_labels`` (optional, default all 1) are 1 positive / 0 negative, one per point;
    ``box_labels`` (optional) name the lung each box outlines (1 left, 2 right, or null for
    a box around both lungs), one per box.  ``slice`` is a whole-number index, and may be
    left out for a 2D image only.  Every coordinate is a finite number within
    :data:`~napari_samlung.core.prompts.MAX_COORDINATE` pixels; each slice appears once.

    Raises
    ------
    PromptError
        One line naming the file, the entry and the field at fault, for anything else:
        not JSON, too large or too deeply nested, wrong types, counts or values.
    """
    path = Path(path)
    info = stat_input(path)  # a link loop or an over-long name: one line
    if info is None or stat.S_ISDIR(info.st_mode):
        problem = "not found" if info is None else "is a folder"
        raise PromptError(f"{path}: prompts file {problem}; give the path of a .json file")
    try:
        size = info.st_size
        if size > MAX_PROMPTS_BYTES:
            raise PromptError(
                f"{path}: prompts file is {size} bytes, more than the limit of "
                f"{MAX_PROMPTS_BYTES}; a prompts file holds a few boxes or points per slice"
            )
        spec = json.loads(path.read_bytes().decode("utf-8"))
        entries = spec["slices"]
    except PromptError:
        raise
    except RecursionError:
        raise PromptError(
            f"{path}: prompts file is nested too deeply to be a prompts file; expected "
            f"{_PROMPTS_FORMAT}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and over-long integers
        raise PromptError(
            f"{path}: not a prompts file ({type(exc).__name__}); expected {_PROMPTS_FORMAT}"
        ) from None
    n_slices = shape[0] if len(shape) == 3 else 1
    if not isinstance(entries, list):
        raise PromptError(f"{path}: 'slices' must be a list; expected {_PROMPTS_FORMAT}")
    seeds: list[Seed] = []
    seen: dict[int, int] = {}
    for i, entry in enumerate(entries):
        try:
            seed = _seed_from_entry(entry, n_slices, path, i)
        except PromptError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
            raise PromptError(
                f"{path}: slice entry {i} is malformed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); expected {_PROMPTS_FORMAT}"
            ) from None
        if seed.slice_index in seen:
            raise PromptError(
                f"{path}: slice {seed.slice_index} appears in entries {seen[seed.slice_index]} "
                f"and {i}; put all prompts of a slice in one entry"
            )
        seen[seed.slice_index] = i
        seeds.append(seed)
    if not seeds:
        raise PromptError(f"{path}: no prompted slices")
    return seeds


def _malformed(path: Path, i: int, problem: str) -> PromptError:
    return PromptError(
        f"{path}: slice entry {i} is malformed: {problem}; expected {_PROMPTS_FORMAT}"
    )


def _is_number(value: object) -> bool:
    """A JSON number (``true``/``false`` are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coordinates(values: object, per_item: int, key: str, path: Path, i: int) -> list[list[float]]:
    """A list of coordinate tuples of ``per_item`` finite numbers within MAX_COORDINATE."""
    if not isinstance(values, list):
        raise _malformed(path, i, f"'{key}' must be a list, got {type(values).__name__}")
    what = "[row, col] pair" if per_item == 2 else "[x0, y0, x1, y1] box"
    out = []
    for j, item in enumerate(values):
        if not (isinstance(item, list) and len(item) == per_item):
            raise _malformed(path, i, f"'{key}' item {j} is not a {what}: {_short(item)}")
        if not all(_is_number(v) for v in item):
            raise _malformed(path, i, f"'{key}' item {j} holds a non-number: {_short(item)}")
        try:
            coords = [float(v) for v in item]
        except OverflowError:  # an integer too large for a float
            coords = [math.inf]
        if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in coords):
            raise _malformed(
                path,
                i,
                f"'{key}' item {j} has a coordinate that is not finite or is beyond "
                f"{MAX_COORDINATE:g} pixels: {_short(item)}",
            )
        out.append(coords)
    return out


def _labels(
    values: object, allowed: tuple, count: int, key: str, of: str, path: Path, i: int
) -> list:
    """One label per box or point, each one of ``allowed``."""
    if not isinstance(values, list):
        raise _malformed(path, i, f"'{key}' must be a list, got {type(values).__name__}")
    if len(values) != count:
        raise _malformed(path, i, f"{len(values)} {key} for {count} {of}; give one per {of[:-1]}")
    for v in values:
        if not (v is None and None in allowed) and not (
            _is_number(v) and float(v).is_integer() and int(v) in allowed
        ):
            shown = " or ".join("null" if a is None else str(a) for a in allowed)
            raise _malformed(path, i, f"'{key}' value {_short(v)} is not {shown}")
    return [None if v is None else int(v) for v in values]


def _short(value: object, limit: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _slice_index(entry: dict, n_slices: int, path: Path, i: int) -> int:
    if "slice" not in entry:
        if n_slices == 1:
            return 0
        raise _malformed(path, i, "it has no 'slice' index, which a volume needs")
    value = entry["slice"]
    if not (_is_number(value) and math.isfinite(value) and float(value).is_integer()):
        raise _malformed(
            path, i, f"'slice' must be a whole number (a slice index), got {_short(value)}"
        )
    z = int(value)
    if not 0 <= z < n_slices:
        raise PromptError(f"{path}: slice {z} is outside the volume (0..{n_slices - 1})")
    return z


def _seed_from_entry(entry: object, n_slices: int, path: Path, i: int = 0) -> Seed:
    """The :class:`Seed` of slice entry ``i``, every field checked (see :func:`seeds_from_json`)."""
    if not isinstance(entry, dict):
        raise _malformed(path, i, f"it is a {type(entry).__name__}, not an object")
    unknown = sorted(str(k) for k in entry if k not in _ENTRY_KEYS)
    if unknown:
        raise _malformed(
            path,
            i,
            f"unknown key {_short(unknown[0])} (known: {', '.join(sorted(_ENTRY_KEYS))})",
        )
    z = _slice_index(entry, n_slices, path, i)
    boxes = _coordinates(entry.get("boxes_xyxy", []), 4, "boxes_xyxy", path, i)
    box_labels = [None] * len(boxes)
    if "box_labels" in entry:
        allowed = (None, LEFT_LUNG, RIGHT_LUNG)
        box_labels = _labels(
            entry["box_labels"], allowed, len(boxes), "box_labels", "boxes", path, i
        )
    points_rc = _coordinates(entry.get("points_rc", []), 2, "points_rc", path, i)
    point_labels = [POSITIVE] * len(points_rc)
    if "point_labels" in entry:
        allowed = (NEGATIVE, POSITIVE)
        point_labels = _labels(
            entry["point_labels"], allowed, len(points_rc), "point_labels", "points", path, i
        )
    if len(points_rc) > MAX_POINTS_PER_SLICE:
        raise PromptError(
            f"{path}: slice {z}: {len(points_rc)} points on one slice is more than the limit "
            f"of {MAX_POINTS_PER_SLICE}; remove some points"
        )
    prompts = [
        Prompt(box_xyxy=box, target_label=label)
        for box, label in zip(boxes, box_labels, strict=True)
    ]
    if points_rc:
        points = points_rc_to_xy(np.asarray(points_rc, np.float32))
        if len(prompts) == 1:
            box = prompts[0]
            prompts[0] = Prompt(points, point_labels, box.box_xyxy, box.target_label)
        else:
            prompts.append(Prompt(points_xy=points, point_labels=point_labels))
    if not prompts:
        raise PromptError(f"{path}: slice {z} has no boxes or points")
    return Seed(z, prompts)
