"""What the long runs do in their worker thread (generator jobs for
:class:`~napari_samlung._napari.workers.Workers`); :mod:`.runs` shows their
results on the main thread.

- :func:`volume_job`: the slices with lung in the ground truth, prompted from it;
- :func:`auto_job`: the candidate lungs from the CT's air (found once per image),
  then every slice with candidate lung (:class:`Planned` says which, first);
- :func:`propagation_job`: :func:`~napari_samlung.core.propagation.propagate`
  from the user's seeds, guarded by the candidate lungs on CT.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..core.propagation import PropagationResult, propagate
from .session import LungSession
from .workers import load_model, relay

#: Why the automatic run is not offered for X-rays.
#: The text of the checkbox that lets runs overwrite painted slices (messages quote it).
OVERWRITE_EDITED_TEXT = "overwrite slices I edited"
AUTO_XRAY_MESSAGE = (
    "automatic segmentation finds the lungs from the CT's air (Hounsfield units) and "
    "applies to CT only; on an X-ray draw a box around each lung"
)


@dataclass(frozen=True)
class Planned:
    """What an automatic run will segment, known once its worker found the candidate lungs."""

    slices: list[int]
    kept: list[int]  # slices with candidate lung kept as the user edited them


def volume_job(session: LungSession, todo: list[int]):
    """Segment ``todo`` from the ground truth; yields each slice's result."""
    yield from load_model(session)
    yield from session.iter_volume(todo)


def auto_job(session: LungSession, protected: set[int]):
    """Find the candidate lungs, yield :class:`Planned`, then each segmented slice."""
    candidates = session.lung_candidates()
    flat = candidates.reshape(len(candidates), -1)
    with_lung = [int(z) for z in np.flatnonzero(flat.any(axis=1))]
    todo = [z for z in with_lung if z not in protected]
    yield Planned(todo, [z for z in with_lung if z in protected])
    if todo:
        yield from load_model(session)
        yield from session.iter_auto(todo)


def propagation_job(session, volume, seeds, window, settings, cancel: threading.Event, guarded):
    """Propagate from ``seeds``; yields ``(slice, labels)`` as they come, returns the result.

    With ``guarded`` the CT's air (found once per image) keeps the walk in the lung.
    """
    candidates = session.lung_candidates() if guarded and session.volume is volume else None
    spacing = session.spacing_zyx_mm
    segmenter = yield from load_model(session)

    def run(emit) -> PropagationResult:
        def on_slice(z: int, labels: np.ndarray) -> None:
            emit((z, np.array(labels, np.uint8, copy=True)))

        return propagate(
            segmenter,
            volume,
            seeds,
            window=window,
            settings=settings,
            should_cancel=cancel.is_set,
            on_slice=on_slice,
            candidates=candidates,
            spacing_zyx_mm=spacing,
        )

    return (yield from relay(run, on_stop=cancel.set))
