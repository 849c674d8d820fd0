"""Image-encoder time per slice, per model: one slice at a time and batched.

For each model: ``Segmenter.embed`` on distinct real slices (cache cleared, so
every call runs the encoder), and ``Segmenter.embed_many`` with
``--batch-size``.  For LiteMedSAM also the plain ``SamPredictor.set_image``
time (the paper-style path, fp32, PIL resize) and the agreement of the masks of
both paths (Dice of fast vs plain on per-lung boxes of real slices).

Models: lite_medsam (real weights), tiny_random; vit_b with random weights only
with ``--include-vit`` (about 11 s per slice on a 2-core CPU).

    python benchmarks/embed.py [--json FILE] [--include-vit] [--slices 6]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common  # noqa: E402


def real_slices(data: Path, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 grey image, lung labels): Montgomery X-rays and COVID-19 CT slices."""
    from napari_samlung.core.labels import to_lung_labels
    from napari_samlung.core.windowing import Window, window_to_uint8

    out = []
    ct = data / "covid19_ct_slices"
    window = Window.preset("narrow-lung")
    for img in sorted(ct.glob("*_image_slice_*.npy")):
        msk = img.with_name(img.name.replace("_image_", "_masks_"))
        if msk.exists():
            out.append((window_to_uint8(np.load(img), window), to_lung_labels(np.load(msk))))
    for path in _common.montgomery_images(data, max(count, 1)):
        out.append(_common.montgomery_pair(data, path))
    return out


def time_model(seg, images: list[np.ndarray], batch_size: int, repeat: int) -> dict:
    """Seconds per slice of ``embed`` (one at a time) and ``embed_many`` (batched)."""
    seg.clear_cache()
    seg.embed(images[0])  # warm-up: builds the optimised encoder, allocator warm
    singles, cpu = [], []
    for _ in range(repeat):
        for img in images:
            seg.clear_cache()
            c0, t0 = time.thread_time(), time.perf_counter()
            seg.embed(img)
            singles.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    batched = []
    for _ in range(repeat):
        seg.clear_cache()
        t0 = time.perf_counter()
        seg.embed_many(images, batch_size=batch_size)
        batched.append((time.perf_counter() - t0) / len(images))
    seg.clear_cache()
    return {
        "s_per_slice": float(np.median(singles)),
        "batched_s_per_slice": float(np.median(batched)),
        "batch_size": batch_size,
        "n": len(singles),
        "main_thread_cpu_s_per_slice": float(np.median(cpu)),
        "precision": seg.precision,
    }


def encoder_batches(seg, images: list[np.ndarray], sizes=(1, 2, 4)) -> dict:
    """Raw encoder seconds per slice at several batch sizes (the module the
    segmenter runs, called directly: no cache, no micro-batching)."""
    import torch

    out = {}
    for size in sizes:
        x, _ = seg._to_input((images * size)[:size])
        if seg._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), seg._autocast():
            seg.encoder(x)  # warm-up
            t0 = time.perf_counter()
            seg.encoder(x)
            out[str(size)] = (time.perf_counter() - t0) / size
    return out


def plain_set_image(model, images: list[np.ndarray], repeat: int) -> float:
    import torch
    from segment_anything import SamPredictor

    predictor = SamPredictor(model)
    with torch.inference_mode():
        predictor.set_image(images[0])
        times, cpu = [], []
        for _ in range(repeat):
            for img in images:
                c0, t0 = time.thread_time(), time.perf_counter()
                predictor.set_image(img)
                times.append(time.perf_counter() - t0)
                cpu.append(time.thread_time() - c0)
    return float(np.median(times)), float(np.median(cpu))


def agreement(seg, model, slices) -> dict:
    """Dice of the fast path's masks vs SamPredictor's (fp32, plain) on per-lung boxes."""
    import torch
    from segment_anything import SamPredictor

    from napari_samlung.core.metrics import dice
    from napari_samlung.core.prompts import Prompt, box_xyxy_from_mask
    from napari_samlung.core.windowing import Window, to_rgb

    predictor = SamPredictor(model)
    scores = []
    for gray, labels in slices:
        rgb = to_rgb(gray, Window.preset("none"))
        with torch.inference_mode():
            predictor.set_image(rgb)
        emb = seg.embed(rgb)
        for value in [int(v) for v in np.unique(labels) if v > 0]:
            box = box_xyxy_from_mask(labels == value)
            plain, _, _ = predictor.predict(box=box, multimask_output=False)
            fast = seg.predict(emb, [Prompt(box_xyxy=box)]).masks[0]
            scores.append(float(dice(fast, plain[0])))
    return {"min": float(np.min(scores)), "mean": float(np.mean(scores)), "n": len(scores)}


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("embed", __doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=6, help="distinct slices per model")
    p.add_argument("--repeat", type=int, default=3, help="passes over the slices")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--include-vit", action="store_true", help="also vit_b (random weights)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = p.parse_args(argv)
    _common.setup(args)

    import torch

    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.models import get_spec
    from napari_samlung.core.windowing import Window, to_rgb

    slices = real_slices(args.data, args.slices)
    images = [to_rgb(g, Window.preset("none")) for g, _ in slices]
    # distinct 512x512 slices for timing (X-rays and CT), sizes as the user has them
    timing = [im for im in images if im.shape[:2] == (512, 512)][: args.slices]

    result: dict = {
        "slices": len(timing),
        "slice_size_rc": list(timing[0].shape[:2]),
        "threads": torch.get_num_threads(),
    }
    models = ["lite_medsam", "tiny_random"] + (["vit_b"] if args.include_vit else [])
    for model_id in models:
        if model_id == "vit_b":
            torch.manual_seed(0)
            spec = get_spec("vit_b")
            model = spec.builder(None).to(args.device, torch.float32).eval()
            seg = Segmenter(model, spec, args.device, precision=args.precision)
            repeat = 1
            imgs = timing[:2]
        else:
            seg = Segmenter.from_registry(model_id, device=args.device, precision=args.precision)
            repeat = args.repeat
            imgs = timing
        entry = time_model(seg, imgs, args.batch_size, repeat)
        if model_id != "vit_b":
            entry["encoder_only_s_per_slice_by_batch"] = encoder_batches(seg, imgs)
        result[model_id] = entry
        print(
            f"{model_id:12s} {entry['precision']}: {entry['s_per_slice']:.3f} s/slice one at a "
            f"time, {entry['batched_s_per_slice']:.3f} s/slice with embed_many(batch_size="
            f"{args.batch_size})"
        )
        if model_id == "lite_medsam":
            (
                result["lite_medsam_sampredictor_s_per_slice"],
                result["lite_medsam_sampredictor_main_thread_cpu_s_per_slice"],
            ) = plain_set_image(seg.model, imgs, repeat)
            print(
                f"{'':12s} SamPredictor.set_image (plain fp32): "
                f"{result['lite_medsam_sampredictor_s_per_slice']:.3f} s/slice"
            )
            agree = agreement(seg, seg.model, slices)
            result["lite_medsam_fast_vs_plain_dice"] = agree
            print(
                f"{'':12s} masks fast vs plain (per-lung boxes, {agree['n']} masks on real "
                f"slices): Dice min {agree['min']:.4f}, mean {agree['mean']:.4f}"
            )
            ref = Segmenter(seg.model, seg.spec, seg.device, precision="fp32", fast=False)
            result["lite_medsam_reference_fp32_s_per_slice"] = time_model(
                ref, imgs[:2], args.batch_size, 1
            )["s_per_slice"]
        del seg
    _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
