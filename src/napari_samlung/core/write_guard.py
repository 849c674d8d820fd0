"""The hook through which the core's own writes (the embedding cache) obey the I/O layer's
one rule, that no output is ever an input (:func:`napari_samlung.io.outputs.check_output`).

The core must not import the I/O layer; :mod:`napari_samlung.io.outputs` installs its
rule here when it is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

_GUARD: Callable[[Path], None] | None = None


def set_guard(guard: Callable[[Path], None] | None) -> None:
    """Install ``guard(path)``, which raises a SamlungError for a path that must not be written."""
    global _GUARD
    _GUARD = guard


def check(path: Path) -> None:
    """Raise (a SamlungError) if ``path`` must not be written or deleted; else nothing."""
    if _GUARD is not None:
        _GUARD(Path(path))
