"""The widget's state and model logic, without Qt or napari.

A :class:`LungSession` holds the image volume, the CT window, the segmenter
(built lazily by a factory, so tests can hand in a tiny model) and the
per-slice scores against the ground truth.  Every method that runs a model
is safe to call from a worker thread; the widget decides which thread.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..core.auto import iter_segment_auto
from ..core.engine import Segmenter
from ..core.labels import to_lung_labels
from ..core.lungs_hu import find_lung_candidates, slice_midline_col
from ..core.metrics import SliceScore, Summary, score_slice, summarize
from ..core.models import get_spec
from ..core.prompts import (
    ONE_LUNG,
    Prompt,
    get_strategy,
    prompts_from_labels,
    validate_prompt,
)
from ..core.volume import SliceResult, iter_segment_from_labels
from ..core.windowing import Window, is_prewindowed, to_rgb
from ..errors import SamlungError, ShapeMismatchError
from ..io.tables import write_scores_csv
from .quality import QualityBook

#: ``fn(done_bytes, total_bytes or None)``, called from the loading thread.
DownloadFn = Callable[[int, "int | None"], None]
#: ``factory(model_id, checkpoint, device, progress) -> Segmenter``; ``progress`` is a
#: :data:`DownloadFn` for the weights download, or None.
SegmenterFactory = Callable[[str, "str | None", str, "DownloadFn | None"], Segmenter]


def default_segmenter_factory(
    model_id: str, checkpoint: str | None, device: str, progress: DownloadFn | None = None
) -> Segmenter:
    """Build a registered model (weights are downloaded once where allowed)."""
    return Segmenter.from_registry(model_id, checkpoint, device, progress=progress)


#: Overrides :func:`interactive_threads` (a whole number of CPU threads for PyTorch).
THREADS_ENV = "SAMLUNG_TORCH_THREADS"


def interactive_threads(cores: int | None = None) -> int:
    """PyTorch's CPU threads in the widget: all cores but one, which is left to napari.

    On a 2-core machine two PyTorch threads fought the GUI thread and each other: one
    cached prompt -> mask call took p50 704 ms with 2 threads against 34 ms with 1
    (``benchmarks/ui_stalls.py`` measures the widget with both).  ``$SAMLUNG_TORCH_THREADS``
    overrides the choice.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise SamlungError(
                f"${THREADS_ENV}={value!r} is not a whole number; unset it or set e.g. 1"
            ) from None
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1)


