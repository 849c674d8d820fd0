"""Prompts for SAM and the strategies that derive them from ground-truth lung labels.

Coordinates: numpy and napari index images as (row, col); SAM takes points
as (x, y) = (col, row) and boxes as (x0, y0, x1, y1).  The conversion happens
in exactly one place, :func:`points_rc_to_xy` (and :func:`box_xyxy_from_mask`,
which builds on it).  Everything called ``*_xy``/``*_xyxy`` is in SAM's pixel
coordinates of the original (full resolution) slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..errors import PromptError
from .labels import lung_union

POSITIVE = 1
NEGATIVE = 0
#: ``Prompt.target_label`` for a user's box or point group: one lung, named left or right by
#: the side of the body's midline its mask lies on (never split in two).
ONE_LUNG = -1
#: Box enlargement around a lung for prompts made from a mask, a fraction of its size.
BOX_MARGIN_FRACTION = 0.05
#: More points than this on one slice is almost certainly a mistake (a stuck key, a script bug).
MAX_POINTS_PER_SLICE = 64
#: Largest accepted magnitude of a point or box coordinate, in pixels: anything beyond is a
#: typo or a unit mix-up, far outside any image (boxes within it are clipped to the image).
MAX_COORDINATE = 1_000_000.0
#: The ``target_label`` values a prompt may carry: all lungs, one lung by its side, or a lung.
TARGET_LABELS = (None, ONE_LUNG, 1, 2)


@dataclass
class Prompt:
    """One SAM call's worth of prompts on one slice.

    ``target_label`` is the lung label the resulting mask is painted with;
    :data:`ONE_LUNG` means "one lung, name it by its side of the midline"
    (what a user's box or point group is); ``None`` means "all lungs
    together" (a box around both lungs): the mask is split into left/right
    lungs afterwards.
    """

    points_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    box_xyxy: np.ndarray | None = None
    target_label: int | None = None

    def __post_init__(self) -> None:
        points = _as_float32(self.points_xy, "points")
        if points.size % 2:
            raise PromptError(
                f"prompt points must be (x, y) pairs, got {points.size} numbers; give two "
                "coordinates per point"
            )
        self.points_xy = points.reshape(-1, 2)
        try:
            labels = np.asarray(self.point_labels)
            self.point_labels = labels.astype(np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise PromptError(
                "point labels must be numbers: 1 (positive) or 0 (negative)"
            ) from None
        if len(self.points_xy) != len(self.point_labels):
            raise PromptError(
                f"prompt has {len(self.points_xy)} points but {len(self.point_labels)} labels"
            )
        if self.box_xyxy is not None:
            box = _as_float32(self.box_xyxy, "box")
            if box.size != 4:
                raise PromptError(
                    f"a box needs 4 numbers (x0, y0, x1, y1), got {box.size}; draw it again"
                )
            self.box_xyxy = box.reshape(4)

    @property
    def has_points(self) -> bool:
        return len(self.points_xy) > 0

    def without_points(self) -> Prompt:
        """The same prompt with its points dropped (for box-only models)."""
        return Prompt(box_xyxy=self.box_xyxy, target_label=self.target_label)


def _as_float32(values: object, what: str) -> np.ndarray:
    """``values`` as float32, without numpy's overflow warning (too-large values become inf,
    which :func:`validate_prompt` refuses with its own message)."""
    try:
        array = np.asarray(values, np.float64)
    except (TypeError, ValueError, OverflowError):
        raise PromptError(f"prompt {what} must be numbers (pixel coordinates)") from None
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(np.float32)


def for_model(prompt: Prompt, accepts_points: bool) -> Prompt:
    """The prompt as a model takes it: the box-only rule, in one place.

    Parameters
    ----------
    prompt : Prompt
    accepts_points : bool
        False for a box-only model (LiteMedSAM): its points are dropped.

    Returns
    -------
    Prompt
        ``prompt`` itself when the model accepts points, else a copy without points.
    """
    return prompt if accepts_points else prompt.without_points()


def points_rc_to_xy(points_rc: np.ndarray) -> np.ndarray:
    """Convert (row, col) points to SAM's (x, y).  The one place where axes swap."""
    points_rc = np.asarray(points_rc, np.float32).reshape(-1, 2)
    return points_rc[:, ::-1].copy()


