"""The prompt layers: a Points layer (positive/negative clicks) and a Shapes layer (boxes).

Layer coordinates are napari's: ``(slice, row, col)`` for volumes and
``(row, col)`` for 2D images, in the image's data coordinates (the prompt
layers share the image layer's scale and translate).  The one conversion to
SAM's ``(x, y)`` is :func:`napari_samlung.core.prompts.points_rc_to_xy`.

No Qt here: these functions take and return napari layers and numpy arrays.
:func:`seeds_from_layers` reads the seeds of a propagation: every prompted
slice, its prompts read and checked exactly as the interactive path does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..core.prompts import (
    MAX_POINTS_PER_SLICE,
    NEGATIVE,
    ONE_LUNG,
    POSITIVE,
    Prompt,
    box_xyxy_to_rc_corners,
    for_model,
    points_rc_to_xy,
    points_xy_to_rc,
)
from ..errors import PromptError

#: Feature of the Points layer that holds the point's label.
POSITIVE_FEATURE = "positive"
POSITIVE_COLOR = "lime"
NEGATIVE_COLOR = "red"
BOX_COLOR = "yellow"
BOX_ONLY_MESSAGE = "this model uses boxes only; draw a box (Shapes layer, rectangle tool)"


@dataclass
class SlicePrompts:
    """The user's prompts on one slice, in (row, col) pixel coordinates."""

    points_rc: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    positive: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    boxes_rc: list[np.ndarray] = field(default_factory=list)  # each [[r0, c0], [r1, c1]]

    @property
    def empty(self) -> bool:
        """True when the slice has neither points nor boxes."""
        return len(self.points_rc) == 0 and not self.boxes_rc

    def signature(self) -> tuple:
        """Hashable summary (rounded to 1/100 px) used to detect real changes."""
        pts = tuple(
            sorted(
                (round(float(r), 2), round(float(c), 2), bool(p))
                for (r, c), p in zip(self.points_rc, self.positive, strict=True)
            )
        )
        boxes = tuple(sorted(tuple(np.round(b, 2).ravel().tolist()) for b in self.boxes_rc))
        return (pts, boxes)

    def to_prompts(
        self, accepts_points: bool = True, midline_col: float | None = None
    ) -> list[Prompt]:
        """SAM prompts, one lung each: one per box (with the points inside it), else one per
        point group.

        Points outside every box join the nearest box.  Without boxes, the
        positive points on each side of ``midline_col`` (when given) are one
        group, and each negative point joins the group of its nearest positive
        point.  Every prompt is :data:`~napari_samlung.core.prompts.ONE_LUNG`:
        its mask is one lung, named by its side of the body's midline.  For a
        box-only model the points are dropped.
        """
        labels = np.where(self.positive, POSITIVE, NEGATIVE).astype(np.int64)
        points_xy = points_rc_to_xy(self.points_rc)
        if not self.boxes_rc:
            prompts = [
                Prompt(points_xy[group], labels[group], target_label=ONE_LUNG)
                for group in _point_groups(points_xy, self.positive, midline_col)
            ]
        else:
            boxes_xyxy = [points_rc_to_xy(b).reshape(4) for b in self.boxes_rc]
            owner = np.array([_nearest_box(p, boxes_xyxy) for p in points_xy], int)
            prompts = [
                Prompt(points_xy[owner == i], labels[owner == i], box, ONE_LUNG)
                for i, box in enumerate(boxes_xyxy)
            ]
        prompts = [for_model(p, accepts_points) for p in prompts]
        return [p for p in prompts if p.has_points or p.box_xyxy is not None]


def _point_groups(
    points_xy: np.ndarray, positive: np.ndarray, midline_col: float | None
) -> list[np.ndarray]:
    """Indices of each point group: the positive points on one side of the midline, and the
    negative points nearest to them (all points in one group without a midline)."""
    if len(points_xy) == 0:
        return []
    everything = [np.arange(len(points_xy))]
    positive = np.asarray(positive, bool)
    if midline_col is None or not positive.any():
        return everything
    right = points_xy[:, 0] > midline_col
    sides = [s for s in (False, True) if (positive & (right == s)).any()]
    if len(sides) < 2:
        return everything
    pos_idx = np.flatnonzero(positive)
    side_of = np.empty(len(points_xy), bool)
    side_of[pos_idx] = right[pos_idx]
    for i in np.flatnonzero(~positive):
        nearest = pos_idx[np.argmin(((points_xy[pos_idx] - points_xy[i]) ** 2).sum(axis=1))]
        side_of[i] = right[nearest]
    return [np.flatnonzero(side_of == s) for s in sides]


