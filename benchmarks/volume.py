"""Whole-run time of automatic segmentation from ground truth: ours vs the
paper-style baseline, in one process, same model, same prompts.

Cases: the four ``ct_volumes_128`` volumes and the first 40 Montgomery images
(``--quick``: one volume's first 16 lung slices and 5 images).

- ours: ``core.volume.segment_from_labels`` with a fresh ``Segmenter``
  (defaults: fast path, bf16 where the CPU has it, embeddings batched
  ``--batch-size`` slices at a time; no disk cache);
- baseline, written the way the paper's code works: for every slice with
  lung, ``SamPredictor.set_image`` then one ``SamPredictor.predict`` per prompt
  (``multimask_output=False``), no cache, no batching, fp32; the prompts come
  from the same ``core.prompts.prompts_from_labels`` call with the same
  strategy, and the per-prompt masks are merged by the same
  ``core.engine.combine_masks`` (box-only LiteMedSAM with the per-lung strategy:
  two ``predict`` calls per slice).

Both use the same model object (LiteMedSAM wrapped as a segment_anything
``Sam``, see ``core/models.py``), the same window and the same per-slice Dice.
Reading the files and building the model are not timed.

    python benchmarks/volume.py [--json FILE] [--quick] [--repeats 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common  # noqa: E402


def load_cases(
    data: Path, quick: bool
) -> list[tuple[str, np.ndarray, np.ndarray, list[int] | None]]:
    """(name, image, lung labels, slices or None for all)."""
    cases = []
    volumes = _common.ct_volumes(data)
    for image_path, mask_path in volumes[: 1 if quick else None]:
        image, labels = _common.ct_pair(image_path, mask_path)
        slices = None
        if quick:
            with_lung = [z for z in range(labels.shape[0]) if labels[z].any()]
            slices = with_lung[:16]
        cases.append((image_path.name.split(".")[0], image, labels, slices))
    for path in _common.montgomery_images(data, 5 if quick else 40):
        image, labels = _common.montgomery_pair(data, path)
        cases.append((path.stem, image, labels, None))
    return cases


def run_ours(seg, cases, window, strategy, batch_size: int):
    from napari_samlung.core.volume import segment_from_labels

    scores = []
    c0, t0 = time.thread_time(), time.perf_counter()
    for name, image, labels, slices in cases:
        result = segment_from_labels(
            seg,
            image,
            labels,
            window=window,
            strategy=strategy,
            slices=slices,
            batch_size=batch_size,
            case=name,
        )
        scores.extend(result.scores)
    return time.perf_counter() - t0, scores, time.thread_time() - c0


def run_baseline(model, accepts_points: bool, cases, window, strategy):
    """SamPredictor.set_image + predict per prompt for every slice with lung."""
    from segment_anything import SamPredictor

    from napari_samlung.core.embedding import Prediction
    from napari_samlung.core.masks import clean_labels, combine_masks
    from napari_samlung.core.metrics import score_slice
    from napari_samlung.core.prompts import get_strategy, prompts_from_labels
    from napari_samlung.core.volume import as_volume
    from napari_samlung.core.windowing import to_rgb

    strat = get_strategy(strategy)
    predictor = SamPredictor(model)
    scores = []
    c0, t0 = time.thread_time(), time.perf_counter()
    for name, image, labels, slices in cases:
        volume, truth = as_volume(image), as_volume(labels)
        indices = range(volume.shape[0]) if slices is None else slices
        for z in indices:
            if not truth[z].any():
                continue
            rgb = to_rgb(volume[z], window)
            predictor.set_image(rgb)
            prompts = prompts_from_labels(truth[z], strat, accepts_points)
            logits, ious = [], []
            for prompt in prompts:
                kwargs = {"multimask_output": strat.multimask, "return_logits": True}
                if prompt.box_xyxy is not None:
                    kwargs["box"] = prompt.box_xyxy
                if accepts_points and prompt.has_points:
                    kwargs["point_coords"] = prompt.points_xy
                    kwargs["point_labels"] = prompt.point_labels
                masks, iou, _ = predictor.predict(**kwargs)
                best = int(np.argmax(iou))
                logits.append(masks[best])
                ious.append(iou[best])
            stack = np.stack(logits).astype(np.float32)
            pred = Prediction(stack > 0.0, stack, np.asarray(ious, np.float32))
            out = combine_masks(pred, prompts)
            if strat.postprocess:
                out = clean_labels(out)
            scores.append(score_slice(out, truth[z], case=name, slice_index=z))
    return time.perf_counter() - t0, scores, time.thread_time() - c0


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("volume", __doc__.splitlines()[0])
    p.add_argument("--model", default="lite_medsam")
    p.add_argument("--strategy", default=None, help="prompt strategy (default: the model's)")
    p.add_argument("--window-preset", default=None, help="CT window (default: the model's)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="a small subset (smoke test)")
    p.add_argument("--baseline-first", action="store_true", help="run the baseline first")
    p.add_argument(
        "--repeats", type=int, default=1, help="runs of each side (medians; order alternates)"
    )
    args = p.parse_args(argv)
    _common.setup(args)

    import torch

    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.windowing import Window

    cases = load_cases(args.data, args.quick)
    seg = Segmenter.from_registry(args.model, device=args.device, precision=args.precision)
    strategy = args.strategy or seg.spec.default_strategy
    window = Window.preset(args.window_preset or seg.spec.default_window)

    # warm-up both paths on one slice (first-call allocations, the fast decoder)
    warm = [(cases[-1][0], cases[-1][1], cases[-1][2], None)]
    run_ours(
        Segmenter(seg.model, seg.spec, seg.device, precision=seg.precision),
        warm,
        window,
        strategy,
        args.batch_size,
    )
    run_baseline(seg.model, seg.accepts_points, warm, window, strategy)

    order = ["baseline", "ours"] if args.baseline_first else ["ours", "baseline"]
    runs: list[dict[str, tuple[float, list, float]]] = []
    for repeat in range(max(1, args.repeats)):
        timings: dict[str, tuple[float, list, float]] = {}
        # alternate the order between repeats, so that drift in the machine's
        # speed does not always favour the same side
        for which in order if repeat % 2 == 0 else order[::-1]:
            if which == "ours":
                fresh = Segmenter(seg.model, seg.spec, seg.device, precision=seg.precision)
                timings["ours"] = run_ours(fresh, cases, window, strategy, args.batch_size)
                encoder_calls = fresh.encoder_calls
            else:
                timings["baseline"] = run_baseline(
                    seg.model, seg.accepts_points, cases, window, strategy
                )
        runs.append(timings)

    def median(which: str, item: int) -> float:
        return float(np.median([r[which][item] for r in runs]))

    ours_s, ours_cpu = median("ours", 0), median("ours", 2)
    base_s, base_cpu = median("baseline", 0), median("baseline", 2)
    ours_scores, base_scores = runs[0]["ours"][1], runs[0]["baseline"][1]
    ours_dice = [s.dice for s in ours_scores]
    base_dice = [s.dice for s in base_scores]
    assert len(ours_dice) == len(base_dice), "both runs must score the same slices"
    paired = np.abs(np.asarray(ours_dice) - np.asarray(base_dice))

    result = {
        "model": seg.model_id,
        "precision": seg.precision,
        "strategy": strategy,
        "window": window.describe(),
        "batch_size": args.batch_size,
        "quick": args.quick,
        "cases": [c[0] for c in cases],
        "slices": len(ours_dice),
        "encoder_calls": encoder_calls,
        "ours_s": ours_s,
        "baseline_s": base_s,
        "ratio": base_s / ours_s,
        "ours_dice": float(np.mean(ours_dice)),
        "baseline_dice": float(np.mean(base_dice)),
        "dice_difference": float(np.mean(ours_dice) - np.mean(base_dice)),
        "max_slice_dice_difference": float(paired.max()),
        # CPU time of the main thread: all the work with --threads 1 (robust to
        # other processes on the CPU), a share of it otherwise
        "threads": torch.get_num_threads(),
        "ours_main_thread_cpu_s": ours_cpu,
        "baseline_main_thread_cpu_s": base_cpu,
        "cpu_ratio": base_cpu / ours_cpu,
        "ours_s_per_slice": ours_s / len(ours_dice),
        "baseline_s_per_slice": base_s / len(base_dice),
        "order": order,
        "repeats": [
            {
                "ours_s": r["ours"][0],
                "baseline_s": r["baseline"][0],
                "ratio": r["baseline"][0] / r["ours"][0],
            }
            for r in runs
        ],
        "ratio_median_of_repeats": float(
            np.median([r["baseline"][0] / r["ours"][0] for r in runs])
        ),
    }
    print(
        f"{len(cases)} cases, {result['slices']} slices with lung, {seg.model_id} "
        f"({seg.precision}), strategy {strategy}, window {window.describe()}"
    )
    print(
        f"  ours     {ours_s:8.1f} s (main thread CPU {ours_cpu:7.1f} s)  mean Dice "
        f"{result['ours_dice']:.4f}"
    )
    print(
        f"  baseline {base_s:8.1f} s (main thread CPU {base_cpu:7.1f} s)  mean Dice "
        f"{result['baseline_dice']:.4f}"
    )
    if len(runs) > 1:
        each = ", ".join(f"{r['ratio']:.2f}" for r in result["repeats"])
        print(f"  medians of {len(runs)} runs of each; ratio per repeat: {each}")
    print(
        f"  ours is {result['ratio']:.2f}x faster; mean Dice differs by "
        f"{result['dice_difference']:+.4f} (largest per-slice difference "
        f"{result['max_slice_dice_difference']:.4f})"
    )
    _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
