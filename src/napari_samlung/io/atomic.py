"""Atomic file writes: a temporary file beside the target, then a rename.

A crash never leaves a half-written file under the final name, and an
existing file is only replaced when the caller says so.  This is the one
place the project writes files; whether a path may be written at all (never
an input, whatever the flags) is decided by
:func:`napari_samlung.io.outputs.check_output`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from .names import image_suffix
from .outputs import FileIdentity, PathLike, check_output, remove_quietly, write_error

Inputs = Iterable[PathLike | FileIdentity | None]
#: Longest suffix kept on a temporary name (``.nii.gz`` and friends are far shorter).
_MAX_TMP_SUFFIX = 16


def check_writable(path: str | Path, overwrite: bool, inputs: Inputs = ()) -> Path:
    """Refuse an input, a folder, a missing parent folder, or an existing file without
    ``overwrite`` (:func:`~napari_samlung.io.outputs.check_output`)."""
    return check_output(path, overwrite=overwrite, inputs=inputs)


def temporary_name(path: Path) -> Path:
    """A short hidden temporary name beside ``path`` that keeps its suffix.

    Bounded in length (about 40 characters), whatever the length of ``path``'s
    name, so a long but valid output name never fails on its temporary.
    """
    suffix = image_suffix(path) or path.suffix  # keep it: nibabel and Pillow go by the suffix
    if len(suffix) > _MAX_TMP_SUFFIX or not suffix.isascii():
        suffix = ""
    return path.parent / f".samlung-{uuid.uuid4().hex[:12]}.tmp{suffix}"


def atomic_write(
    path: str | Path,
    write: Callable[[Path], object],
    overwrite: bool = False,
    inputs: Inputs = (),
) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then move it into place.

    ``path`` is first checked by :func:`~napari_samlung.io.outputs.check_output`
    (never one of ``inputs`` or of the run's registered inputs).  An
    :class:`OSError` becomes one :class:`~napari_samlung.errors.InputFileError`
    line; the temporary file is always removed, and its removal never raises.
    """
    path = check_output(path, overwrite=overwrite, inputs=inputs)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        remove_quietly(tmp)
    return path


def atomic_write_text(
    path: str | Path, text: str, overwrite: bool = False, inputs: Inputs = ()
) -> Path:
    """Write text (UTF-8) atomically."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"), overwrite, inputs)