def _nearest_box(point_xy: np.ndarray, boxes_xyxy: list[np.ndarray]) -> int:
    """Index of the box containing the point, else of the box whose centre is closest."""
    x, y = float(point_xy[0]), float(point_xy[1])
    for i, (x0, y0, x1, y1) in enumerate(boxes_xyxy):
        if min(x0, x1) <= x <= max(x0, x1) and min(y0, y1) <= y <= max(y0, y1):
            return i
    centres = [((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0) for b in boxes_xyxy]
    return int(np.argmin([(x - cx) ** 2 + (y - cy) ** 2 for cx, cy in centres]))


# --------------------------------------------------------------------------- layers


def make_points_layer(name: str, ndim: int, scale, translate):
    """An empty Points layer for prompts: green positive, red negative points."""
    from napari.layers import Points

    layer = Points(
        np.zeros((0, ndim)),
        ndim=ndim,
        name=name,
        scale=scale,
        translate=translate,
        features=pd.DataFrame({POSITIVE_FEATURE: pd.Series([], dtype=bool)}),
        feature_defaults={POSITIVE_FEATURE: True},
        face_color=POSITIVE_FEATURE,
        face_color_cycle={True: POSITIVE_COLOR, False: NEGATIVE_COLOR},
        border_color="white",
        size=8,
        metadata={"samlung": {"role": "prompts"}},
    )
    return layer


def make_shapes_layer(name: str, ndim: int, scale, translate):
    """An empty Shapes layer for boxes (rectangles), drawn as outlines."""
    from napari.layers import Shapes

    return Shapes(
        ndim=ndim,
        name=name,
        scale=scale,
        translate=translate,
        edge_color=BOX_COLOR,
        face_color="transparent",
        edge_width=2,
        metadata={"samlung": {"role": "boxes"}},
    )


def positive_flags(points_layer) -> np.ndarray:
    """The ``positive`` feature as a bool array (True where missing)."""
    n = len(points_layer.data)
    features = points_layer.features
    if POSITIVE_FEATURE not in features or len(features) != n:
        return np.ones(n, bool)
    values = features[POSITIVE_FEATURE].to_numpy()
    return np.array([True if v is None or v != v else bool(v) for v in values], bool)


def on_slice(coords: np.ndarray, slice_index: int) -> np.ndarray:
    """Mask of (n, 3) coordinates whose slice coordinate rounds to ``slice_index``."""
    coords = np.asarray(coords, float)
    if coords.ndim != 2 or coords.shape[1] < 3:
        return np.ones(len(coords), bool)
    return np.rint(coords[:, 0]).astype(int) == int(slice_index)


def read_slice_prompts(points_layer, shapes_layer, slice_index: int) -> SlicePrompts:
    """The points and rectangles of ``slice_index`` (all of them for 2D layers)."""
    out = SlicePrompts()
    if points_layer is not None and len(points_layer.data):
        data = np.asarray(points_layer.data, float)
        here = on_slice(data, slice_index)
        out.points_rc = data[here][:, -2:].astype(np.float32)
        out.positive = positive_flags(points_layer)[here]
    if shapes_layer is not None and len(shapes_layer.data):
        for verts, kind in zip(shapes_layer.data, shapes_layer.shape_type, strict=True):
            if kind != "rectangle":
                continue
            verts = np.asarray(verts, float)
            if not on_slice(verts[:1], slice_index)[0]:
                continue
            rc = verts[:, -2:]
            out.boxes_rc.append(
                np.array([rc.min(axis=0), rc.max(axis=0)], np.float32)  # [[r0, c0], [r1, c1]]
            )
    return out


def _with_slice(rc: np.ndarray, slice_index: int, ndim: int) -> np.ndarray:
    rc = np.asarray(rc, float).reshape(-1, 2)
    if ndim == 2:
        return rc
    return np.column_stack([np.full(len(rc), float(slice_index)), rc])


def rectangle_vertices(box_rc: np.ndarray, slice_index: int, ndim: int) -> np.ndarray:
    """The four corners of a [[r0, c0], [r1, c1]] box as napari rectangle vertices."""
    (r0, c0), (r1, c1) = np.asarray(box_rc, float)
    corners = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]])
    return _with_slice(corners, slice_index, ndim)


