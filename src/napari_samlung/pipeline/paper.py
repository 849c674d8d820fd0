"""Compare a run's per-slice CSV with the paper's own per-slice results.

The paper's results (``paper_results/1-all/joint_raw_data_*.csv``, or any
folder of its ``raw_data_*.csv`` files) list ``image,slice,jaccard,dice`` for
every slice of every volume, with empty cells where the ground truth has no
lung.  Our CSV has one row per scored slice.  Cases are matched by name
(``image_coronacases_001`` = ``coronacases_001``; a case named
``..._slice_K`` is slice K of its volume, as for the exported ``.npy``
slices).  Slice numbering may run the other way round in our reoriented
volumes: for each case the direction whose set of scored slices matches the
paper's best is used, and reported.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..io.names import strip_suffix
from ..io.tables import read_scores_csv

_SLICE_SUFFIX = re.compile(r"^(?P<case>.+?)(?:_image)?_slice_(?P<slice>\d+)$")


def canonical_case(name: str) -> str:
    """``image_coronacases_001`` / ``coronacases_001.nii`` -> ``coronacases_001``."""
    name = strip_suffix(Path(name).name)
    return name[len("image_") :] if name.startswith("image_") else name


def read_paper_results(path: str | Path) -> dict[str, dict[int, float]]:
    """{case: {slice: dice}} for the slices with lung, from a CSV file or a folder of them."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.rglob("*raw_data*.csv"))
    if not files:
        raise DatasetError(f"{path}: no paper per-slice CSV (raw_data_*.csv) found")
    out: dict[str, dict[int, float]] = {}
    for f in files:
        with open(f, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("dice", "") in ("", None):
                    continue
                # per-volume files have no image column: their folder names the volume
                case = canonical_case(row.get("image") or f.parent.name)
                out.setdefault(case, {})[int(row["slice"])] = float(row["dice"])
    return out


def read_our_results(path: str | Path) -> dict[str, dict[int, float]]:
    """{case: {slice: dice}} from a ``per_slice.csv`` written by ``evaluate --out``."""
    out: dict[str, dict[int, float]] = {}
    for s in read_scores_csv(path):
        m = _SLICE_SUFFIX.match(canonical_case(s.case))
        case, z = (m["case"], int(m["slice"])) if m else (canonical_case(s.case), s.slice_index)
        out.setdefault(case, {})[z] = s.dice
    return out


@dataclass
class CaseComparison:
    """One case compared on the slices both runs scored (Dice as fractions in [0, 1]).

    ``flipped``: our slice numbers were reversed to match the paper's.
    ``differing``: ``(slice, ours, paper)`` where the Dice differ by more than the threshold.
    """

    case: str
    slices: int
    flipped: bool
    ours_mean: float
    paper_mean: float
    mean_difference: float
    differing: list[tuple[int, float, float]] = field(default_factory=list)


def compare(
    ours: dict[str, dict[int, float]],
    paper: dict[str, dict[int, float]],
    threshold: float = 0.05,
    n_slices: dict[str, int] | None = None,
) -> list[CaseComparison]:
    """Per-case comparison on the slices both runs scored.

    Parameters
    ----------
    ours, paper : dict
        ``{case: {slice: dice}}`` from :func:`read_our_results` and :func:`read_paper_results`.
    threshold : float
        Dice difference (a fraction) above which a slice is listed as differing.
    n_slices : dict, optional
        ``{case: slice count}``, to reverse our slice numbers exactly; default:
        one more than the highest slice number seen.

    Returns
    -------
    list of CaseComparison
        One per case in both, by case name.
    """
    rows = []
    for case in sorted(ours):
        if case not in paper:
            continue
        mine, theirs = ours[case], paper[case]
        flipped = False
        depth = (n_slices or {}).get(case) or (max(max(mine), max(theirs)) + 1)
        flip = {depth - 1 - z: d for z, d in mine.items()}
        if len(set(flip) & set(theirs)) > len(set(mine) & set(theirs)):
            mine, flipped = flip, True
        common = sorted(set(mine) & set(theirs))
        if not common:
            continue
        a = np.array([mine[z] for z in common])
        b = np.array([theirs[z] for z in common])
        differing = [
            (z, mine[z], theirs[z]) for z in common if abs(mine[z] - theirs[z]) > threshold
        ]
        rows.append(
            CaseComparison(
                case,
                len(common),
                flipped,
                float(a.mean()),
                float(b.mean()),
                float((a - b).mean()),
                differing,
            )
        )
    return rows


def format_comparison(rows: list[CaseComparison], threshold: float = 0.05) -> str:
    """A text table: one line per case, then up to 20 differing slices each."""
    lines = [
        f"{'case':<28} {'slices':>6} {'ours':>7} {'paper':>7} {'diff':>7}  "
        f"slices |diff| > {threshold}"
    ]
    for r in rows:
        flip = " (slice order flipped)" if r.flipped else ""
        lines.append(
            f"{r.case:<28} {r.slices:>6} {r.ours_mean:>7.4f} {r.paper_mean:>7.4f} "
            f"{r.mean_difference:>+7.4f}  {len(r.differing)}{flip}"
        )
        for z, mine, theirs in r.differing[:20]:
            lines.append(f"    slice {z}: ours {mine:.4f} paper {theirs:.4f}")
    if not rows:
        lines.append("(no case in common)")
    return "\n".join(lines)


def compare_files(
    ours_csv: str | Path, paper: str | Path, threshold: float = 0.05
) -> list[CaseComparison]:
    """:func:`compare` a ``per_slice.csv`` of ours with the paper's CSV file or folder.

    Raises
    ------
    DatasetError
        When ``ours_csv`` does not exist or the paper has no per-slice CSV there.
    """
    if not Path(ours_csv).is_file():
        raise DatasetError(f"{ours_csv} does not exist; run evaluate with --out first")
    return compare(read_our_results(ours_csv), read_paper_results(paper), threshold)