def points_xy_to_rc(points_xy: np.ndarray) -> np.ndarray:
    """Inverse of :func:`points_rc_to_xy` (for showing generated prompts in napari)."""
    return points_rc_to_xy(points_xy)


def box_xyxy_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight bounding box of a 2D mask as (x0, y0, x1, y1), inclusive pixel indices."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise PromptError("cannot build a box from an empty mask")
    corners_rc = np.array([[rows.min(), cols.min()], [rows.max(), cols.max()]], np.float32)
    return points_rc_to_xy(corners_rc).reshape(4)


def box_xyxy_to_rc_corners(box_xyxy: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) -> [[row0, col0], [row1, col1]]."""
    return points_xy_to_rc(np.asarray(box_xyxy, np.float32).reshape(2, 2))


# --------------------------------------------------------------------------- point placement


def _runs(line: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous True runs of a 1D boolean array as (start, stop) half-open."""
    padded = np.concatenate([[False], line.astype(bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _run_through(line: np.ndarray, index: int) -> tuple[int, int] | None:
    for start, stop in _runs(line):
        if start <= index < stop:
            return start, stop
    return None


def _recentre(mask: np.ndarray, row: int, col: int) -> tuple[int, int]:
    """Move an inside point to the midpoint of the longer of its row/column runs."""
    row_run = _run_through(mask[row, :], col)
    col_run = _run_through(mask[:, col], row)
    row_len = row_run[1] - row_run[0] if row_run else 0
    col_len = col_run[1] - col_run[0] if col_run else 0
    if row_len >= col_len and row_run:
        return row, (row_run[0] + row_run[1] - 1) // 2
    if col_run:
        return (col_run[0] + col_run[1] - 1) // 2, col
    return row, col


def paper_positive_point_rc(mask: np.ndarray) -> tuple[int, int]:
    """Positive point of the paper's Algorithm 1 for one lung mask, as (row, col).

    Start at the centre of mass.  Inside the mask: re-centre along the longer of
    the row/column runs through it.  Outside: move along whichever of the row or
    the column through it holds more mask pixels to the middle of its longest
    run, then re-centre.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise PromptError("cannot place a point in an empty mask")
    cy, cx = ndi.center_of_mass(mask)
    row, col = int(round(cy)), int(round(cx))
    row = min(max(row, 0), mask.shape[0] - 1)
    col = min(max(col, 0), mask.shape[1] - 1)
    if not mask[row, col]:
        row_line, col_line = mask[row, :], mask[:, col]
        if row_line.sum() == 0 and col_line.sum() == 0:
            # Neither line meets the mask: fall back to the nearest mask pixel.
            rr, cc = np.nonzero(mask)
            nearest = np.argmin((rr - cy) ** 2 + (cc - cx) ** 2)
            row, col = int(rr[nearest]), int(cc[nearest])
        elif row_line.sum() >= col_line.sum():
            start, stop = max(_runs(row_line), key=lambda r: r[1] - r[0])
            col = (start + stop - 1) // 2
        else:
            start, stop = max(_runs(col_line), key=lambda r: r[1] - r[0])
            row = (start + stop - 1) // 2
    return _recentre(mask, row, col)


def interior_point_rc(mask: np.ndarray) -> tuple[int, int]:
    """The most interior pixel of a mask (maximum of the distance transform), as (row, col)."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise PromptError("cannot place a point in an empty mask")
    dist = ndi.distance_transform_edt(mask)
    row, col = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return int(row), int(col)


# --------------------------------------------------------------------------- strategies


def _lung_ids(lung_labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(lung_labels) if v > 0]


def paper_prompts(lung_labels: np.ndarray, accepts_points: bool = True) -> list[Prompt]:
    """Algorithm 1 of Gutierrez et al.: one box around all lungs, one positive
    point per lung, one negative point at the box centre; a single SAM call."""
    union = lung_union(lung_labels)
    box = box_xyxy_from_mask(union)
    if not accepts_points:
        return [Prompt(box_xyxy=box)]
    points_rc = [paper_positive_point_rc(lung_labels == v) for v in _lung_ids(lung_labels)]
    centre_xy = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0], np.float32)
    points_xy = np.concatenate([points_rc_to_xy(np.array(points_rc)), centre_xy[None]])
    labels = [POSITIVE] * len(points_rc) + [NEGATIVE]
    return [Prompt(points_xy=points_xy, point_labels=labels, box_xyxy=box)]


def box_prompts(lung_labels: np.ndarray, accepts_points: bool = True) -> list[Prompt]:
    """One box around all lungs, nothing else."""
    return [Prompt(box_xyxy=box_xyxy_from_mask(lung_union(lung_labels)))]


def per_lung_prompts(lung_labels: np.ndarray, accepts_points: bool = True) -> list[Prompt]:
    """A tight box per lung label (plus its Algorithm-1 positive point for
    models that accept points), each predicted separately."""
    prompts = []
    for value in _lung_ids(lung_labels):
        mask = lung_labels == value
        prompt = Prompt(box_xyxy=box_xyxy_from_mask(mask), target_label=value)
        if accepts_points:
            prompt.points_xy = points_rc_to_xy(np.array([paper_positive_point_rc(mask)]))
            prompt.point_labels = np.array([POSITIVE])
        prompts.append(prompt)
    return prompts


def boxes_mask(prompts: Sequence[Prompt], shape_rc: tuple[int, int]) -> np.ndarray:
    """Boolean (row, col) mask of the pixels inside any of the prompts' boxes."""
    inside = np.zeros(shape_rc, bool)
    for prompt in prompts:
        if prompt.box_xyxy is not None:
            x0, y0, x1, y1 = prompt.box_xyxy
            inside[
                int(np.floor(y0)) : int(np.ceil(y1)) + 1, int(np.floor(x0)) : int(np.ceil(x1)) + 1
            ] = True
    return inside


def lung_prompts(
    lung_labels: np.ndarray, accepts_points: bool, margin_frac: float = BOX_MARGIN_FRACTION
) -> list[Prompt]:
    """One prompt per lung of a label image: its enlarged box and an interior point.

    Used where the labels are a guess rather than the truth (the previous
    slice in propagation, the air candidates), so the box is enlarged on each
    side by ``margin_frac`` of its width/height (at least 2 pixels), and the
    positive point (models that take points only) is the mask's most interior
    pixel.

    Parameters
    ----------
    lung_labels
        uint8 (row, col) lung labels (0, 1 left, 2 right).
    accepts_points
        Whether the model takes points.
    margin_frac
        Box enlargement per side, as a fraction of the box size.

    Returns
    -------
    list of Prompt
        Boxes ``(x0, y0, x1, y1)`` in pixels, ``target_label`` = the lung.
    """
    rows, cols = lung_labels.shape
    prompts = []
    for value in _lung_ids(lung_labels):
        mask = lung_labels == value
        x0, y0, x1, y1 = box_xyxy_from_mask(mask)
        mx = max(2.0, margin_frac * (x1 - x0))
        my = max(2.0, margin_frac * (y1 - y0))
        box = [max(0, x0 - mx), max(0, y0 - my), min(cols - 1, x1 + mx), min(rows - 1, y1 + my)]
        prompt = Prompt(box_xyxy=box, target_label=value)
        if accepts_points:
            prompt.points_xy = points_rc_to_xy(np.array([interior_point_rc(mask)]))
            prompt.point_labels = np.array([POSITIVE])
        prompts.append(prompt)
    return prompts


def mediastinum_negatives_rc(lung_labels: np.ndarray, count: int = 3) -> np.ndarray:
    """Negative points on the mediastinum: on the column midway between the two
    lungs, at ``count`` rows spread over their common extent, never on a lung pixel."""
    union = lung_union(lung_labels)
    ids = _lung_ids(lung_labels)
    if len(ids) < 2:
        return np.zeros((0, 2), np.float32)
    a, b = (np.nonzero(lung_labels == v) for v in ids[:2])
    # inner edges: the gap between the lungs along the columns
    if a[1].mean() > b[1].mean():
        a, b = b, a
    col = (
        int(round((a[1].max() + b[1].min()) / 2.0))
        if a[1].max() < b[1].min()
        else int(round((a[1].mean() + b[1].mean()) / 2.0))
    )
    top = max(a[0].min(), b[0].min())
    bottom = min(a[0].max(), b[0].max())
    if bottom <= top:
        return np.zeros((0, 2), np.float32)
    rows = np.linspace(top, bottom, count + 2)[1:-1].round().astype(int)
    points = [(r, col) for r in rows if not union[r, col]]
    return np.array(points, np.float32).reshape(-1, 2)


def multi_negative_prompts(lung_labels: np.ndarray, accepts_points: bool = True) -> list[Prompt]:
    """Algorithm 1's box and positive points, but the single box-centre negative
    point is replaced by negatives on the mediastinum that never fall in a lung."""
    if not accepts_points:
        return box_prompts(lung_labels)
    union = lung_union(lung_labels)
    box = box_xyxy_from_mask(union)
    positives = np.array(
        [paper_positive_point_rc(lung_labels == v) for v in _lung_ids(lung_labels)]
    )
    negatives = mediastinum_negatives_rc(lung_labels)
    points_rc = np.concatenate([positives.reshape(-1, 2), negatives])
    labels = [POSITIVE] * len(positives) + [NEGATIVE] * len(negatives)
    return [Prompt(points_xy=points_rc_to_xy(points_rc), point_labels=labels, box_xyxy=box)]


@dataclass(frozen=True)
class Strategy:
    """A named way of prompting SAM from ground-truth lung labels."""

    name: str
    build: Callable[[np.ndarray, bool], list[Prompt]]
    description: str
    multimask: bool = False
    postprocess: bool = False


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy(
            "paper",
            paper_prompts,
            "Algorithm 1 of the paper: box + point per lung + negative at box centre, one call",
        ),
        Strategy("per-lung", per_lung_prompts, "one tight box (+ positive point) per lung"),
        Strategy("box", box_prompts, "one box around both lungs"),
        Strategy(
            "multi-negative",
            multi_negative_prompts,
            "Algorithm 1 with negatives on the mediastinum that never fall inside a lung",
        ),
        Strategy(
            "per-lung-multimask",
            per_lung_prompts,
            "per-lung, choosing among SAM's three "
            "masks by predicted IoU and agreement with the box",
            multimask=True,
        ),
        Strategy(
            "per-lung-post",
            per_lung_prompts,
            "per-lung, then keep the largest component and fill holes",
            postprocess=True,
        ),
    )
}