def replace_slice_prompts(
    points_layer, shapes_layer, slice_index: int, prompts: list[Prompt]
) -> None:
    """Show ``prompts`` as the only points and boxes of ``slice_index``.

    Prompts on other slices stay as they are.
    """
    ndim = points_layer.ndim
    keep = (
        ~on_slice(points_layer.data, slice_index) if len(points_layer.data) else np.zeros(0, bool)
    )
    old_data = np.asarray(points_layer.data, float)[keep]
    old_pos = positive_flags(points_layer)[keep]
    new_rc = [points_xy_to_rc(p.points_xy) for p in prompts if p.has_points]
    new_pos = [p.point_labels == POSITIVE for p in prompts if p.has_points]
    rc = np.concatenate(new_rc) if new_rc else np.zeros((0, 2), np.float32)
    pos = np.concatenate(new_pos) if new_pos else np.zeros(0, bool)
    data = np.concatenate([old_data.reshape(-1, ndim), _with_slice(rc, slice_index, ndim)])
    positive = np.concatenate([old_pos, pos]).astype(bool)
    defaults = points_layer.feature_defaults.copy()  # what the next click adds
    points_layer.data = data
    points_layer.features = pd.DataFrame({POSITIVE_FEATURE: positive})
    points_layer.feature_defaults = defaults
    points_layer.refresh_colors(update_color_mapping=False)

    remove = [
        i
        for i, verts in enumerate(shapes_layer.data)
        if on_slice(np.asarray(verts)[:1], slice_index)[0]
    ]
    if remove:
        shapes_layer.selected_data = set(remove)
        shapes_layer.remove_selected()
    boxes = [
        rectangle_vertices(box_xyxy_to_rc_corners(p.box_xyxy), slice_index, shapes_layer.ndim)
        for p in prompts
        if p.box_xyxy is not None
    ]
    if boxes:
        shapes_layer.add_rectangles(boxes, edge_color=BOX_COLOR, face_color="transparent")


def clear_slice_prompts(points_layer, shapes_layer, slice_index: int) -> None:
    """Remove every point and box of ``slice_index``."""
    replace_slice_prompts(points_layer, shapes_layer, slice_index, [])


# --------------------------------------------------------------------------- seeds


def prompted_slices(points_layer, shapes_layer, n_slices: int) -> list[int]:
    """Slices holding a point or a rectangle; PromptError for one outside the volume."""
    found: set[int] = set()
    ndim = 2
    if points_layer is not None and len(points_layer.data):
        data = np.asarray(points_layer.data, float)
        ndim = data.shape[1]
        found.update(int(z) for z in np.rint(data[:, 0]))
    if shapes_layer is not None and len(shapes_layer.data):
        for verts, kind in zip(shapes_layer.data, shapes_layer.shape_type, strict=True):
            verts = np.asarray(verts, float)
            if kind == "rectangle":
                ndim = verts.shape[1]
                found.add(int(np.rint(verts[0, 0])))
    if ndim == 2:
        return [0] if found else []
    outside = sorted(z for z in found if not 0 <= z < n_slices)
    if outside:
        raise PromptError(
            f"a prompt lies on slice {outside[0]}, outside the image (slices 0..{n_slices - 1}); "
            "delete it or move it onto the image"
        )
    return sorted(found)


def user_prompts(here: SlicePrompts, session, slice_index: int) -> list[Prompt]:
    """A slice's points and boxes as prompts, one lung each (not yet checked).

    Point groups without a box are told apart by the body's midline on that slice (a
    slice with more points than the limit stays one group, which the check refuses).
    """
    n_points = len(here.points_rc)
    needs_midline = 1 < n_points <= MAX_POINTS_PER_SLICE and not here.boxes_rc
    midline = session.midline_col(slice_index) if needs_midline else None
    if needs_midline and midline is None:  # an X-ray: the image's centre
        midline = (session.volume.shape[-1] - 1) / 2.0
    return here.to_prompts(session.accepts_points, midline)


def slice_prompts(points_layer, shapes_layer, session, slice_index: int) -> list[Prompt]:
    """The checked prompts of one slice, as the interactive path makes them."""
    here = read_slice_prompts(points_layer, shapes_layer, slice_index)
    prompts = user_prompts(here, session, slice_index)
    if not prompts:
        raise PromptError(BOX_ONLY_MESSAGE)
    return session.check_prompts(slice_index, prompts)


def seeds_from_layers(points_layer, shapes_layer, session) -> list:
    """One :class:`~napari_samlung.core.propagation.Seed` per prompted slice.

    Raises PromptError naming the slice when one is unusable.
    """
    from ..core.propagation import Seed  # imports torch: only when propagating

    seeds = []
    for z in prompted_slices(points_layer, shapes_layer, session.n_slices):
        try:
            seeds.append(Seed(z, slice_prompts(points_layer, shapes_layer, session, z)))
        except PromptError as exc:
            raise PromptError(f"slice {z}: {exc}") from None
    if not seeds:
        raise PromptError(
            "nothing to propagate: click points or draw a box on one or a few slices first"
        )
    return seeds


def activate_prompt_tool(viewer, points_layer, shapes_layer, accepts_points: bool) -> None:
    """Make the first click a useful prompt: the Points layer in add mode for a model
    that takes points, else the boxes layer with the rectangle tool."""
    if points_layer is None or shapes_layer is None:
        return
    if accepts_points:
        viewer.layers.selection.active = points_layer
        points_layer.mode = "add"
    else:
        viewer.layers.selection.active = shapes_layer
        shapes_layer.mode = "add_rectangle"
