"""Prompt -> mask latency on a 512x512 slice whose embedding is already cached.

Times ``Segmenter.segment_slice(rgb, [prompt], validate=True)``: the widget's
path (validation, cache lookup by content hash, prompt encoder, mask decoder,
upscaling to full resolution, thresholding, left/right lung split).  Prompts
are boxes (tight per-lung boxes, a box around both lungs, and jittered boxes as
a person would draw them) on real 512x512 slices (Montgomery X-rays, COVID-19
CT slices); for models that accept points also point prompts and box+point.

For comparison the same prompts go through ``SamPredictor.predict`` (the
segment_anything reference; no lung split).

    python benchmarks/latency.py [--json FILE] [--model lite_medsam] [--prompts 60]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common  # noqa: E402


def build_segmenter(model_id: str, device: str, precision: str, random_weights: bool):
    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.models import get_spec

    if random_weights:
        spec = get_spec(model_id)
        import torch

        torch.manual_seed(0)
        model = spec.builder(None).to(device=device, dtype=torch.float32).eval()
        return Segmenter(model, spec, device, precision=precision)
    return Segmenter.from_registry(model_id, device=device, precision=precision)


def slices_512(data: Path, window, count_xray: int = 5) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, rgb, lung labels) of real 512x512 slices."""
    from napari_samlung.core.labels import to_lung_labels
    from napari_samlung.core.windowing import to_rgb

    out = []
    for path in _common.montgomery_images(data, count_xray):
        image, labels = _common.montgomery_pair(data, path)
        out.append((path.stem, to_rgb(image, window), labels))
    ct = data / "covid19_ct_slices"
    for stem in ("coronacases_001_%s_slice_110", "coronacases_001_%s_slice_98"):
        img, msk = ct / f"{stem % 'image'}.npy", ct / f"{stem % 'masks'}.npy"
        if img.exists() and msk.exists():
            image = np.load(img)
            if image.shape == (512, 512):
                out.append((img.stem, to_rgb(image, window), to_lung_labels(np.load(msk))))
    return out


