"""The widget's exports: one way to choose a file, refuse an input, ask before replacing, write.

- :func:`open_files`: every file the layers of the open viewers were read from;
  no export ever writes over one of them (nor over any input, however spelt:
  :func:`napari_samlung.io.outputs.check_output` decides);
- :func:`choose_output`: the save dialog (or a given path), the suffix, the
  refusal of an input or of a place that cannot be written, the question
  before replacing a file;
- :func:`write_output`: run the write and turn any failure into one notification;
- :func:`export_scores`: the per-slice scores as CSV.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from napari.utils.notifications import show_error, show_info, show_warning

from ..errors import SamlungError
from ..io.outputs import check_output, protecting, write_error
from .layers import samlung_meta
from .session import LungSession


def layer_files(layer) -> list[Path]:
    """The files a layer was read from: napari's source, our reader's record, a DICOM series."""
    found: list[Path] = []
    source = getattr(getattr(layer, "source", None), "path", None)
    if source:
        found.append(Path(source))
    entry = samlung_meta(getattr(layer, "metadata", None)) or {}
    if entry.get("source_path"):
        found.append(Path(entry["source_path"]))
    meta = entry.get("meta")
    if isinstance(meta, dict):
        found += [Path(name) for name in meta.get("dicom_files") or ()]
    return found


def open_files(viewers: Iterable | None = None) -> list[Path]:
    """Every file the layers of ``viewers`` (default: every open napari viewer) came from."""
    if viewers is None:
        from napari import Viewer

        viewers = list(getattr(Viewer, "_instances", ()) or ())
    found: list[Path] = []
    for viewer in viewers:
        for layer in getattr(viewer, "layers", ()):
            found += layer_files(layer)
    return found


def choose_output(
    parent,
    *,
    title: str,
    default_name: str,
    file_filter: str,
    suffix: str,
    path: str | Path | None = None,
    inputs: Iterable[str | Path] | None = None,
) -> Path | None:
    """The file an export may write, or None (cancelled, refused, or not to be replaced).

    Without ``path`` a save dialog asks for one; ``suffix`` is added when
    missing.  An input (``inputs``, default: :func:`open_files`) is refused
    with a notification, whatever the user answers; so are a folder, a missing
    folder, a symlink loop and a name too long.  An existing file is replaced
    only when the user says yes.
    """
    from qtpy.QtWidgets import QFileDialog, QMessageBox

    if path is None:
        path, _ = QFileDialog.getSaveFileName(
            parent, title, default_name, file_filter, options=QFileDialog.DontConfirmOverwrite
        )
        if not path:
            return None
    path = Path(path)
    if path.suffix.lower() != suffix:
        path = path.with_name(path.name + suffix)
    inputs = open_files() if inputs is None else list(inputs)
    try:
        path = check_output(path, overwrite=True, inputs=inputs)
    except SamlungError as exc:
        show_error(str(exc))
        return None
    question = f"{path} exists. Replace it?"
    if path.exists() and QMessageBox.question(parent, "napari-samlung", question) != (
        QMessageBox.Yes
    ):
        return None
    return path


def write_output(path: Path, write: Callable[[Path], object], done: str) -> Path | None:
    """Run ``write(path)``; show ``done`` and return ``path``, or show the one-line error."""
    try:
        write(path)
    except SamlungError as exc:
        show_error(str(exc))
        return None
    except OSError as exc:
        show_error(str(write_error(path, exc)))
        return None
    show_info(done)
    return path


def export_scores(
    parent,
    session: LungSession,
    path: str | Path | None = None,
    inputs: Iterable[str | Path] | None = None,
) -> Path | None:
    """Write the per-slice scores as CSV; asks for a file and before overwriting.

    Never over an input (``inputs``, default: the files open in napari).
    Returns the file written, or None (nothing scored, refused, or the user said no).
    """
    if not session.scores:
        show_warning("no scored slices yet: segment with a ground-truth layer chosen")
        return None
    inputs = open_files() if inputs is None else list(inputs)
    target = choose_output(
        parent,
        title="Export per-slice metrics",
        default_name=f"{session.case or 'scores'}_per_slice.csv",
        file_filter="CSV (*.csv)",
        suffix=".csv",
        path=path,
        inputs=inputs,
    )
    if target is None:
        return None

    def write(p: Path) -> None:
        with protecting(inputs):  # the session writes through write_scores_csv
            session.export_scores(p)

    done = f"wrote the scores of {len(session.scores)} slices to {target}"
    return write_output(target, write, done)
