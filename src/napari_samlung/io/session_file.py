"""A saved annotation session: one JSON file that is also a ``--propagate-from`` prompts file.

The file ``<image stem>_samlung_session.json`` sits in the image's folder, beside the
output labels ``<image stem>_lungs.nii.gz`` (``.png`` for a 2D image).  It holds::

    {"slices": [{"slice": 12,
                 "points_rc": [[120.5, 80.0]], "point_labels": [1],
                 "boxes_xyxy": [[40.0, 60.0, 200.0, 400.0]], "box_labels": [2]}],
     "session": {"format": "napari-samlung session", "version": 1,
                 "image": {"path": "/data/ct.nii.gz", "shape": [64, 128, 128]},
                 "model_id": "lite_medsam", "checkpoint": null, "device": "auto",
                 "window": {"preset": "lung", "level": -600.0, "width": 1500.0},
                 "strategy": "per-lung", "labels_file": "ct_lungs.nii.gz",
                 "edited_slices": [12]}}

``slices`` is exactly what :func:`~napari_samlung.io.tables.seeds_from_json` reads, so
``napari-samlung segment IMAGE --propagate-from SESSION.json`` propagates from the
user's prompts; it ignores the ``session`` object.  Points are ``(row, col)`` pixels,
labels 1 positive and 0 negative; boxes are ``(x0, y0, x1, y1)``, each labelled with the
lung it outlines (1 left, 2 right: the side of the body's midline its centre lies on,
:func:`box_sides`), as the widget names a box's mask.  Writing goes through
:func:`~napari_samlung.io.outputs.check_output`: never over an input file.

No Qt and no napari here: the widget's adapter is
:mod:`napari_samlung._napari.session_file`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.labels import LEFT_LUNG, RIGHT_LUNG
from ..core.prompts import NEGATIVE, POSITIVE
from ..errors import InputFileError, PromptError, ShapeMismatchError
from .atomic import atomic_write_text
from .names import DICOM_SUFFIXES, image_suffix, strip_suffix
from .outputs import check_output

#: The ``format`` of the session object, and the newest version this code reads.
SESSION_FORMAT = "napari-samlung session"
SESSION_VERSION = 1
#: The end of a session file's name, after the image's stem.
SESSION_SUFFIX = "_samlung_session.json"
#: The end of the labels file's name, after the image's stem (``.png`` for a 2D image).
LABELS_SUFFIX_3D = "_lungs.nii.gz"
LABELS_SUFFIX_2D = "_lungs.png"
_EXPECTED = '{"slices": [...], "session": {"format": "napari-samlung session", ...}}'


@dataclass
class SavedSlice:
    """The prompts drawn on one slice: points in ``(row, col)``, boxes in ``(x0, y0, x1, y1)``.

    ``box_labels`` name the lung each box outlines (1 left, 2 right, None: both lungs);
    left out (None), the boxes are written without labels.
    """

    slice_index: int
    points_rc: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    point_labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    boxes_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float64))
    box_labels: list[int | None] | None = None

    def __post_init__(self) -> None:
        self.slice_index = int(self.slice_index)
        self.points_rc = np.asarray(self.points_rc, np.float64).reshape(-1, 2)
        self.point_labels = np.asarray(self.point_labels, np.int64).reshape(-1)
        self.boxes_xyxy = np.asarray(self.boxes_xyxy, np.float64).reshape(-1, 4)
        if len(self.points_rc) != len(self.point_labels):
            raise PromptError(
                f"slice {self.slice_index}: {len(self.points_rc)} points but "
                f"{len(self.point_labels)} point labels; give one label per point"
            )
        if self.box_labels is not None:
            self.box_labels = [None if v is None else int(v) for v in self.box_labels]
            if len(self.box_labels) != len(self.boxes_xyxy):
                raise PromptError(
                    f"slice {self.slice_index}: {len(self.boxes_xyxy)} boxes but "
                    f"{len(self.box_labels)} box labels; give one label per box"
                )

    @property
    def empty(self) -> bool:
        """True without points or boxes."""
        return len(self.points_rc) == 0 and len(self.boxes_xyxy) == 0

    def to_json(self) -> dict:
        """The slice's entry of ``"slices"`` (the format ``seeds_from_json`` reads)."""
        entry: dict = {"slice": self.slice_index}
        if len(self.points_rc):
            entry["points_rc"] = _rounded(self.points_rc)
            entry["point_labels"] = [int(v) for v in self.point_labels]
        if len(self.boxes_xyxy):
            entry["boxes_xyxy"] = _rounded(self.boxes_xyxy)
            if self.box_labels is not None:
                entry["box_labels"] = list(self.box_labels)
        return entry


