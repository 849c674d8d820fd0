"""Export of the per-slice scores: a save dialog, a question before replacing a file."""

from __future__ import annotations

from pathlib import Path

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QMessageBox

from .session import LungSession


def export_scores(parent, session: LungSession, path: str | Path | None = None) -> Path | None:
    """Write the per-slice scores as CSV; asks for a file and before overwriting.

    Returns the file written, or None (nothing scored, or the user said no).
    """
    if not session.scores:
        show_warning("no scored slices yet: segment with a ground-truth layer chosen")
        return None
    if path is None:
        path, _ = QFileDialog.getSaveFileName(
            parent,
            "Export per-slice metrics",
            f"{session.case or 'scores'}_per_slice.csv",
            "CSV (*.csv)",
            options=QFileDialog.DontConfirmOverwrite,
        )
        if not path:
            return None
    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")
    question = f"{path} exists. Replace it?"
    if path.exists() and QMessageBox.question(parent, "napari-samlung", question) != (
        QMessageBox.Yes
    ):
        return None
    try:
        session.export_scores(path)
    except OSError as exc:
        show_error(f"cannot write {path}: {exc.strerror or exc}; choose another folder")
        return None
    show_info(f"wrote the scores of {len(session.scores)} slices to {path}")
    return path
