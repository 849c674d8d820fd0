"""The ``napari-samlung`` console script: evaluate, segment, demo.

Every user error prints one line on stderr and exits with status 2 (argparse's
own errors too: one line, no usage block); an interrupted run exits with 130
and can be resumed with ``--resume``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

from . import __version__
from .errors import SamlungError, SamlungWarning

EXIT_USAGE = 2
EXIT_SKIPPED = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``napari-samlung: error: ...``, and exit 2.

    The usage block argparse prints first is left out; the line ends with where to
    look instead (``see napari-samlung <command> --help``).  Sub-parsers are of
    this class too (``add_subparsers`` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        self._fail(message, self.prog)

    def _fail(self, message: str, prog: str) -> NoReturn:
        text = " ".join(message.split())  # argparse's messages may wrap
        self.exit(EXIT_USAGE, f"napari-samlung: error: {text} (see {prog} --help)\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse, but unknown arguments point at the sub-command's help."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self._fail(f"unrecognized arguments: {' '.join(extras)}", prog)
        return parsed


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; give one of {minimum} or more"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} is too small; give a whole number of {minimum} or more"
            )
        return value

    return parse


def _number(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """An argparse ``type``: a finite number, ``minimum <= value <= maximum`` where given."""
    if minimum is None:
        wanted = "a finite number"
    elif maximum is None:
        wanted = f"a number of {minimum:g} or more"
    else:
        wanted = f"a number from {minimum:g} to {maximum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {wanted}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number; give {wanted}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{text} is out of range; give {wanted}")
        return value

    return parse


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from .core.auto import AUTO_STRATEGY, COMBINE_RULES
    from .core.models import public_models
    from .core.prompts import STRATEGIES
    from .core.windowing import WINDOW_PRESETS

    g = p.add_argument_group("model and prompts")
    g.add_argument(
        "--model",
        default="lite_medsam",
        help=f"model id ({', '.join(public_models())}); default lite_medsam",
    )
    g.add_argument(
        "--checkpoint", help="weights file for the model (or a fine-tune of its architecture)"
    )
    g.add_argument(
        "--strategy",
        choices=[*sorted(STRATEGIES), AUTO_STRATEGY],
        help="prompt strategy (default: the model's best, see docs/strategies.md); "
        f"{AUTO_STRATEGY}: prompts from the lungs found in the CT itself, the mask only "
        "scores (CT only)",
    )
    g.add_argument(
        "--combine",
        default="refined",
        choices=list(COMBINE_RULES),
        help="automatic runs: the model's masks checked against the CT's air (refined, "
        "default), the model alone, or the air candidates alone (no model)",
    )
    g.add_argument(
        "--no-hu-refine",
        dest="hu_refine",
        action="store_false",
        help="CT: do not check ground-truth-prompted masks and propagation against the CT's "
        "air (the paper's pipeline; X-rays are never refined)",
    )
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    g.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="encoder precision; auto uses bf16 where the hardware has it",
    )
    w = p.add_argument_group("CT window (ignored for 8-bit data)")
    w.add_argument(
        "--window-preset",
        choices=sorted(WINDOW_PRESETS),
        help="named window (default: the model's, see docs/windowing.md)",
    )
    w.add_argument("--window-level", type=_number(), help="window level in HU")
    # a width of 0 or less is refused by core.windowing.Window, with its own line
    w.add_argument("--window-width", type=_number(), help="window width in HU (above 0)")
    w.add_argument(
        "--normalize",
        default="fixed",
        choices=["fixed", "per-slice"],
        help="fixed window mapping, or the paper's per-slice min-max",
    )
    p.add_argument(
        "--batch-size", type=_whole_number(1), default=4, help="slices per encoder batch"
    )
    c = p.add_argument_group("embedding cache on disk (off by default)")
    c.add_argument(
        "--disk-cache",
        action="store_true",
        help="keep embeddings in the user cache directory ($SAMLUNG_CACHE_DIR)",
    )
    c.add_argument("--cache-dir", help="keep embeddings in this folder instead")
    c.add_argument(
        "--cache-limit-mb",
        type=_number(0.0),
        default=2048.0,
        help="size limit of the disk cache in MB (least recently used files go; 0: no writing)",
    )


def _config(args: argparse.Namespace):
    from .core.config import RunConfig

    if args.window_preset and (args.window_level is not None or args.window_width is not None):
        raise SamlungError("give either --window-preset or --window-level/--window-width, not both")
    _check_environment(args)
    cfg = RunConfig(
        model_id=args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        strategy=args.strategy,
        window_preset=args.window_preset,
        window_level=args.window_level,
        window_width=args.window_width,
        normalization=args.normalize,
        batch_size=args.batch_size,
        disk_cache_dir=args.cache_dir if args.cache_dir else ("" if args.disk_cache else None),
        disk_cache_limit_mb=args.cache_limit_mb,
        precision=args.precision,
        hu_refine=args.hu_refine,
        combine=args.combine,
    )
    try:
        cfg.window()
    except ValueError as exc:
        raise SamlungError(str(exc)) from None
    return cfg


def _check_environment(args: argparse.Namespace) -> None:
    """Before any work: the cache folder and an explicit checkpoint make sense.

    A cache folder that is a file (``--cache-dir``, ``$SAMLUNG_CACHE_DIR``) and a
    checkpoint that is a folder or missing (``--checkpoint``,
    ``$SAMLUNG_CHECKPOINT_<ID>``) are each one line, before any input is read.
    """
    from .core.models import get_spec
    from .core.weights import cache_dir, check_folder, checkpoint_env_var, resolve_checkpoint

    if args.cache_dir:
        check_folder(Path(args.cache_dir).expanduser(), "--cache-dir")
    elif args.disk_cache:
        cache_dir()  # checks $SAMLUNG_CACHE_DIR
    spec = get_spec(args.model)
    if args.checkpoint or os.environ.get(checkpoint_env_var(spec.id)):
        resolve_checkpoint(spec, args.checkpoint, allow_download=False)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="napari-samlung",
        description="Segment lungs in chest CT and X-ray with Segment Anything models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="segment from ground-truth prompts and score (Table 1)")
    ev.add_argument("images", type=Path, help="image file, image folder, or a dataset ROOT")
    ev.add_argument("masks", type=Path, nargs="?", help="mask file or folder")
    _add_model_options(ev)
    ev.add_argument("--limit", type=_whole_number(1), help="only the first N cases")
    ev.add_argument(
        "--out",
        type=Path,
        help="folder for per_slice.csv, summary.json (and masks with --save-masks)",
    )
    ev.add_argument("--json", type=Path, help="write the summary as JSON here")
    ev.add_argument("--save-masks", action="store_true", help="also write predicted masks to --out")
    ev.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from --out/per_slice.csv"
    )
    ev.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ev.add_argument(
        "--workers",
        type=_whole_number(1),
        help="run cases on a local Dask cluster of N workers",
    )
    ev.add_argument("--scheduler", help="address of an existing dask.distributed scheduler")
    ev.set_defaults(func=cmd_evaluate)

    sg = sub.add_parser("segment", help="segment an image and write the mask")
    sg.add_argument("image", type=Path)
    src = sg.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--prompts-from",
        type=Path,
        metavar="MASK",
        help="build prompts on every slice from this lung mask",
    )
    src.add_argument(
        "--propagate-from",
        type=Path,
        metavar="PROMPTS.json",
        help="propagate through the volume from a few prompted slices",
    )
    src.add_argument(
        "--seed-from",
        type=Path,
        metavar="MASK",
        help="propagate from the ground truth of one slice (--seed-slice)",
    )
    src.add_argument(
        "--auto",
        action="store_true",
        help="no ground truth: prompts from the lungs found in the CT itself (CT only; "
        "see --combine)",
    )
    sg.add_argument(
        "--seed-slice",
        type=_whole_number(0),
        help="slice index for --seed-from, from 0 (default: middle)",
    )
    sg.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output mask file: .nii.gz (default), .png (2D), or .dcm (DICOM SEG, DICOM input)",
    )
    sg.add_argument(
        "--stats",
        type=Path,
        metavar="FILE.json",
        help="write each lung's volume (mL), slice range and HU mean/std, and the total",
    )
    sg.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _add_model_options(sg)
    sg.set_defaults(func=cmd_segment)

    cp = sub.add_parser("compare-paper", help="compare a per_slice.csv with the paper's results")
    cp.add_argument("csv", type=Path, help="per_slice.csv written by evaluate --out")
    cp.add_argument(
        "paper",
        type=Path,
        help="the paper's per-slice CSV, or a folder of them (e.g. shared/data/paper_results)",
    )
    cp.add_argument(
        "--threshold",
        type=_number(0.0, 1.0),
        default=0.05,
        help="Dice difference to list (0 to 1)",
    )
    cp.set_defaults(func=cmd_compare_paper)

    dm = sub.add_parser("demo", help="the main job: segment a phantom (or your data) and score")
    dm.add_argument("--headless", action="store_true", help="no window: run and print the summary")
    dm.add_argument("--image", type=Path, help="your image instead of the phantom")
    dm.add_argument("--labels", type=Path, help="lung labels for --image")
    _add_model_options(dm)
    dm.set_defaults(func=cmd_demo)
    return parser


# --------------------------------------------------------------------------- evaluate


def _progress_bar(total: int | None, desc: str, unit: str = "case"):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty() and os.environ.get("SAMLUNG_PROGRESS") != "1",
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .pipeline.evaluate import open_run

    cfg = _config(args)
    run, cases, problems = open_run(
        cfg,
        args.images,
        args.masks,
        limit=args.limit,
        out_dir=args.out,
        json_path=args.json,
        overwrite=args.overwrite,
        resume=args.resume,
        save_masks=args.save_masks,
    )
    with _progress_bar(len(cases), "evaluating") as bar:
        problems += run.run(
            cases,
            on_case_done=lambda name: bar.update(1),
            workers=args.workers,
            scheduler=args.scheduler,
        )
    summary = run.summary()
    print(f"model {cfg.model_id}  strategy {_strategy_text(cfg)}  window {cfg.window().describe()}")
    print(summary.format_table())
    if cfg.is_auto:
        print(
            f"false-positive slices (a mask where the ground truth has no lung): "
            f"{run.false_positive_slices}"
        )
    run.write_summary(run.payload(summary))
    for problem in problems:
        print(f"napari-samlung: skipped: {problem}", file=sys.stderr)
    return EXIT_SKIPPED if problems else 0


def _strategy_text(cfg) -> str:
    """The strategy, with the combination rule of an automatic run."""
    if cfg.is_auto:
        return f"{cfg.resolved_strategy()} ({cfg.combine})"
    return cfg.resolved_strategy()


# --------------------------------------------------------------------------- segment


def cmd_segment(args: argparse.Namespace) -> int:
    from .pipeline.export import check_label_output, measure_result, stats_payload, write_stats
    from .pipeline.segment import check_output, segment_image, write_result

    cfg = _config(args)
    inputs = [args.image, args.prompts_from, args.propagate_from, args.seed_from]
    check_output(args.output, inputs, args.overwrite)  # before any work
    check_label_output(args.output, args.image)
    if args.stats is not None:
        check_output(args.stats, inputs, args.overwrite)
    with _progress_bar(None, "segmenting", unit="slice") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = segment_image(
            args.image,
            cfg,
            prompts_from=args.prompts_from,
            propagate_from=args.propagate_from,
            seed_from=args.seed_from,
            seed_slice=args.seed_slice,
            auto=args.auto,
            progress=progress,
            output=args.output,
        )
    if result.written is not None:
        slices = result.labels.shape[0] if result.labels.ndim == 3 else 1
        print(f"lung found on {len(result.written)} of {slices} slices (combine {cfg.combine})")
    if result.propagation is not None:
        prop = result.propagation
        print(
            f"propagated over {prop.segmented_slices} slices "
            f"(stopped: {', '.join(prop.stop_reasons) or 'volume ends'})"
        )
    if result.scores:
        print(result.summary().format_table())
    volumes = measure_result(result, args.prompts_from or args.seed_from)
    print(volumes.summary_line())
    path = write_result(result, args.output, overwrite=args.overwrite)
    print(f"wrote {path}")
    if args.stats is not None:
        dice = result.summary().dice.mean if result.scores else None
        payload = stats_payload(volumes, result.image, dice)
        print(f"wrote {write_stats(args.stats, payload, overwrite=args.overwrite)}")
    return 0


# --------------------------------------------------------------------------- compare


def cmd_compare_paper(args: argparse.Namespace) -> int:
    from .pipeline.paper import compare_files, format_comparison

    rows = compare_files(args.csv, args.paper, args.threshold)
    print(format_comparison(rows, args.threshold))
    if not rows:
        raise SamlungError(f"no case of {args.csv} is in {args.paper}; check the case names")
    return 0


# --------------------------------------------------------------------------- demo


def _has_display() -> bool:
    if sys.platform != "linux":
        return True
    return bool(
        os.environ.get("DISPLAY")
        or os.environ.get("WAYLAND_DISPLAY")
        or os.environ.get("QT_QPA_PLATFORM") in ("offscreen", "minimal")
    )


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.headless and not _has_display():
        print(
            "napari-samlung: no display found; running the demo headless "
            "(use a desktop session to open napari)",
            file=sys.stderr,
        )
        args.headless = True
    if not args.headless:
        from ._napari.launch import qt_problem

        problem = qt_problem()
        if problem is not None:
            print(f"napari-samlung: {problem}; running the demo headless", file=sys.stderr)
            args.headless = True
    from .pipeline.segment import demo_inputs, segment_labelled, write_result

    image, labels = demo_inputs(args.image, args.labels)
    cfg = _config(args)
    name = image.source_path.name if image.source_path else "phantom"
    heading = (
        f"segmenting {name} {tuple(image.data.shape)} with {cfg.model_id}, strategy "
        f"{cfg.resolved_strategy()}, window {cfg.window().describe()}"
    )
    if not args.headless:
        from ._napari.launch import open_viewer

        if labels is not None:
            print(heading, flush=True)
        window = cfg.window()  # the window the heading names, as in the headless run
        open_viewer(
            image, labels, replace(cfg, window_level=window.level, window_width=window.width)
        )
        return 0
    if labels is None:
        raise SamlungError(
            "--headless needs --labels to build prompts (or drop --image to use the phantom)"
        )
    segmenter = cfg.make_segmenter()
    print(heading)
    result = segment_labelled(segmenter, image, labels, cfg, case=name)
    print(result.summary().format_table())
    out_dir = Path(tempfile.mkdtemp(prefix="napari-samlung-demo-"))
    out = out_dir / ("segmentation.nii.gz" if image.data.ndim == 3 else "segmentation.png")
    write_result(result, out)
    print(f"wrote {out} ({result.seconds:.1f} s)")
    return 0


# --------------------------------------------------------------------------- main


_ORIGINAL_SHOWWARNING = warnings.showwarning


def _ours(category: type[Warning], filename: str) -> bool:
    """A warning the user can act on: a SamlungWarning, or a UserWarning of this package."""
    return issubclass(category, SamlungWarning) or (
        issubclass(category, UserWarning) and "napari_samlung" in str(filename)
    )


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our own warnings (e.g. "only the first volume is used") as one console line each.

    Other warnings (numpy overflow or ComplexWarning, torch's FutureWarnings, a
    library's UserWarning) are nothing a user can act on: they are left out,
    unless warnings were asked for with ``python -W`` or ``$PYTHONWARNINGS``.
    """
    if _ours(category, filename):
        text = " ".join(str(message).split())
        print(f"napari-samlung: warning: {text}", file=sys.stderr)
    elif sys.warnoptions:
        _ORIGINAL_SHOWWARNING(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (one line, 2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    try:
        return int(args.func(args) or 0)
    except SamlungError as exc:
        print(f"napari-samlung: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.command == "evaluate":
            hint = "completed cases are saved in --out, continue with --resume"
        else:
            hint = "nothing was written"
        print(f"napari-samlung: interrupted; {hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


def console_main() -> int:
    """The installed ``napari-samlung`` command: ``main`` with our warnings as one line each
    and third-party warnings (RuntimeWarning, including numpy's ComplexWarning, and
    FutureWarning) off stderr (``python -W`` brings them back)."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy overflow, ComplexWarning
            warnings.simplefilter("ignore", FutureWarning)  # torch's weights_only and the like
            warnings.simplefilter("ignore", DeprecationWarning)
        warnings.showwarning = _show_warning
        return main()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(console_main())
