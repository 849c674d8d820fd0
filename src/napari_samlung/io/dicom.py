"""Reading a DICOM CT series (a folder of single-frame slices) into display orientation.

The slices are sorted by their position along the slice normal (from
ImagePositionPatient and ImageOrientationPatient, never by file name or
InstanceNumber), RescaleSlope/RescaleIntercept give Hounsfield units, and the
voxel grid becomes the RAS affine a NIfTI of the same scan would have.  The
volume then goes through :func:`~napari_samlung.io.geometry.to_display`, like
a NIfTI, so it lands in the same radiological display.

A folder with several series gives its largest CT series (with a warning
naming it; all series are listed in ``meta["dicom_series"]``); a file gives
the series it belongs to, among the files of its folder.  pydicom is an
optional dependency (``napari-samlung[dicom]``), imported only here, when a
DICOM file is read.

:attr:`ImageData.meta` keys for DICOM sources: ``dicom_files`` (the slices'
paths, in the stored slice order), ``series_uid``, ``dicom_series`` (every
series found: uid, modality, description, number of slices), and, as for
NIfTI, ``source_affine``, ``source_shape`` (columns, rows, slices),
``source_ornt`` and ``source_axcodes``, which map display arrays back onto
the slices (:func:`source_frames`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from nibabel import orientations as nio

from ..errors import InputFileError
from .checks import check_size, error_reason
from .dicom_pixels import series_hu
from .geometry import from_display, to_display
from .names import DICOM_SUFFIXES

#: What to install for DICOM input and DICOM SEG output.
DICOM_INSTALL = "pip install 'napari-samlung[dicom]'"
#: Most files a DICOM folder may hold (the headers of all of them are read).
MAX_DICOM_FILES = 20000
#: Files and folder levels looked at to decide whether a folder holds DICOM.
_PROBE_FILES = 200
_PROBE_DEPTH = 3
#: Relative tolerance on orientation cosines, pixel spacing and slice steps.
_TOL = 1e-3
#: Slice steps over this many times the usual step count as missing slices.
_GAP_FACTOR = 1.5
_HEADER_TAGS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
)


def import_pydicom():
    """pydicom, or a one-line :class:`InputFileError` naming the pip command."""
    try:
        import pydicom
    except ImportError:
        raise InputFileError(
            f"reading DICOM needs pydicom, which is not installed; {DICOM_INSTALL}"
        ) from None
    return pydicom


def is_dicom_file(path: str | Path) -> bool:
    """True for a ``.dcm`` file, or a file carrying the ``DICM`` marker at byte 128."""
    path = Path(path)
    if path.name.startswith(".") or not path.is_file():
        return False
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom_folder(path: str | Path) -> bool:
    """True when a folder (or a sub-folder a few levels down) holds a DICOM file."""
    path = Path(path)
    if not path.is_dir():
        return False
    return any(True for _ in _dicom_files(path, limit=_PROBE_FILES, depth=_PROBE_DEPTH, first=True))


def read_dicom(path: Path) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, dict]:
    """Read a DICOM CT series as a ``(slice, row, col)`` volume in radiological display.

    Parameters
    ----------
    path : Path
        A folder (searched recursively; its largest CT series is read) or one
        DICOM file (the series it belongs to, from the files of its folder).

    Returns
    -------
    data : ndarray, shape (slice, row, col)
        Hounsfield units: int16 when slope and intercept keep whole numbers that fit,
        else float32.
    spacing_zyx_mm : tuple of 3 floats
    affine : ndarray, shape (4, 4)
        Index ``(z, y, x)`` -> RAS world millimetres.
    meta : dict
        See the module docstring.

    Raises
    ------
    InputFileError
        One line, for an unreadable folder or file, no DICOM image, mixed
        orientations or sizes, slices at the same position, or pixel data
        that cannot be decoded (naming the package to install).
    """
    pydicom = import_pydicom()
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    files = list(_dicom_files(folder, limit=MAX_DICOM_FILES + 1))
    if len(files) > MAX_DICOM_FILES:
        raise InputFileError(
            f"{folder}: more than {MAX_DICOM_FILES} DICOM files; open the folder of one series"
        )
    headers = _read_headers(pydicom, files, path if path.is_file() else None)
    series = _group_series(headers)
    if path.is_file():
        uid = str(headers[path][1].SeriesInstanceUID) if path in headers else ""
        if not any(path == f for f, _ in series.get(uid, [])):
            raise InputFileError(
                f"{path}: not a CT slice (no ImagePositionPatient, ImageOrientationPatient or "
                "PixelSpacing: a SEG, a report or a projection X-ray?); open a CT slice or its "
                "folder"
            )
    elif not series:
        raise InputFileError(
            f"{path}: no DICOM image slices (ImagePositionPatient, ImageOrientationPatient, "
            "PixelSpacing) found; open a folder of CT slices"
        )
    else:
        uid = _pick_series(folder, series)
    slices = series[uid]
    _warn_left_out(
        [
            (f, "no ImagePositionPatient, ImageOrientationPatient or PixelSpacing")
            for f, ds in headers.values()
            if str(ds.SeriesInstanceUID) == uid and not any(f == g for g, _ in slices)
        ]
    )
    normal, positions, order = _sort_slices(folder, slices)
    slices = [slices[i] for i in order]
    positions = positions[order]
    step = _slice_step(folder, slices, positions, normal)
    first = slices[0][1]
    rows, cols = int(first.Rows), int(first.Columns)
    check_size(folder, (len(slices), rows, cols))
    stored = series_hu(pydicom, slices)  # (slice, row, col)
    source_affine = _lps_to_ras(first, step)
    voxels = np.ascontiguousarray(stored.transpose(2, 1, 0))  # (col, row, slice): affine's i, j, k
    oriented, affine, spacing, source_ornt = to_display(voxels, source_affine)
    meta = {
        "dicom_files": [str(f) for f, _ in slices],
        "series_uid": str(uid),
        "dicom_series": [_describe(u, s) for u, s in series.items()],
        "source_affine": source_affine,
        "source_shape": voxels.shape,
        "source_ornt": source_ornt,
        "source_axcodes": nio.ornt2axcodes(source_ornt),
    }
    return oriented, spacing, affine, meta


def source_frames(labels: np.ndarray, meta: dict) -> np.ndarray:
    """Display-oriented ``(slice, row, col)`` labels as ``(frame, row, col)`` of the source slices.

    Frame ``k`` lies on ``meta["dicom_files"][k]`` (the inverse of the reader's
    re-orientation, by permutation/flip only).
    """
    stored = from_display(np.asarray(labels), meta["source_ornt"])  # (col, row, slice)
    if stored.shape != tuple(meta["source_shape"]):
        raise InputFileError(
            f"labels of shape {np.shape(labels)} do not map onto the DICOM series of "
            f"{len(meta['dicom_files'])} slices; use labels of that image"
        )
    return np.ascontiguousarray(stored.transpose(2, 1, 0))


# --------------------------------------------------------------------------- helpers


def _dicom_files(
    folder: Path, limit: int, depth: int | None = None, first: bool = False
) -> Iterator[Path]:
    """DICOM files under ``folder`` (sorted walk, hidden entries skipped)."""
    seen = 0
    base = len(folder.parts)
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if depth is not None and len(Path(root).parts) - base >= depth:
            dirs[:] = []
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            seen += 1
            candidate = Path(root) / name
            if is_dicom_file(candidate):
                yield candidate
                limit -= 1
                if first or limit <= 0:
                    return
            if first and seen >= limit:
                return


def _read_headers(pydicom, files: list[Path], wanted: Path | None) -> dict:
    """``{path: (path, header)}`` of the readable files; a named file must be readable.

    Unreadable files are left out with one warning (a missing slice then shows
    as a gap).
    """
    headers, broken = {}, []
    for f in files:
        try:
            with warnings.catch_warnings():  # pydicom's notes on files we may not even use
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except Exception as exc:  # any unreadable file: not part of a series we can read
            if wanted is not None and f == wanted:
                raise InputFileError(
                    f"{f}: not a readable DICOM file ({error_reason(exc)}); re-export it"
                ) from None
            broken.append((f, error_reason(exc)))
            continue
        if ds.get("SeriesInstanceUID") is None:  # every DICOM instance has one: cut short
            if wanted is not None and f == wanted:
                raise InputFileError(
                    f"{f}: not a readable DICOM image (no SeriesInstanceUID: truncated?); "
                    "re-export it"
                )
            broken.append((f, "no SeriesInstanceUID: truncated?"))
            continue
        headers[f] = (f, ds)
    _warn_left_out(broken)
    return headers


def _warn_left_out(broken: list[tuple[Path, str]]) -> None:
    if broken:
        f, reason = broken[0]
        warnings.warn(
            f"{len(broken)} DICOM file(s) cannot be read and are left out ({f}: {reason})",
            UserWarning,
            stacklevel=5,
        )


def _group_series(headers: dict) -> dict:
    """Image slices grouped by SeriesInstanceUID, largest series first."""
    series: dict[str, list] = {}
    for item in headers.values():
        ds = item[1]
        if not all(ds.get(tag) is not None for tag in _HEADER_TAGS[:1] + _HEADER_TAGS[4:]):
            continue  # a SEG, a structured report, a projection radiograph...
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            continue
        series.setdefault(str(ds.SeriesInstanceUID), []).append(item)
    return dict(sorted(series.items(), key=lambda kv: -len(kv[1])))


def _describe(uid: str, slices: list) -> dict:
    ds = slices[0][1]
    return {
        "uid": uid,
        "modality": str(ds.get("Modality", "")),
        "description": str(ds.get("SeriesDescription", "") or ""),
        "number": None if ds.get("SeriesNumber") is None else int(ds.SeriesNumber),
        "slices": len(slices),
    }


def _pick_series(folder: Path, series: dict) -> str:
    """The largest CT series (else the largest series), with a warning when there is a choice."""
    ct = [u for u, s in series.items() if str(s[0][1].get("Modality", "")).upper() == "CT"]
    uid = ct[0] if ct else next(iter(series))
    chosen = _describe(uid, series[uid])
    if not ct:
        warnings.warn(
            f"{folder}: no CT series; reading the {chosen['modality'] or 'unknown'} series "
            f"{uid} as a CT volume",
            UserWarning,
            stacklevel=4,
        )
    if len(series) > 1:
        named = f" ({chosen['description']})" if chosen["description"] else ""
        warnings.warn(
            f"{folder}: {len(series)} series found; reading the largest CT series {uid}{named}, "
            f"{chosen['slices']} slices; open a file of another series to read that one",
            UserWarning,
            stacklevel=4,
        )
    return uid


def _floats(ds, tag: str, n: int, where: Path) -> np.ndarray:
    try:
        values = np.array([float(v) for v in ds.get(tag)], float)
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise InputFileError(f"{where}: invalid {tag} {ds.get(tag)!r}; fix or re-export the series")
    return values


def _sort_slices(folder: Path, slices: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slice normal, each slice's position along it, and the sorting order."""
    first_path, first = slices[0]
    iop = _floats(first, "ImageOrientationPatient", 6, first_path)
    spacing = _floats(first, "PixelSpacing", 2, first_path)
    size = (int(first.Rows), int(first.Columns))
    for f, ds in slices[1:]:
        other = _floats(ds, "ImageOrientationPatient", 6, f)
        if not np.allclose(other, iop, atol=_TOL):
            raise InputFileError(
                f"{folder}: the series mixes slice orientations ({first_path.name}: "
                f"{np.round(iop, 4).tolist()}, {f.name}: {np.round(other, 4).tolist()}); "
                "export each orientation as its own series"
            )
        other_size = (int(ds.Rows), int(ds.Columns))
        other_spacing = _floats(ds, "PixelSpacing", 2, f)
        if other_size != size or not np.allclose(other_spacing, spacing, rtol=_TOL):
            raise InputFileError(
                f"{folder}: the series mixes slice sizes ({first_path.name}: {size} at "
                f"{spacing.tolist()} mm, {f.name}: {other_size} at {other_spacing.tolist()} mm); "
                "export slices of one size as one series"
            )
    normal = np.cross(iop[:3], iop[3:])
    if np.linalg.norm(normal) < 0.5:
        raise InputFileError(
            f"{first_path}: ImageOrientationPatient {iop.tolist()} has parallel row and column "
            "directions; fix or re-export the series"
        )
    normal /= np.linalg.norm(normal)
    positions = np.array([_floats(ds, "ImagePositionPatient", 3, f) @ normal for f, ds in slices])
    order = np.argsort(positions, kind="stable")
    sorted_pos = positions[order]
    same = np.flatnonzero(np.diff(sorted_pos) < 1e-3)
    if same.size:
        a, b = slices[order[same[0]]][0], slices[order[same[0] + 1]][0]
        raise InputFileError(
            f"{folder}: {same.size + 1} slices share a position ({a.name} and {b.name} at "
            f"{sorted_pos[same[0]]:.2f} mm); the series holds several acquisitions or "
            "duplicates: keep one file per position"
        )
    return normal, positions, order