@dataclass
class SessionFile:
    """What a user needs to pick up an annotation where they left it.

    ``image_shape`` is the image layer's shape (``(slice, row, col)`` or ``(row, col)``);
    ``window_level``/``window_width`` are in HU (None for 8-bit images: no window);
    ``labels_file`` is the output labels' file name, in the session file's folder
    (None when there were no labels); ``edited_slices`` are the slices a volume run
    must leave alone (painted by the user, or labels the plugin did not write).
    """

    image_shape: tuple[int, ...]
    slices: list[SavedSlice] = field(default_factory=list)
    image_path: str | None = None
    model_id: str = "lite_medsam"
    checkpoint: str | None = None
    device: str = "auto"
    window_preset: str | None = None
    window_level: float | None = None
    window_width: float | None = None
    strategy: str | None = None
    labels_file: str | None = None
    edited_slices: list[int] = field(default_factory=list)
    version: int = SESSION_VERSION

    @property
    def n_slices(self) -> int:
        """Slices of the image (1 for a 2D image)."""
        return self.image_shape[0] if len(self.image_shape) == 3 else 1

    def labels_path(self, session_path: str | Path) -> Path | None:
        """The labels file, resolved against the session file's folder (None: no labels)."""
        if not self.labels_file:
            return None
        return Path(session_path).expanduser().parent / self.labels_file


# --------------------------------------------------------------------------- names


def image_stem_and_folder(image_path: str | Path) -> tuple[str, Path]:
    """``(stem, folder)`` naming the files of an image: ``ct.nii.gz`` -> ``("ct", its folder)``.

    A DICOM series (its folder, or one of its files) is named after its folder and its
    files go beside that folder, so the series folder holds DICOM files only.
    """
    path = Path(image_path).expanduser()
    if path.is_dir():
        return path.name, path.parent
    if path.suffix.lower() in DICOM_SUFFIXES or image_suffix(path) is None:
        return path.parent.name, path.parent.parent
    return strip_suffix(path.name), path.parent


def session_path_for(image_path: str | Path) -> Path:
    """``<image folder>/<image stem>_samlung_session.json``."""
    stem, folder = image_stem_and_folder(image_path)
    return folder / f"{stem}{SESSION_SUFFIX}"


def labels_path_for(session_path: str | Path, is_2d: bool) -> Path:
    """The labels file beside a session file: ``ct_samlung_session.json`` ->
    ``ct_lungs.nii.gz`` (``ct_lungs.png`` for a 2D image); ``other.json`` -> ``other_lungs...``."""
    path = Path(session_path).expanduser()
    name = path.name
    if name.endswith(SESSION_SUFFIX):
        base = name[: -len(SESSION_SUFFIX)]
    else:
        base = name[: -len(".json")] if name.lower().endswith(".json") else name
    return path.parent / f"{base}{LABELS_SUFFIX_2D if is_2d else LABELS_SUFFIX_3D}"


