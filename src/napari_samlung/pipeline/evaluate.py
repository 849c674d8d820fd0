"""A dataset run with a resumable on-disk record, and its summary payload.

Each finished case appends its rows to ``OUT/per_slice.csv`` (flushed and
fsynced) and is then listed in ``OUT/cases.json`` with its number of rows and
their checksum.  ``resume`` checks both before trusting them and skips the
listed cases whose rows are all there and intact, so an interrupted run ends
with the same summary as an uninterrupted one.  A case whose rows were written
but that is not yet listed (a crash between the two writes) is redone, and its
stale rows are dropped; so is a case whose rows are missing, changed or torn.
A ``cases.json`` that cannot be read stops the run with one line.

A run folder is locked while a run uses it (:class:`~napari_samlung.io.outputs.RunLock`),
and nothing the run writes may be one of its inputs
(:func:`~napari_samlung.io.outputs.check_output`).

The cases are evaluated by a *case map*: a function ``(cases, config) ->
iterable of CaseResult``.  :func:`map_local` runs them one after the other in
this process; :func:`napari_samlung.pipeline.dask.dask_case_map` runs them on
Dask workers.  :meth:`EvaluationRun.run` is the one loop that records either.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..core.config import RunConfig
from ..core.metrics import SliceScore, Summary, summarize
from ..errors import InputFileError, SamlungError
from ..io import Case, find_cases, read_image, write_labels
from ..io.atomic import atomic_write_text
from ..io.names import RASTER_SUFFIXES, image_suffix
from ..io.outputs import (
    FileIdentity,
    RunLock,
    check_folder_writable,
    check_output,
    identity,
    input_identities,
    protecting,
    unlink_output,
)
from ..io.tables import read_score_rows, rows_digest, write_scores_csv
from .cases import (
    CaseResult,
    evaluate_case,
    failed_case,
    mask_suffix,
    mask_targets,
    nothing_scored,
    output_name,
)

CSV_NAME = "per_slice.csv"
STATE_NAME = "cases.json"
SUMMARY_NAME = "summary.json"
#: How to start again when the run record cannot be trusted.
START_AGAIN = "start again with --overwrite, or choose a new --out folder"

#: ``(cases, config) -> CaseResult per case`` (in any order; failures carry ``error``).
CaseMap = Callable[[Sequence[Case], RunConfig], Iterable[CaseResult]]


def map_local(cases: Sequence[Case], config: RunConfig) -> Iterator[CaseResult]:
    """Evaluate ``cases`` in order in this process, with one model loaded for all.

    A case that fails with a :class:`SamlungError` comes back with its error;
    any other exception (Ctrl-C included) stops the run.
    """
    segmenter = config.make_segmenter() if cases else None
    for case in cases:
        try:
            res = evaluate_case(segmenter, case, config)
        except SamlungError as exc:
            res = failed_case(case, str(exc))
        yield res


def _is_xray(case: Case) -> bool:
    return image_suffix(case.image_path) in RASTER_SUFFIXES


def choose_case_map(workers: int | None = None, scheduler: str | None = None) -> CaseMap:
    """Local when neither ``workers`` (a local Dask cluster) nor ``scheduler`` is given."""
    if workers or scheduler:
        from .dask import dask_case_map

        return dask_case_map(workers=workers, scheduler=scheduler)
    return map_local


def _write_json(
    path: Path, payload: dict, overwrite: bool, inputs: Sequence[FileIdentity] = ()
) -> Path:
    text = json.dumps(payload, indent=2, default=float) + "\n"
    return atomic_write_text(path, text, overwrite=overwrite, inputs=inputs)


def case_inputs(cases: Iterable[Case]) -> list[Path]:
    """Every file the cases are read from (images and masks): never to be written."""
    paths = []
    for c in cases:
        paths += [p for p in (c.image_path, c.mask_path, c.right_mask_path) if p is not None]
    return paths


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_ok(entry: object, is_auto: bool) -> bool:
    """Whether a ``cases.json`` entry holds what a finished case records."""
    if not isinstance(entry, dict):
        return False
    if not (_count(entry.get("skipped_empty")) and _count(entry.get("slices"))):
        return False
    if (is_auto or "false_positive_slices" in entry) and not _count(
        entry.get("false_positive_slices")
    ):
        return False
    return isinstance(entry.get("rows_sha256", ""), str)


class EvaluationRun:
    """Collects the per-slice scores of many cases, optionally recording them in ``out_dir``.

    Parameters
    ----------
    config : RunConfig
        What decides the scores; a resumed run must match the interrupted one.
    out_dir : Path, optional
        Run folder for ``per_slice.csv``, ``cases.json``, ``summary.json`` and masks.
    json_path : Path, optional
        A second place for the summary payload.
    overwrite : bool
        Start again over an existing run folder (and replace existing masks).
    resume : bool
        Continue the run recorded in ``out_dir``.
    save_masks : bool
        Write each case's predicted mask to ``out_dir``.
    inputs : iterable of Path
        Files the run reads (images, masks): nothing it writes may be one of them.

    ``out_dir`` is locked from here until :meth:`close` (called by
    :meth:`write_summary`, and when :meth:`run` is interrupted).

    Raises
    ------
    SamlungError
        For ``resume``/``save_masks`` without ``out_dir``, an existing run without
        ``overwrite``/``resume``, or a resume with other settings.
    InputFileError
        When ``out_dir`` cannot be created or written, another run uses it, or
        its run record cannot be trusted.
    """

    def __init__(
        self,
        config: RunConfig,
        out_dir: Path | None = None,
        *,
        json_path: Path | None = None,
        overwrite: bool = False,
        resume: bool = False,
        save_masks: bool = False,
        inputs: Iterable[Path] = (),
    ) -> None:
        self.config = config
        self.inputs: list[FileIdentity] = input_identities(inputs)
        self.lock: RunLock | None = None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.json_path = Path(json_path) if json_path is not None else None
        self.save_masks = save_masks
        self.overwrite = overwrite
        self.resume = resume
        self.scores: list[SliceScore] = []
        self.skipped_empty = 0
        self.false_positive_slices = 0
        self.seconds = 0.0
        self.done: dict[str, dict] = {}
        self.settings = config.settings()
        if self.out_dir is None:
            if resume:
                raise SamlungError("--resume needs --out, the folder of the interrupted run")
            if save_masks:
                raise SamlungError("--save-masks needs --out, the folder to write masks to")
            return
        self._make_folder()
        check_folder_writable(self.out_dir)  # a read-only or full disk, before any work
        self.lock = RunLock(self.out_dir).acquire()
        try:
            self._check_record_paths()
            if resume:
                self._reload()
            else:
                self._start_afresh()
        except BaseException:
            self.close()
            raise

    def _make_folder(self) -> None:
        out = self.out_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission, read-only disk, a loop
            why = exc.strerror or str(exc)
            if out.is_symlink() and not out.exists():
                why = "a symlink loop or a link to nowhere"
            raise InputFileError(
                f"{out}: cannot create the output folder ({why}); "
                "give --out a folder path that can be created"
            ) from None

    def _check_record_paths(self) -> None:
        """Refuse record files that are folders or inputs (whatever the flags)."""
        for name in (CSV_NAME, STATE_NAME, SUMMARY_NAME):
            path = self.out_dir / name
            if path.is_dir():
                raise InputFileError(
                    f"{path} is a folder, not part of a run record; remove it or choose a new "
                    "--out folder"
                )
            check_output(path, overwrite=True, inputs=self.inputs)

    def _read_state(self, state_path: Path) -> dict:
        """``cases.json`` as a dict with ``settings`` and ``cases``, or one line saying why not."""
        try:
            state = json.loads(state_path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise InputFileError(
                f"{state_path}: cannot read the run record ({exc.strerror or exc}); {START_AGAIN}"
            ) from None
        except (UnicodeDecodeError, ValueError, RecursionError):
            state, why = None, "not JSON, or cut short"
        else:
            why = "not an object with 'settings' and 'cases'"
        if (
            not isinstance(state, dict)
            or not isinstance(state.get("settings"), dict)
            or not isinstance(state.get("cases"), dict)
        ):
            raise InputFileError(f"{state_path}: the run record is damaged ({why}); {START_AGAIN}")
        return state

    def _reload(self) -> None:
        """Take back the finished cases whose record is whole; the others are run again."""
        csv_path, state_path = self.out_dir / CSV_NAME, self.out_dir / STATE_NAME
        done: dict[str, dict] = {}
        if state_path.exists():
            state = self._read_state(state_path)
            if state["settings"] != self.settings:
                raise SamlungError(
                    f"{state_path}: the interrupted run used {state['settings']}; resume "
                    "with the same model, strategy and window, or start a new --out folder"
                )
            is_auto = self.config.is_auto
            done = {k: v for k, v in state["cases"].items() if _entry_ok(v, is_auto)}
        listed = len(state["cases"]) if state_path.exists() else 0
        rows = read_score_rows(csv_path) if csv_path.exists() else None
        by_case: dict[str, list[SliceScore]] = {}
        for s in rows.scores if rows is not None else []:
            by_case.setdefault(s.case, []).append(s)
        bad = rows.bad_cases if rows is not None else set()
        for name, entry in list(done.items()):
            got = by_case.get(name, [])
            digest = entry.get("rows_sha256")
            if (
                name in bad
                or len(got) != entry["slices"]
                or len({s.slice_index for s in got}) != len(got)
                or (digest is not None and digest != rows_digest(got))
            ):
                del done[name]
        self.done = done
        self.scores = [s for name in done for s in by_case.get(name, [])]
        if rows is not None or listed != len(done):
            write_scores_csv(csv_path, self.scores, inputs=self.inputs)  # only trusted rows
            self._write_state()
        if listed != len(done):
            warnings.warn(
                f"{self.out_dir}: the run record was damaged; {listed - len(done)} of the "
                f"{listed} finished cases will be run again",
                stacklevel=2,
            )
        self.skipped_empty = sum(v["skipped_empty"] for v in done.values())
        self.false_positive_slices = sum(v.get("false_positive_slices", 0) for v in done.values())

    def _start_afresh(self) -> None:
        csv_path, state_path = self.out_dir / CSV_NAME, self.out_dir / STATE_NAME
        for path in (csv_path, state_path, self.out_dir / SUMMARY_NAME):
            if path.exists() and not self.overwrite:
                raise SamlungError(
                    f"{path} exists; pass --resume to continue that run or --overwrite "
                    "to start again"
                )
        unlink_output(csv_path, self.inputs)
        unlink_output(state_path, self.inputs)

    def _write_state(self) -> None:
        atomic_write_text(
            self.out_dir / STATE_NAME,
            json.dumps({"settings": self.settings, "cases": self.done}, indent=1),
            overwrite=True,
            inputs=self.inputs,
        )

    def close(self) -> None:
        """Release the run folder (the lock); the record stays.  Never raises."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> EvaluationRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def may_replace_masks(self) -> bool:
        """--overwrite, or --resume: a case not recorded as done may have left its own mask."""
        return self.overwrite or self.resume

    def run(
        self,
        cases: Sequence[Case],
        on_case_done: Callable[[str], None] | None = None,
        *,
        workers: int | None = None,
        scheduler: str | None = None,
        case_map: CaseMap | None = None,
    ) -> list[str]:
        """Evaluate the cases not yet done; return one problem line per failed case.

        Cases without a mask (``find_cases`` reports them) have nothing to score
        and are passed over.  A case whose mask has no lung on any slice is
        recorded (it counts in ``skipped_empty``) and reported as a problem.

        Parameters
        ----------
        cases : sequence of Case
            The dataset, done cases included.
        on_case_done : callable, optional
            ``on_case_done(name)`` once per case, done before or now, failed or not.
        workers, scheduler : optional
            Run on a local Dask cluster of ``workers`` processes, or on the
            ``dask.distributed`` scheduler at this address.
        case_map : CaseMap, optional
            How to evaluate the cases; overrides ``workers``/``scheduler``.
        """
        t0 = time.perf_counter()
        self.inputs += input_identities(case_inputs(cases))
        todo = [c for c in cases if c.name not in self.done and c.mask_path is not None]
        for c in cases:
            if (c.name in self.done or c.mask_path is None) and on_case_done is not None:
                on_case_done(c.name)
        try:
            self._check_mask_targets(todo)  # refuse before any work, not after the first case
            case_map = case_map or choose_case_map(workers, scheduler)
            problems = []
            with protecting(self.inputs):  # also for writers that are not the run's own
                for res in case_map(todo, self.config):
                    if res.error is not None:
                        problems.append(f"{res.name}: {res.error}")
                    else:
                        self.record(res)
                        problems.extend(nothing_scored(res))
                    if on_case_done is not None:
                        on_case_done(res.name)
        except BaseException:  # Ctrl-C included: the folder is free for --resume
            self.close()
            raise
        self.seconds += time.perf_counter() - t0
        return problems

    def _check_mask_targets(self, todo: Sequence[Case]) -> None:
        """Every mask the run will save may be written: never an input, whatever the flags."""
        if not self.save_masks or self.out_dir is None:
            return
        for case in todo:
            for target in mask_targets(self.out_dir, case):
                check_output(target, overwrite=self.may_replace_masks, inputs=self.inputs)

    def record(self, res: CaseResult) -> None:
        """Keep a finished case's scores; write them (and its mask) to ``out_dir``."""
        self.scores.extend(res.scores)
        self.skipped_empty += res.skipped_empty
        self.false_positive_slices += res.false_positive_slices or 0
        if self.out_dir is None:
            return
        if self.save_masks:
            # results from Dask workers come without the image volume: re-read its header
            image = res.image if res.image is not None else read_image(res.image_path)
            case = Case(res.name, res.image_path or Path(res.name), None)
            write_labels(
                self.out_dir / output_name(case, mask_suffix(res.labels)),
                res.labels,
                like=image,
                overwrite=self.may_replace_masks,
                inputs=self.inputs,
            )
        write_scores_csv(self.out_dir / CSV_NAME, res.scores, append=True, inputs=self.inputs)
        self.done[res.name] = {
            "skipped_empty": res.skipped_empty,
            "slices": len(res.scores),
            "rows_sha256": rows_digest(res.scores),
        }
        if res.false_positive_slices is not None:
            self.done[res.name]["false_positive_slices"] = res.false_positive_slices
        self._write_state()

    def summary(self) -> Summary:
        """Dice and Jaccard over every scored slice of the run (resumed cases included)."""
        return summarize(self.scores, self.skipped_empty)

    def payload(self, summary: Summary | None = None) -> dict:
        """The summary as JSON-ready values.

        Keys: ``model``, ``strategy``, ``window``, the :class:`Summary` fields
        (``cases``, ``slices``, ``skipped_empty``, ``empty_predictions``, and
        ``dice``/``jaccard`` with ``mean``, ``std``, ``min``, ``max``, ``median``
        as fractions in [0, 1]) and ``seconds`` (wall time of :meth:`run`).
        Automatic runs (strategy ``"auto"``) add ``combine`` and
        ``false_positive_slices``: slices given a mask where the ground truth
        has no lung, over all cases.
        """
        summary = summary or self.summary()
        payload = {
            "model": self.settings["model"],
            "strategy": self.settings["strategy"],
            "window": self.settings["window"],
            **summary.to_dict(),
            "seconds": self.seconds,
        }
        if self.config.is_auto:
            payload["combine"] = self.config.combine
            payload["false_positive_slices"] = self.false_positive_slices
        return payload

    def write_summary(self, payload: dict) -> list[Path]:
        """Write ``payload`` to ``out_dir/summary.json`` and to ``json_path``; return the paths.

        The run is over: the run folder is released (:meth:`close`), written or not.
        """
        written = []
        try:
            if self.out_dir is not None:
                summary = self.out_dir / SUMMARY_NAME
                written.append(_write_json(summary, payload, True, self.inputs))
            if self.json_path is not None:
                written.append(_write_json(self.json_path, payload, self.overwrite, self.inputs))
        finally:
            self.close()
        return written