def use_interactive_threads() -> int:
    """Set PyTorch's CPU threads for the widget (:func:`interactive_threads`); returns it."""
    import torch

    n = interactive_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class LungSession:
    """Image, window, model and scores of one widget."""

    def __init__(self, segmenter_factory: SegmenterFactory | None = None) -> None:
        self.segmenter_factory = segmenter_factory or default_segmenter_factory
        self.model_id = "lite_medsam"
        self.checkpoint: str | None = None
        self.device = "auto"
        self.strategy = get_spec(self.model_id).default_strategy
        self.window = Window.preset(get_spec(self.model_id).default_window)
        self.volume = np.zeros((1, 1, 1), np.uint8)
        self.is_2d = True
        self.case = ""
        self.modality = "ct"
        self.spacing_zyx_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
        self.truth: np.ndarray | None = None  # (slice, row, col) lung labels {0, 1, 2}
        self.scores: dict[int, SliceScore] = {}
        #: Predicted IoU and agreement with the candidate lungs, per written slice.
        self.quality = QualityBook()
        self.skipped_empty = 0
        self._segmenter: Segmenter | None = None
        self._model_lock = threading.Lock()
        self._candidates: tuple[np.ndarray, np.ndarray] | None = None  # (volume, labels)
        self._candidates_lock = threading.Lock()

    # ------------------------------------------------------------------ image

    def set_image(
        self,
        volume: np.ndarray,
        is_2d: bool,
        case: str = "",
        *,
        modality: str = "ct",
        spacing_zyx_mm: tuple[float, ...] | None = None,
    ) -> None:
        """Use a new ``(slice, row, col)`` volume; scores start over.

        ``modality`` is ``"ct"`` or ``"xray"``; ``spacing_zyx_mm`` the voxel
        spacing in mm, one entry per axis of the image (1 mm where unknown).
        """
        if volume.ndim != 3:
            raise ShapeMismatchError(f"expected a (slice, row, col) volume, got {volume.shape}")
        self.volume = volume
        self.is_2d = is_2d
        self.case = case
        self.modality = modality
        if self._candidates is not None and self._candidates[0] is not volume:
            self._candidates = None  # let go of the old image
        spacing = tuple(float(v) for v in (spacing_zyx_mm or ()))[-3:]
        self.spacing_zyx_mm = ((1.0,) * 3 + spacing)[-3:]
        self.truth = None
        self.reset_scores()

    def set_truth(self, truth: np.ndarray | None) -> None:
        """Use ``truth`` (same shape as the image) as ground truth, or none.

        Binary and 0/255 masks are split into left/right lungs once, over the
        whole volume.
        """
        if truth is None:
            self.truth = None
            return
        truth = np.asarray(truth)
        if truth.ndim == 2:
            truth = truth[None]
        if truth.shape != self.volume.shape:
            raise ShapeMismatchError(
                f"the ground truth has shape {truth.shape} but the image has shape "
                f"{self.volume.shape}; choose the labels that belong to this image"
            )
        self.truth = truth_as_lungs(truth)

    @property
    def n_slices(self) -> int:
        """Slices of the volume (1 for a 2D image)."""
        return int(self.volume.shape[0])

    @property
    def windowable(self) -> bool:
        """False for 8-bit data (X-rays, pre-windowed CT), which is used as it is."""
        return not is_prewindowed(self.volume)

    def effective_window(self) -> Window:
        """The window the model gets: :attr:`window`, or none for 8-bit data."""
        return self.window if self.windowable else Window(None, None)

    def rgb(self, slice_index: int) -> np.ndarray:
        """The encoder input of one slice (windowed, 3 channels, uint8)."""
        return to_rgb(np.asarray(self.volume[slice_index]), self.effective_window())

    @property
    def is_ct(self) -> bool:
        """True for CT (slices or volumes); False for X-rays."""
        return self.modality != "xray"

    @property
    def is_hu_volume(self) -> bool:
        """True for a CT volume in Hounsfield units (the ground-truth run is refined)."""
        return self.is_ct and self.windowable and not self.is_2d

    def midline_col(self, slice_index: int) -> float | None:
        """The body's midline column of a CT slice; None (the image centre) for X-rays."""
        if not self.is_ct:
            return None
        return slice_midline_col(np.asarray(self.volume[slice_index]))

    @property
    def candidates(self) -> np.ndarray | None:
        """The candidate lungs of the image, once :meth:`lung_candidates` found them."""
        found = self._candidates
        return found[1] if found is not None and found[0] is self.volume else None

    def lung_candidates(self) -> np.ndarray:
        """Candidate lung labels ``(slice, row, col)`` from the CT's air, found once per image.

        Takes a while on a large CT: call from a worker.  Raises SamlungError for X-rays.
        """
        volume, spacing, is_2d = self.volume, self.spacing_zyx_mm, self.is_2d
        with self._candidates_lock:
            found = self._candidates
            if found is not None and found[0] is volume:
                return found[1]
            image = volume[0] if is_2d else volume
            try:
                labels = find_lung_candidates(
                    image, spacing[-image.ndim :], modality=self.modality
                ).lung_labels
            except ValueError as exc:
                raise SamlungError(str(exc)) from None
            labels = labels[None] if is_2d else labels
            self._candidates = (volume, labels)
            return labels

    def clamp(self, slice_index: int) -> int:
        """``slice_index`` moved into ``0 .. n_slices - 1``."""
        return int(min(max(int(slice_index), 0), self.n_slices - 1))

    # ------------------------------------------------------------------ model

    def configure_model(self, model_id: str, checkpoint: str | None, device: str) -> bool:
        """Choose the model; returns True when it differs (the old one is dropped)."""
        checkpoint = checkpoint or None
        changed = (model_id, checkpoint, device) != (self.model_id, self.checkpoint, self.device)
        if changed:
            get_spec(model_id)  # raises a clear error for unknown ids
            self.model_id, self.checkpoint, self.device = model_id, checkpoint, device
            with self._model_lock:
                self._segmenter = None
        return changed

    @property
    def model_loaded(self) -> bool:
        """True once the segmenter was built."""
        return self._segmenter is not None

    def segmenter(self, on_download: DownloadFn | None = None) -> Segmenter:
        """The segmenter, built on first use (may take seconds; call from a worker).

        ``on_download(done_bytes, total_bytes)`` reports a weights download, if one is needed.
        """
        with self._model_lock:
            if self._segmenter is None:
                use_interactive_threads()
                self._segmenter = self.segmenter_factory(
                    self.model_id, self.checkpoint, self.device, on_download
                )
            return self._segmenter

    @property
    def accepts_points(self) -> bool:
        """False for a box-only model (LiteMedSAM)."""
        if self._segmenter is not None:
            return self._segmenter.accepts_points
        return get_spec(self.model_id).accepts_points

    def is_embedded(self, slice_index: int) -> bool:
        """True when the loaded model has the slice's embedding (in the current window)."""
        seg = self._segmenter
        return seg is not None and seg.cached(self.rgb(slice_index))

    def embed(self, slice_index: int) -> int:
        """Embed one slice (cached); returns the slice index."""
        self.segmenter().embed(self.rgb(slice_index))
        return slice_index

    def model_key(self) -> tuple:
        """What a prediction depends on besides the prompts."""
        return (self.model_id, self.checkpoint, self.device, self.effective_window().describe())

    # ------------------------------------------------------------------ prompts

    def check_prompts(self, slice_index: int, prompts: list[Prompt]) -> list[Prompt]:
        """Validate user prompts against the slice and the model (raises PromptError)."""
        shape = tuple(self.volume.shape[1:])
        return [validate_prompt(p, shape, self.accepts_points) for p in prompts]

    def segment(
        self, slice_index: int, prompts: list[Prompt], strategy=None
    ) -> tuple[np.ndarray, float]:
        """Lung labels of one slice from prompts (validated already), and the predicted IoU.

        A user's box or point group (:data:`~napari_samlung.core.prompts.ONE_LUNG`)
        is one lung, named by the side of the body's midline its mask lies on.
        """
        seg = self.segmenter()
        strat = get_strategy(strategy) if isinstance(strategy, str) else strategy
        one_lung = any(p.target_label == ONE_LUNG for p in prompts)
        return seg.segment_slice(
            self.rgb(slice_index),
            prompts,
            strategy=strat,
            validate=False,
            midline_col=self.midline_col(slice_index) if one_lung else None,
        )

    def prompts_from_truth(self, slice_index: int) -> list[Prompt]:
        """Prompts of the chosen strategy from the ground truth of one slice."""
        if self.truth is None:
            raise ShapeMismatchError("choose a ground-truth Labels layer first")
        return prompts_from_labels(self.truth[slice_index], self.strategy, self.accepts_points)

    def lung_slices(self) -> list[int]:
        """Slices whose ground truth contains lung."""
        if self.truth is None:
            return []
        flat = self.truth.reshape(self.truth.shape[0], -1)
        return [int(z) for z in np.flatnonzero(flat.any(axis=1))]

    def iter_volume(self, slices: list[int]) -> Iterator[SliceResult]:
        """Segment ``slices`` from the ground truth, yielding each as it is done."""
        if self.truth is None:
            raise ShapeMismatchError("choose a ground-truth Labels layer first")
        return iter_segment_from_labels(
            self.segmenter(),
            self.volume,
            self.truth,
            window=self.effective_window(),
            strategy=self.strategy,
            slices=slices,
            case=self.case,
            refine=self.is_hu_volume,
            spacing_zyx_mm=self.spacing_zyx_mm,
        )

    def iter_auto(self, slices: list[int]) -> Iterator[SliceResult]:
        """Segment ``slices`` automatically (CT): the candidate lungs prompt the model.

        Slices without candidate lung are not yielded; with a ground truth the
        slices are scored too.
        """
        return iter_segment_auto(
            self.segmenter(),
            self.volume,
            window=self.effective_window(),
            spacing_zyx_mm=self.spacing_zyx_mm,
            candidates=self.lung_candidates(),
            truth=self.truth,
            slices=slices,
            case=self.case,
        )

    def record_quality(self, slice_index: int, labels, predicted_iou: float | None = None):
        """Note the labels written on a slice for the quality strip."""
        candidates = self.candidates
        return self.quality.record(
            slice_index,
            labels,
            None if candidates is None else candidates[slice_index],
            predicted_iou,
        )

    # ------------------------------------------------------------------ scores

    def reset_scores(self) -> None:
        """Forget every score and quality (and the count of slices skipped as empty)."""
        self.scores.clear()
        self.quality.clear()
        self.skipped_empty = 0

    def score(self, slice_index: int, pred: np.ndarray) -> SliceScore | None:
        """Score one predicted slice; ``None`` (and no entry) without lung in the truth."""
        if self.truth is None:
            return None
        result = score_slice(pred, self.truth[slice_index], case=self.case, slice_index=slice_index)
        if result is None:
            self.scores.pop(int(slice_index), None)
        else:
            self.scores[int(slice_index)] = result
        return result

    def forget_score(self, slice_index: int) -> None:
        """Forget the score and quality of one slice (its labels were cleared)."""
        self.scores.pop(int(slice_index), None)
        self.quality.forget(slice_index)

    def mean_scores(self) -> tuple[int, float, float]:
        """(slices, mean Dice, mean Jaccard) over the slices scored so far."""
        values = list(self.scores.values())
        if not values:
            return 0, math.nan, math.nan
        return (
            len(values),
            float(np.mean([s.dice for s in values])),
            float(np.mean([s.jaccard for s in values])),
        )

    def readout(self, slice_index: int | None, has_truth: bool, summary: str = "") -> str:
        """The score readout: Dice and Jaccard of ``slice_index``, their means, ``summary``."""
        if not has_truth:
            lines = ["choose a ground-truth layer to see Dice and Jaccard"]
        else:
            score = self.scores.get(slice_index) if slice_index is not None else None
            if score is not None:
                lines = [
                    f"slice {slice_index}: Dice {_pct(score.dice)}  Jaccard {_pct(score.jaccard)}"
                ]
            elif slice_index is not None:
                lines = [f"slice {slice_index}: not scored yet"]
            else:
                lines = []
            n, dice, jaccard = self.mean_scores()
            if n:
                lines.append(f"mean of {n} slices: Dice {_pct(dice)}  Jaccard {_pct(jaccard)}")
        if summary:
            lines += ["", summary]
        return "\n".join(lines)

    def summary(self) -> Summary:
        """The summary table (min, max, mean, std, median) of the scores so far."""
        return summarize(self.sorted_scores(), self.skipped_empty)

    def sorted_scores(self) -> list[SliceScore]:
        """The scores, by slice index."""
        return [self.scores[z] for z in sorted(self.scores)]

    def export_scores(self, path: str | Path) -> Path:
        """Write the per-slice scores as CSV to ``path``; returns ``path``."""
        write_scores_csv(path, self.sorted_scores())
        return Path(path)


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f} %"


def truth_as_lungs(truth: np.ndarray) -> np.ndarray:
    """Ground truth as uint8 lung labels {0, 1, 2}.

    Labels that already use 1 and 2 are kept (cheaply, without a full
    ``np.unique``); binary and 0/255 masks are split into lungs.
    """
    truth = np.asarray(truth)
    if (
        np.issubdtype(truth.dtype, np.integer)
        and truth.size
        and int(truth.min()) >= 0
        and int(truth.max()) == 2
    ):
        return truth.astype(np.uint8, copy=False)
    return to_lung_labels(truth, name="the ground-truth layer")