def _slice_step(
    folder: Path, slices: list, positions: np.ndarray, normal: np.ndarray
) -> np.ndarray:
    """The world vector from one slice to the next (LPS mm); warns on missing slices."""
    if len(slices) == 1:
        ds = slices[0][1]
        thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
        return normal * abs(float(thickness))
    ipp = np.array([_floats(ds, "ImagePositionPatient", 3, f) for f, ds in slices])
    steps = np.diff(ipp, axis=0)
    step = np.median(steps, axis=0)
    distances = np.diff(positions)
    usual = float(step @ normal)
    gaps = np.flatnonzero(distances > _GAP_FACTOR * usual)
    if gaps.size:
        k = int(gaps[0])
        missing = int(round(distances[k] / usual)) - 1
        more = f" and {gaps.size - 1} more gaps" if gaps.size > 1 else ""
        warnings.warn(
            f"{folder}: missing slices: {distances[k]:.2f} mm between slices {k} and {k + 1} "
            f"(positions {positions[k]:.2f} and {positions[k + 1]:.2f} mm, about {missing} "
            f"missing){more}; the volume is shown at a {usual:.2f} mm step, so distances and "
            "volumes across the gap are wrong",
            UserWarning,
            stacklevel=4,
        )
    elif not np.allclose(distances, usual, rtol=0.05, atol=0.01):
        warnings.warn(
            f"{folder}: uneven slice spacing ({distances.min():.3f} to {distances.max():.3f} "
            f"mm); using {usual:.3f} mm",
            UserWarning,
            stacklevel=4,
        )
    return step


def _lps_to_ras(ds, step: np.ndarray) -> np.ndarray:
    """Index (column, row, slice) -> RAS mm: what a NIfTI of this series would hold."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)  # between rows, between columns
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * col_mm  # along a row: the column index grows
    affine[:3, 1] = iop[3:] * row_mm
    affine[:3, 2] = step
    affine[:3, 3] = [float(v) for v in ds.ImagePositionPatient]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
