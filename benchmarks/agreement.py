"""Do the fast path's masks agree with the plain ``SamPredictor``'s?  On many real slices.

For every other CT slice with lung of the four ``ct_volumes_128`` volumes, the
five COVID-19 CT slices and the first 40 Montgomery X-rays: one box per lung
(the per-lung strategy), decoded by

- the plain path: ``SamPredictor.set_image`` + ``predict`` (fp32, PIL resize),
- ``Segmenter`` with its defaults (fast path, bf16 where the CPU has it),
- ``Segmenter(precision="fp32")`` (fast path in fp32),

all on the same model and the same windowed RGB slice.  Reported per path: the
Dice of every mask against the plain mask; its minimum, mean and the pooled Dice
(all masks' overlaps summed); the share of masks at Dice >= 0.995, overall and
by mask size; and each mask below 0.995 with its size in pixels.

    python benchmarks/agreement.py [--json FILE] [--ct-step 2] [--xrays 40]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common  # noqa: E402

THRESHOLD = 0.995
SIZE_BINS = ((0, 1000), (1000, 4600), (4600, 10**12))


def load_slices(data: Path, ct_step: int, xrays: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, windowed RGB uint8 slice, lung labels) for every slice measured."""
    from napari_samlung.core.labels import to_lung_labels
    from napari_samlung.core.models import get_spec
    from napari_samlung.core.windowing import Window, to_rgb

    ct_window = Window.preset(get_spec("lite_medsam").default_window)
    out = []
    for image_path, mask_path in _common.ct_volumes(data):
        image, labels = _common.ct_pair(image_path, mask_path)
        with_lung = [z for z in range(labels.shape[0]) if labels[z].any()]
        for z in with_lung[::ct_step]:
            name = f"{image_path.name.split('.')[0]}:{z}"
            out.append((name, to_rgb(image[z], ct_window), labels[z]))
    for img in sorted((data / "covid19_ct_slices").glob("*_image_slice_*.npy")):
        msk = img.with_name(img.name.replace("_image_", "_masks_"))
        if msk.exists():
            rgb = to_rgb(np.load(img).astype(np.float32), ct_window)
            out.append((img.stem, rgb, to_lung_labels(np.load(msk))))
    for path in _common.montgomery_images(data, xrays):
        image, labels = _common.montgomery_pair(data, path)
        out.append((path.stem, to_rgb(image, Window.preset("none")), labels))
    return out


def summarize(rows: list[dict]) -> dict:
    d = np.array([r["dice"] for r in rows])
    inter = sum(r["intersection"] for r in rows)
    total = sum(r["plain_px"] + r["fast_px"] for r in rows)
    by_size = {}
    for lo, hi in SIZE_BINS:
        sel = [r["dice"] for r in rows if lo <= r["plain_px"] < hi]
        label = f"{lo}-{hi}px" if hi < 10**12 else f">={lo}px"
        by_size[label] = {
            "n": len(sel),
            "share_at_least_0_995": float(np.mean(np.array(sel) >= THRESHOLD)) if sel else None,
            "min": float(min(sel)) if sel else None,
        }
    return {
        "n_masks": len(rows),
        "min": float(d.min()),
        "mean": float(d.mean()),
        "pooled_dice": 2 * inter / total,
        "share_at_least_0_995": float(np.mean(d >= THRESHOLD)),
        "by_plain_mask_size": by_size,
        "below_0_995": [
            {k: r[k] for k in ("slice", "lung", "plain_px", "dice")}
            for r in sorted(rows, key=lambda r: r["dice"])
            if r["dice"] < THRESHOLD
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("agreement", __doc__.splitlines()[0])
    p.add_argument("--ct-step", type=int, default=2, help="every Nth CT slice with lung")
    p.add_argument("--xrays", type=int, default=40, help="first N Montgomery X-rays")
    args = p.parse_args(argv)
    _common.setup(args)

    import torch
    from segment_anything import SamPredictor

    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.metrics import dice
    from napari_samlung.core.prompts import Prompt, box_xyxy_from_mask

    slices = load_slices(args.data, args.ct_step, args.xrays)
    default = Segmenter.from_registry("lite_medsam", device=args.device)
    paths = {
        f"fast_{default.precision}": default,
        "fast_fp32": Segmenter(default.model, default.spec, default.device, precision="fp32"),
    }
    predictor = SamPredictor(default.model)
    rows: dict[str, list[dict]] = {name: [] for name in paths}
    for i, (name, rgb, labels) in enumerate(slices):
        with torch.inference_mode():
            predictor.set_image(rgb)
        embs = {key: seg.embed(rgb) for key, seg in paths.items()}
        for lung in [int(v) for v in np.unique(labels) if v > 0]:
            box = box_xyxy_from_mask(labels == lung)
            plain = predictor.predict(box=box, multimask_output=False)[0][0]
            for key, seg in paths.items():
                fast = seg.predict(embs[key], [Prompt(box_xyxy=box)]).masks[0]
                rows[key].append(
                    {
                        "slice": name,
                        "lung": lung,
                        "plain_px": int(plain.sum()),
                        "fast_px": int(fast.sum()),
                        "intersection": int(np.logical_and(fast, plain).sum()),  # for pooling
                        "dice": dice(fast, plain),
                    }
                )
        for seg in paths.values():
            seg.clear_cache()
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(slices)} slices", flush=True)

    result = {"slices": len(slices), "threshold": THRESHOLD}
    for key, rs in rows.items():
        s = summarize(rs)
        result[key] = s
        print(
            f"{key:10s} {s['n_masks']} masks: Dice to plain min {s['min']:.4f}, mean "
            f"{s['mean']:.4f}, pooled {s['pooled_dice']:.5f}; >= {THRESHOLD}: "
            f"{100 * s['share_at_least_0_995']:.1f} %"
        )
        for label, b in s["by_plain_mask_size"].items():
            if b["n"]:
                print(
                    f"{'':10s}   masks {label:>12s}: n={b['n']:3d}, >= {THRESHOLD}: "
                    f"{100 * b['share_at_least_0_995']:.1f} %, min {b['min']:.4f}"
                )
    _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
