"""Atomic file writes: a temporary file beside the target, then a rename.

A crash never leaves a half-written file under the final name, and an
existing file is only replaced when the caller says so.  This is the one
place the project writes files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from ..errors import InputFileError
from .names import image_suffix


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse a folder, a missing parent folder, or an existing file without ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{path} is a folder; choose a file name")
    if path.exists() and not overwrite:
        raise InputFileError(f"{path} exists; pass --overwrite (or choose another name)")
    if not path.parent.is_dir():
        raise InputFileError(f"{path}: folder {path.parent} does not exist; create it first")
    return path


def atomic_write(
    path: str | Path, write: Callable[[Path], object], overwrite: bool = False
) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then move it into place."""
    path = check_writable(path, overwrite)
    suffix = image_suffix(path) or path.suffix  # keep it: nibabel and Pillow go by the suffix
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputFileError(
            f"{path}: cannot write ({exc.strerror or exc}); check the folder is writable "
            "and has free space"
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda p: p.write_text(text), overwrite)
