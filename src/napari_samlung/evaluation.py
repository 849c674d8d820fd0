"""Dataset evaluation with a resumable on-disk record.

Each finished case appends its rows to ``OUT/per_slice.csv`` (flushed and
fsynced) and is then listed in ``OUT/cases.json``.  ``--resume`` reloads both
and skips the listed cases, so an interrupted run ends with the same summary
as an uninterrupted one.  A case whose rows were written but that is not yet
listed (a crash between the two writes) is redone, and its stale rows are
dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from .core.metrics import SliceScore
from .errors import InputFileError, SamlungError
from .io import Case
from .io.atomic import atomic_write_text, check_writable
from .io.names import NIFTI_SUFFIXES, RASTER_SUFFIXES, image_suffix
from .io.tables import read_scores_csv, write_scores_csv
from .runner import CaseResult, RunConfig, evaluate_case, output_name

CSV_NAME = "per_slice.csv"
STATE_NAME = "cases.json"
SUMMARY_NAME = "summary.json"


class EvaluationRun:
    """Collects per-slice scores of many cases, optionally recording them in ``out_dir``."""

    def __init__(
        self,
        config: RunConfig,
        out_dir: Path | None = None,
        *,
        overwrite: bool = False,
        resume: bool = False,
        save_masks: bool = False,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.save_masks = save_masks
        self.overwrite = overwrite
        self.resume = resume
        self.scores: list[SliceScore] = []
        self.skipped_empty = 0
        self.done: dict[str, dict] = {}
        # what decides the scores; a resumed run must match it
        self.settings = {
            "model": config.model_id,
            "checkpoint": config.checkpoint,
            "strategy": config.resolved_strategy(),
            "window": config.window().describe(),
        }
        if self.out_dir is None:
            if resume:
                raise SamlungError("--resume needs --out, the folder of the interrupted run")
            if save_masks:
                raise SamlungError("--save-masks needs --out, the folder to write masks to")
            return
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, read-only disk
            raise InputFileError(
                f"{self.out_dir}: cannot create the output folder ({exc.strerror or exc}); "
                "give --out a folder path that can be created"
            ) from None
        csv_path, state_path = self.out_dir / CSV_NAME, self.out_dir / STATE_NAME
        if resume:
            if state_path.exists():
                state = json.loads(state_path.read_text())
                if state.get("settings", self.settings) != self.settings:
                    raise SamlungError(
                        f"{state_path}: the interrupted run used {state['settings']}; resume "
                        "with the same model, strategy and window, or start a new --out folder"
                    )
                self.done = state["cases"]
            if csv_path.exists():
                rows = [s for s in read_scores_csv(csv_path) if s.case in self.done]
                self.scores.extend(rows)
                write_scores_csv(csv_path, rows)  # drop rows of a case that did not finish
            self.skipped_empty = sum(int(v["skipped_empty"]) for v in self.done.values())
        else:
            for path in (csv_path, state_path, self.out_dir / SUMMARY_NAME):
                if path.exists() and not overwrite:
                    raise SamlungError(
                        f"{path} exists; pass --resume to continue that run or --overwrite "
                        "to start again"
                    )
            csv_path.unlink(missing_ok=True)
            state_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ running

    def run(
        self,
        cases: Sequence[Case],
        on_case_done: Callable[[str], None] | None = None,
        *,
        workers: int | None = None,
        scheduler: str | None = None,
    ) -> list[str]:
        """Evaluate the cases not yet done; returns one problem line per failed case.

        Cases without a mask (``find_cases`` reports them) have nothing to score and
        are passed over.  A case whose mask has no lung on any slice is recorded (it
        counts in ``skipped_empty``) and reported as a problem, since nothing of it
        could be scored.
        """
        todo = [c for c in cases if c.name not in self.done and c.mask_path is not None]
        for c in cases:
            if (c.name in self.done or c.mask_path is None) and on_case_done is not None:
                on_case_done(c.name)
        if self.save_masks and self.out_dir is not None and not self._may_replace_masks:
            for case in todo:  # refuse before any work, not after the first case
                for target in _mask_targets(self.out_dir, case):
                    check_writable(target, overwrite=False)
        if workers or scheduler:
            from .distributed import evaluate_distributed

            results = evaluate_distributed(todo, self.config, workers=workers, scheduler=scheduler)
            problems = []
            for res in sorted(results, key=lambda r: r.name):
                if res.error:
                    problems.append(f"{res.name}: {res.error}")
                else:
                    self.record(res)
                    problems.extend(_nothing_scored(res))
                if on_case_done is not None:
                    on_case_done(res.name)
            return problems
        problems = []
        segmenter = self.config.make_segmenter() if todo else None
        for case in todo:
            try:
                res = evaluate_case(segmenter, case, self.config)
            except SamlungError as exc:
                problems.append(f"{case.name}: {exc}")
            else:
                self.record(res)
                problems.extend(_nothing_scored(res))
            if on_case_done is not None:
                on_case_done(case.name)
        return problems

    def record(self, res: CaseResult) -> None:
        """Keep a finished case's scores; write them (and its mask) to ``out_dir``."""
        self.scores.extend(res.scores)
        self.skipped_empty += res.skipped_empty
        if self.out_dir is None:
            return
        if self.save_masks:
            from .io import read_image, write_labels

            # results from Dask workers come without the image volume: re-read its header
            image = res.image if res.image is not None else read_image(res.image_path)
            suffix = ".nii.gz" if res.labels.ndim == 3 else ".png"
            case = Case(res.name, res.image_path or Path(res.name), None)
            write_labels(
                self.out_dir / output_name(case, suffix),
                res.labels,
                like=image,
                overwrite=self._may_replace_masks,
            )
        write_scores_csv(self.out_dir / CSV_NAME, res.scores, append=True)
        self.done[res.name] = {"skipped_empty": res.skipped_empty, "slices": len(res.scores)}
        atomic_write_text(
            self.out_dir / STATE_NAME,
            json.dumps({"settings": self.settings, "cases": self.done}, indent=1),
            overwrite=True,
        )

    @property
    def _may_replace_masks(self) -> bool:
        """--overwrite, or --resume: a case not recorded as done may have left its own mask."""
        return self.overwrite or self.resume

    def write_summary(self, payload: dict) -> Path:
        assert self.out_dir is not None
        return atomic_write_text(
            self.out_dir / SUMMARY_NAME,
            json.dumps(payload, indent=2, default=float) + "\n",
            overwrite=True,
        )


def _nothing_scored(res: CaseResult) -> list[str]:
    """A problem line for a case whose mask has no lung anywhere (zero scored slices)."""
    if res.scores:
        return []
    n = res.skipped_empty
    return [
        f"{res.name}: the mask has no lung on any of its {n} slice{'s' if n != 1 else ''}, "
        "so nothing was scored; check that it is the lung mask of this image"
    ]


def _mask_targets(out_dir: Path, case: Case) -> list[Path]:
    """The file(s) ``record`` may write a case's predicted mask to (.npy: 2D or 3D)."""
    suffix = image_suffix(case.image_path)
    if suffix in RASTER_SUFFIXES:
        suffixes = [".png"]
    elif suffix in NIFTI_SUFFIXES:
        suffixes = [".nii.gz"]
    else:
        suffixes = [".png", ".nii.gz"]
    return [out_dir / output_name(case, s) for s in suffixes]
