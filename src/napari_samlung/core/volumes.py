"""Lung volumes from labels and voxel spacing: per lung and in total, with HU statistics.

For a ``(slice, row, col)`` volume each lung gets its volume in millilitres
(voxels x the product of the spacing, mm^3 / 1000), the range of slices it
spans, and, given the CT in Hounsfield units, the mean and standard deviation
of the HU inside it.  With a ground truth, each volume gets the relative
volume error ``(predicted - true) / true`` beside it.  A 2D image (an X-ray)
gets areas in cm^2 instead of volumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .labels import LEFT_LUNG, RIGHT_LUNG

#: Label value -> the name used in reports and JSON keys.
LUNG_NAMES = {LEFT_LUNG: "left", RIGHT_LUNG: "right"}


@dataclass
class LungMeasure:
    """One lung (or both, ``name == "total"``).

    ``size`` is in ``unit`` (``"mL"`` for volumes, ``"cm2"`` for 2D areas);
    ``first_slice``/``last_slice`` are None for an empty lung or a 2D image;
    ``hu_mean``/``hu_std`` are NaN without a CT in HU; ``true_size`` and
    ``relative_error`` are NaN without a ground truth (or when it is empty).
    """

    name: str
    voxels: int
    size: float
    unit: str
    first_slice: int | None = None
    last_slice: int | None = None
    hu_mean: float = math.nan
    hu_std: float = math.nan
    true_size: float = math.nan
    relative_error: float = math.nan


@dataclass
class LungVolumes:
    """The measures of the left lung, the right lung and both, and the voxel size used."""

    lungs: list[LungMeasure]
    spacing_mm: tuple[float, ...]

    def get(self, name: str) -> LungMeasure:
        """The measure named ``left``, ``right`` or ``total``."""
        return next(m for m in self.lungs if m.name == name)

    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN becomes None): spacing, unit and one entry per lung."""
        unit = self.lungs[0].unit if self.lungs else "mL"
        out: dict = {"spacing_mm": list(self.spacing_mm), "unit": unit}
        for m in self.lungs:
            entry = {k: _json(v) for k, v in asdict(m).items() if k not in ("name", "unit")}
            out[m.name] = entry
        return out

    def summary_line(self) -> str:
        """One line, e.g. ``volume mL: left 1520.3  right 1702.8  total 3223.1``."""
        unit = self.lungs[0].unit if self.lungs else "mL"
        kind = "volume" if unit == "mL" else "area"
        parts = [f"{m.name} {m.size:.1f}" for m in self.lungs]
        line = f"{kind} {unit}: " + "  ".join(parts)
        errors = [m for m in self.lungs if not math.isnan(m.relative_error)]
        if errors:
            line += (
                "  (error vs truth: "
                + "  ".join(f"{m.name} {100 * m.relative_error:+.1f} %" for m in errors)
                + ")"
            )
        return line


def voxel_size(spacing_mm: Sequence[float], ndim: int) -> tuple[float, str]:
    """The size of one voxel: (mL, ``"mL"``) for 3D, (cm^2, ``"cm2"``) for 2D."""
    spacing = [float(s) for s in spacing_mm][-ndim:]
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"invalid voxel spacing {tuple(spacing_mm)} for a {ndim}D image")
    product = float(np.prod(spacing))
    return (product / 1000.0, "mL") if ndim == 3 else (product / 100.0, "cm2")


def lung_volumes(
    labels: np.ndarray,
    spacing_mm: Sequence[float],
    image: np.ndarray | None = None,
    truth: np.ndarray | None = None,
) -> LungVolumes:
    """Measure each lung of ``labels`` {0, 1 left, 2 right}.

    Parameters
    ----------
    labels : ndarray
        ``(slice, row, col)`` or ``(row, col)`` lung labels.
    spacing_mm : sequence of float
        Voxel spacing along the axes of ``labels`` (the last ``labels.ndim`` are used).
    image : ndarray, optional
        The CT in Hounsfield units, shaped like ``labels``: HU mean and std per lung.
    truth : ndarray, optional
        Ground-truth labels shaped like ``labels``: true size and relative error.

    Returns
    -------
    LungVolumes
        Left, right and total, in that order.
    """
    labels = np.asarray(labels)
    unit_size, unit = voxel_size(spacing_mm, labels.ndim)
    for name, other in (("image", image), ("truth", truth)):
        if other is not None and np.shape(other) != labels.shape:
            raise ValueError(f"{name} shape {np.shape(other)} != labels shape {labels.shape}")
    counts = {name: int(np.count_nonzero(labels == value)) for value, name in LUNG_NAMES.items()}
    counts["total"] = counts["left"] + counts["right"]
    true_counts = {}
    if truth is not None:
        truth = np.asarray(truth)
        true_counts = {n: int(np.count_nonzero(truth == v)) for v, n in LUNG_NAMES.items()}
        true_counts["total"] = true_counts["left"] + true_counts["right"]
    lung_slices = _lung_slices(labels)
    measures = []
    for name, count in counts.items():
        m = LungMeasure(name, count, count * unit_size, unit)
        values = _values(labels, name)
        if labels.ndim == 3 and count:
            m.first_slice, m.last_slice = _slice_range(labels, values, lung_slices)
        if image is not None and count:
            inside = np.asarray(image)[np.isin(labels, values)].astype(np.float64)
            m.hu_mean, m.hu_std = float(inside.mean()), float(inside.std())
        if true_counts:
            m.true_size = true_counts[name] * unit_size
            if true_counts[name]:
                m.relative_error = (count - true_counts[name]) / true_counts[name]
        measures.append(m)
    return LungVolumes(measures, tuple(float(s) for s in spacing_mm[-labels.ndim :]))


def _values(labels: np.ndarray, name: str) -> tuple[int, ...]:
    """The label values of one lung, or of both for ``total``."""
    if name == "total":
        return tuple(LUNG_NAMES)
    return tuple(v for v, n in LUNG_NAMES.items() if n == name)


def _lung_slices(labels: np.ndarray) -> np.ndarray:
    """Indices of the slices with any label (one cheap pass; empty for 2D)."""
    if labels.ndim != 3 or not labels.size:
        return np.array([], int)
    return np.flatnonzero(labels.reshape(labels.shape[0], -1).max(axis=1) > 0)


def _slice_range(labels: np.ndarray, values: tuple[int, ...], slices: np.ndarray):
    """First and last slice holding one of ``values``, searched from both ends."""
    first = next((int(z) for z in slices if np.isin(labels[z], values).any()), None)
    last = next((int(z) for z in slices[::-1] if np.isin(labels[z], values).any()), None)
    return first, last


def _json(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