def make_prompts(labels: np.ndarray, accepts_points: bool, rng: np.random.Generator, jitter: int):
    """Boxes (and point prompts) a person might give on this slice."""
    from napari_samlung.core.prompts import (
        POSITIVE,
        Prompt,
        box_xyxy_from_mask,
        paper_positive_point_rc,
        points_rc_to_xy,
    )

    prompts = []
    lungs = [int(v) for v in np.unique(labels) if v > 0]
    boxes = [box_xyxy_from_mask(labels == v) for v in lungs] + [box_xyxy_from_mask(labels > 0)]
    for box in boxes:
        prompts.append(("box", Prompt(box_xyxy=box)))
        for _ in range(jitter):
            noisy = box + rng.integers(-10, 11, 4).astype(np.float32)
            prompts.append(("box", Prompt(box_xyxy=noisy)))
    if accepts_points:
        for v in lungs:
            point = points_rc_to_xy(np.array([paper_positive_point_rc(labels == v)]))
            prompts.append(("point", Prompt(points_xy=point, point_labels=[POSITIVE])))
            prompts.append(
                (
                    "box+point",
                    Prompt(
                        points_xy=point,
                        point_labels=[POSITIVE],
                        box_xyxy=box_xyxy_from_mask(labels == v),
                    ),
                )
            )
    return prompts


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("latency", __doc__.splitlines()[0])
    p.add_argument("--model", default="lite_medsam")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--random-weights", action="store_true", help="build the model untrained")
    p.add_argument("--prompts", type=int, default=60, help="distinct prompts (>= 50)")
    p.add_argument("--rounds", type=int, default=3, help="timed passes over all prompts")
    p.add_argument("--no-baseline", action="store_true", help="skip SamPredictor.predict")
    args = p.parse_args(argv)
    _common.setup(args)

    import torch

    from napari_samlung.core.windowing import Window

    seg = build_segmenter(args.model, args.device, args.precision, args.random_weights)
    window = Window.preset(seg.spec.default_window)
    slices = slices_512(args.data, window)
    if not slices:
        sys.exit(f"no 512x512 slices found under {args.data}")
    rng = np.random.default_rng(0)
    per_slice = [make_prompts(lab, seg.accepts_points, rng, jitter=0) for _, _, lab in slices]
    jitter = 0
    while sum(len(x) for x in per_slice) < args.prompts:
        jitter += 1
        per_slice = [
            make_prompts(lab, seg.accepts_points, np.random.default_rng(i), jitter)
            for i, (_, _, lab) in enumerate(slices)
        ]
    # interleave slices, as a person moving through a volume would
    work = []
    for k in range(max(len(x) for x in per_slice)):
        for (name, rgb, _), prompts in zip(slices, per_slice, strict=True):
            if k < len(prompts):
                work.append((name, rgb, *prompts[k]))
    work = work[: max(args.prompts, 50)]

    for _, rgb, _ in slices:  # embeddings cached before timing
        seg.embed(rgb)
    for _, rgb, _, prompt in work[:5]:  # warm-up (builds the fast decoder)
        seg.segment_slice(rgb, [prompt], validate=True)
    calls = seg.encoder_calls

    times: dict[str, list[float]] = {}
    cpu: list[float] = []
    for _ in range(args.rounds):
        for _, rgb, kind, prompt in work:
            c0, t0 = time.thread_time(), time.perf_counter()
            labels, _ = seg.segment_slice(rgb, [prompt], validate=True)
            times.setdefault(kind, []).append((time.perf_counter() - t0) * 1000.0)
            cpu.append((time.thread_time() - c0) * 1000.0)
            assert labels.shape == rgb.shape[:2]
    assert seg.encoder_calls == calls, "an embedding was recomputed during the timed loop"
    all_ms = [t for v in times.values() for t in v]

    result = {
        "model": seg.model_id,
        "precision": seg.precision,
        "p50_ms": _common.percentile(all_ms, 50),
        "p95_ms": _common.percentile(all_ms, 95),
        "mean_ms": float(np.mean(all_ms)),
        "max_ms": float(np.max(all_ms)),
        "n": len(all_ms),
        # CPU time of the calling thread: all the work with --threads 1, a share of it
        # otherwise; much less sensitive than wall time to other processes on the CPU
        "main_thread_cpu_p50_ms": _common.percentile(cpu, 50),
        "threads": torch.get_num_threads(),
        "distinct_prompts": len(work),
        "rounds": args.rounds,
        "slices": [name for name, _, _ in slices],
        "slice_size_rc": list(slices[0][1].shape[:2]),
        "by_kind": {
            k: {
                "p50_ms": _common.percentile(v, 50),
                "p95_ms": _common.percentile(v, 95),
                "n": len(v),
            }
            for k, v in times.items()
        },
        "path": "Segmenter.segment_slice(rgb, [prompt], validate=True), embedding cached",
    }

    if not args.no_baseline:
        from segment_anything import SamPredictor

        predictor = SamPredictor(seg.model)
        base: list[float] = []
        base_cpu: list[float] = []
        by_slice: dict[str, list] = {}
        for name, rgb, _, prompt in work:
            by_slice.setdefault(name, [rgb]).append(prompt)
        with torch.inference_mode():
            for _ in range(args.rounds):
                for entries in by_slice.values():
                    rgb, prompts = entries[0], entries[1:]
                    predictor.set_image(rgb)
                    for prompt in prompts[:1]:  # warm-up
                        _predict_plain(predictor, prompt, seg.accepts_points)
                    for prompt in prompts:
                        c0, t0 = time.thread_time(), time.perf_counter()
                        _predict_plain(predictor, prompt, seg.accepts_points)
                        base.append((time.perf_counter() - t0) * 1000.0)
                        base_cpu.append((time.thread_time() - c0) * 1000.0)
        result["sampredictor_p50_ms"] = _common.percentile(base, 50)
        result["sampredictor_p95_ms"] = _common.percentile(base, 95)
        result["sampredictor_n"] = len(base)
        result["sampredictor_main_thread_cpu_p50_ms"] = _common.percentile(base_cpu, 50)

    print(
        f"{result['model']} ({result['precision']}): prompt -> mask on {result['slice_size_rc']} "
        f"slices, embedding cached: p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms "
        f"(n={result['n']}, {len(work)} distinct prompts)"
    )
    for kind, v in result["by_kind"].items():
        print(f"  {kind:10s} p50 {v['p50_ms']:.1f} ms  p95 {v['p95_ms']:.1f} ms  n={v['n']}")
    if "sampredictor_p50_ms" in result:
        print(
            f"  SamPredictor.predict (reference, same prompts): p50 "
            f"{result['sampredictor_p50_ms']:.1f} ms, p95 {result['sampredictor_p95_ms']:.1f} ms"
        )
    _common.write_json(args.json, result)
    return result


def _predict_plain(predictor, prompt, accepts_points: bool):
    kwargs = {"multimask_output": False}
    if prompt.box_xyxy is not None:
        kwargs["box"] = prompt.box_xyxy
    if accepts_points and prompt.has_points:
        kwargs["point_coords"] = prompt.points_xy
        kwargs["point_labels"] = prompt.point_labels
    masks, _, _ = predictor.predict(**kwargs)
    return masks


if __name__ == "__main__":
    main()