def open_run(
    config: RunConfig,
    images: Path,
    masks: Path | None = None,
    *,
    limit: int | None = None,
    out_dir: Path | None = None,
    json_path: Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    save_masks: bool = False,
) -> tuple[EvaluationRun, list[Case], list[str]]:
    """Check the summary file can be written, find the cases, open the run folder.

    In that order, so that nothing is read or created before a refusal.  Every
    output (``json_path``, the run record, the masks) is checked against every
    input file of the cases, however spelt, before any model work.

    Parameters
    ----------
    images, masks : Path
        As :func:`~napari_samlung.io.find_cases` takes them.
    limit : int, optional
        Only the first ``limit`` cases.
    out_dir, json_path, overwrite, resume, save_masks
        As :class:`EvaluationRun` takes them.

    Returns
    -------
    run : EvaluationRun
    cases : list of Case
    problems : list of str
        One line per file of the dataset that could not be used.

    Raises
    ------
    SamlungError
        Also for the ``"auto"`` strategy on a dataset of X-rays only (an X-ray
        among CTs fails as its own case).
    """
    if json_path is not None:  # refuse before any work, not after it
        check_output(json_path, overwrite=overwrite, inputs=[images, masks], probe=True)
    cases, problems = find_cases(images, masks)
    inputs = input_identities(case_inputs(cases))
    if json_path is not None:
        check_output(json_path, overwrite=overwrite, inputs=inputs)
        if out_dir is not None and any(
            identity(json_path).same_as(identity(Path(out_dir) / name))
            for name in (CSV_NAME, STATE_NAME)
        ):
            raise InputFileError(
                f"{json_path} is part of the run record in {out_dir}; give --json another name"
            )
    if limit is not None:
        cases = cases[:limit]
    if config.is_auto and cases and all(_is_xray(c) for c in cases):
        raise SamlungError(
            f"{cases[0].image_path}: automatic lung finding (--strategy auto) needs a CT in HU "
            "(an X-ray has no Hounsfield units); use a prompt strategy (e.g. --strategy per-lung)"
        )
    run = EvaluationRun(
        config,
        out_dir,
        json_path=json_path,
        overwrite=overwrite,
        resume=resume,
        save_masks=save_masks,
        inputs=inputs,
    )
    return run, cases, problems