def box_sides(boxes_xyxy, midline_col: float) -> list[int]:
    """The lung each box outlines, by the side of ``midline_col`` its centre lies on.

    Radiological display puts the patient's left lung (1) right of the midline (larger
    columns) and the right lung (2) left of it.
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    centres = (boxes[:, 0] + boxes[:, 2]) / 2.0
    return [LEFT_LUNG if c > midline_col else RIGHT_LUNG for c in centres]


# --------------------------------------------------------------------------- JSON


def session_to_json(session: SessionFile) -> str:
    """The session as JSON text: a ``--propagate-from`` prompts file plus a ``session`` object."""
    window = None
    if session.window_level is not None and session.window_width is not None:
        window = {
            "preset": session.window_preset,
            "level": float(session.window_level),
            "width": float(session.window_width),
        }
    spec = {
        "slices": [s.to_json() for s in sorted(session.slices, key=lambda s: s.slice_index)],
        "session": {
            "format": SESSION_FORMAT,
            "version": int(session.version),
            "image": {
                "path": session.image_path,
                "shape": [int(n) for n in session.image_shape],
            },
            "model_id": session.model_id,
            "checkpoint": session.checkpoint,
            "device": session.device,
            "window": window,
            "strategy": session.strategy,
            "labels_file": session.labels_file,
            "edited_slices": sorted({int(z) for z in session.edited_slices}),
        },
    }
    return json.dumps(spec, indent=1) + "\n"


def write_session(
    path: str | Path,
    session: SessionFile,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> Path:
    """Write the session atomically; never over one of ``inputs`` (however spelt), nor over
    an existing file without ``overwrite`` (:func:`~napari_samlung.io.outputs.check_output`).
    Returns the path written."""
    text = session_to_json(session)
    return atomic_write_text(path, text, overwrite=overwrite, inputs=inputs)


def check_session_paths(
    session_path: str | Path,
    labels_path: str | Path | None,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> None:
    """Refuse, before anything is written, a session or labels file that is an input, a
    folder, in a missing folder, or (without ``overwrite``) an existing file."""
    check_output(session_path, overwrite=overwrite, inputs=inputs)
    if labels_path is not None:
        check_output(labels_path, overwrite=overwrite, inputs=inputs)


def read_session(path: str | Path, image_shape: tuple[int, ...] | None = None) -> SessionFile:
    """Read and check a session file; with ``image_shape``, refuse one of another image.

    Raises
    ------
    InputFileError
        A missing or unreadable file, not JSON, no ``session`` object (a plain prompts
        file), a newer version, or a malformed field.
    PromptError
        A malformed slice entry, or a slice outside the image.
    ShapeMismatchError
        The session belongs to an image of another shape.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputFileError(
            f"{path}: cannot read the session file ({exc.strerror or exc}); check the path"
        ) from None
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise InputFileError(
            f"{path}: not a session file (not JSON: {exc.msg} at line {exc.lineno}); "
            "choose a *_samlung_session.json saved by 'Save session'"
        ) from None
    meta = spec.get("session") if isinstance(spec, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != SESSION_FORMAT:
        raise InputFileError(
            f"{path}: not a session file (no 'session' object of format {SESSION_FORMAT!r}); "
            "a plain prompts file is read by 'segment --propagate-from', a session by "
            "'Load session'"
        )
    try:
        session = _session_from(meta, path)
    except InputFileError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InputFileError(
            f"{path}: the session object is malformed ({type(exc).__name__}: {exc}); "
            f"expected {_EXPECTED}; save the session again"
        ) from None
    if image_shape is not None and tuple(image_shape) != session.image_shape:
        raise ShapeMismatchError(
            f"{path}: this session is for an image of shape {session.image_shape} but the "
            f"image open has shape {tuple(image_shape)}; open the image "
            f"{session.image_path or 'it was saved with'} and load the session again"
        )
    session.slices = _slices_from(spec.get("slices", []), session.n_slices, path)
    return session


def _session_from(meta: dict, path: Path) -> SessionFile:
    version = int(meta.get("version", 0))
    if not 1 <= version <= SESSION_VERSION:
        raise InputFileError(
            f"{path}: session version {version} is not one this napari-samlung reads "
            f"(1..{SESSION_VERSION}); update napari-samlung"
        )
    image = meta.get("image") or {}
    shape = tuple(int(n) for n in image["shape"])
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputFileError(
            f"{path}: the image shape {shape} is not a 2D image or a 3D volume; "
            "save the session again"
        )
    window = meta.get("window") or {}
    level, width = window.get("level"), window.get("width")
    if (level is None) != (width is None) or not all(
        v is None or math.isfinite(float(v)) for v in (level, width)
    ):
        raise InputFileError(
            f"{path}: the window needs a finite level and width (HU), got {window}; "
            "save the session again"
        )
    return SessionFile(
        image_shape=shape,
        image_path=_text(image.get("path")),
        model_id=str(meta.get("model_id") or "lite_medsam"),
        checkpoint=_text(meta.get("checkpoint")),
        device=str(meta.get("device") or "auto"),
        window_preset=_text(window.get("preset")),
        window_level=None if level is None else float(level),
        window_width=None if width is None else float(width),
        strategy=_text(meta.get("strategy")),
        labels_file=_text(meta.get("labels_file")),
        edited_slices=sorted({int(z) for z in meta.get("edited_slices") or []}),
        version=version,
    )


def _slices_from(entries, n_slices: int, path: Path) -> list[SavedSlice]:
    if not isinstance(entries, list):
        raise PromptError(f"{path}: 'slices' must be a list; expected {_EXPECTED}")
    slices: dict[int, SavedSlice] = {}
    for i, entry in enumerate(entries):
        try:
            saved = _slice_from(entry)
        except PromptError as exc:
            raise PromptError(f"{path}: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise PromptError(
                f"{path}: slice entry {i} is malformed ({exc}); expected "
                '{"slice": K, "points_rc": [[r, c]], "point_labels": [1], '
                '"boxes_xyxy": [[x0, y0, x1, y1]]}'
            ) from None
        if not 0 <= saved.slice_index < n_slices:
            raise PromptError(
                f"{path}: slice {saved.slice_index} is outside the image "
                f"(slices 0..{n_slices - 1}); save the session again from this image"
            )
        if saved.slice_index in slices:
            raise PromptError(
                f"{path}: slice {saved.slice_index} appears twice; keep one entry per slice"
            )
        slices[saved.slice_index] = saved
    return [slices[z] for z in sorted(slices)]


def _slice_from(entry: dict) -> SavedSlice:
    points = entry.get("points_rc", [])
    labels = entry.get("point_labels", [POSITIVE] * len(points))
    box_labels = entry.get("box_labels")
    saved = SavedSlice(int(entry["slice"]), points, labels, entry.get("boxes_xyxy", []), box_labels)
    odd = sorted({v for v in saved.box_labels or []} - {None, LEFT_LUNG, RIGHT_LUNG})
    if odd:
        raise PromptError(
            f"slice {saved.slice_index}: box label {odd[0]} is none of 1 (left lung), "
            "2 (right lung) or null (both lungs)"
        )
    bad = sorted(set(saved.point_labels.tolist()) - {POSITIVE, NEGATIVE})
    if bad:
        raise PromptError(
            f"slice {saved.slice_index}: point label {bad[0]} is neither 1 (positive) "
            "nor 0 (negative)"
        )
    if not (np.isfinite(saved.points_rc).all() and np.isfinite(saved.boxes_xyxy).all()):
        raise PromptError(f"slice {saved.slice_index}: a point or box is not a finite number")
    return saved


def _text(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _rounded(array: np.ndarray) -> list:
    """Coordinates to 1/100 pixel (what a click can mean), as JSON lists."""
    return [[round(float(v), 2) for v in row] for row in np.asarray(array)]