def get_strategy(name: str) -> Strategy:
    """Look up a strategy by name with a helpful error."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise PromptError(
            f"unknown prompt strategy {name!r}; choose one of {', '.join(STRATEGIES)}"
        ) from None


def prompts_from_labels(
    lung_labels: np.ndarray, strategy: str | Strategy = "per-lung", accepts_points: bool = True
) -> list[Prompt]:
    """Prompts for one 2D slice of lung labels; an empty list when the slice has no lung."""
    lung_labels = np.asarray(lung_labels)
    if lung_labels.ndim != 2:
        raise PromptError(f"expected a 2D label slice, got shape {lung_labels.shape}")
    if not lung_labels.any():
        return []
    strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
    return strat.build(lung_labels, accepts_points)


def validate_prompt(prompt: Prompt, shape_rc: tuple[int, int], accepts_points: bool) -> Prompt:
    """Check a (usually user-made) prompt against the slice and the model.

    Returns the prompt, possibly clipped (a box larger than the image) or with its
    points dropped (box-only model).  Raises :class:`PromptError` for prompts
    that cannot work.
    """
    rows, cols = shape_rc
    _check_fields(prompt)
    if len(prompt.points_xy) > MAX_POINTS_PER_SLICE:
        raise PromptError(
            f"{len(prompt.points_xy)} points on one slice is more than the limit of "
            f"{MAX_POINTS_PER_SLICE}; remove some points"
        )
    if prompt.has_points:
        if not _usable(prompt.points_xy):
            raise PromptError(
                "a point has non-finite coordinates or coordinates beyond "
                f"{MAX_COORDINATE:g} pixels; place it again on the image"
            )
        x, y = prompt.points_xy[:, 0], prompt.points_xy[:, 1]
        outside = (x < -0.5) | (y < -0.5) | (x > cols - 0.5) | (y > rows - 0.5)
        if outside.any():
            bad = prompt.points_xy[outside][0]
            raise PromptError(
                f"point (row {bad[1]:.0f}, col {bad[0]:.0f}) lies outside the {rows}x{cols} "
                "slice; move it onto the image"
            )
    box = prompt.box_xyxy
    if box is not None:
        if not _usable(box):
            raise PromptError(
                "the box has non-finite corners or corners beyond "
                f"{MAX_COORDINATE:g} pixels; draw it again around the lung"
            )
        x0, x1 = sorted((float(box[0]), float(box[2])))
        y0, y1 = sorted((float(box[1]), float(box[3])))
        x0, x1 = max(x0, 0.0), min(x1, cols - 1.0)
        y0, y1 = max(y0, 0.0), min(y1, rows - 1.0)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise PromptError(
                "the box has zero width or height (or lies outside the image); drag a "
                "rectangle around the lung"
            )
        box = np.array([x0, y0, x1, y1], np.float32)
    checked = for_model(
        Prompt(prompt.points_xy, prompt.point_labels, box, prompt.target_label), accepts_points
    )
    point_labels = checked.point_labels
    if box is None and (len(point_labels) == 0 or not (point_labels == POSITIVE).any()):
        if prompt.has_points and accepts_points:
            raise PromptError(
                "only negative points on this slice: add a positive point or a box on the lung"
            )
        raise PromptError(
            "this model needs a box: draw a rectangle around the lung"
            if not accepts_points
            else "no prompt on this slice: add a positive point or a box"
        )
    return checked


def _usable(coords: np.ndarray) -> bool:
    """True when every coordinate is finite and within :data:`MAX_COORDINATE`."""
    coords = np.asarray(coords, np.float64)
    return bool(np.isfinite(coords).all() and (np.abs(coords) <= MAX_COORDINATE).all())


def _check_fields(prompt: Prompt) -> None:
    """Refuse prompts whose fields were set to shapes or values no model call can take.

    The attributes can be assigned after construction (the widget and the prompts file
    reader do), so the checks of ``Prompt.__post_init__`` are repeated here.
    """
    points = np.asarray(prompt.points_xy)
    labels = np.asarray(prompt.point_labels)
    if points.ndim != 2 or points.shape[1] != 2:
        raise PromptError(
            f"prompt points must be (x, y) pairs, got an array of shape {points.shape}; "
            "give two coordinates per point"
        )
    if labels.ndim != 1 or len(labels) != len(points):
        raise PromptError(
            f"prompt has {len(points)} points but {labels.size} point labels; give one label "
            "(1 positive, 0 negative) per point"
        )
    bad = [v for v in labels.tolist() if v not in (POSITIVE, NEGATIVE)]
    if bad:
        raise PromptError(
            f"point label {bad[0]!r} is not 1 (positive) or 0 (negative); label each point 1 or 0"
        )
    if prompt.box_xyxy is not None and np.asarray(prompt.box_xyxy).size != 4:
        raise PromptError(
            f"a box needs 4 numbers (x0, y0, x1, y1), got {np.asarray(prompt.box_xyxy).size}; "
            "draw it again"
        )
    target = prompt.target_label
    integer = isinstance(target, int | np.integer) and not isinstance(target, bool)
    if not (target is None or (integer and target in TARGET_LABELS)):
        raise PromptError(
            f"the prompt's lung label {target!r} is not 1 (left lung) or 2 (right lung); "
            "label each box 1 or 2, or leave its label out"
        )
