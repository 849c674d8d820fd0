"""A simulated annotator on each CT volume: automatic start, then corrections on the worst slice.

    python benchmarks/annotator.py [--max-interactions 10] [--json FILE] [--plot PNG]
                                   [--model lite_medsam] [--data DIR] [--volumes N]

For each ct_volumes_128 volume:

- k = 0: the automatic segmentation (no ground truth: ``core.auto``);
- k = 1: the middle lung slice is prompted with per-lung ground-truth boxes and
  propagated (guarded by the CT's air) through the volume;
- each further interaction puts ground-truth per-lung boxes on the slice that is
  worst at that moment (lowest Dice; a slice with a mask but no true lung counts
  as Dice 0 and is cleared instead) and propagates again: each prompted slice
  owns the slices nearer to it than to any other, so only that stretch changes.

It prints, for k up to ``--max-interactions``, the mean Dice over slices with
lung, the slices with a mask where the ground truth has none, the seconds per
interaction, and how many interactions it takes to come within 0.01 of the
every-slice ground-truth-prompted Dice (the default ground-truth run, refined
with the CT's air).  ``--json`` writes the figures, ``--plot`` a PNG (needs
matplotlib): Dice against interactions, one line per volume, each volume's
every-slice level dashed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ct_volumes, machine, parser, quiet_warnings, setup, write_json  # noqa: E402
from napari_samlung.core.auto import segment_auto  # noqa: E402
from napari_samlung.core.engine import Segmenter  # noqa: E402
from napari_samlung.core.lungs_hu import find_lung_candidates  # noqa: E402
from napari_samlung.core.metrics import dice  # noqa: E402
from napari_samlung.core.models import get_spec  # noqa: E402
from napari_samlung.core.prompts import per_lung_prompts  # noqa: E402
from napari_samlung.core.propagation import Seed, propagate  # noqa: E402
from napari_samlung.core.volume import segment_from_labels  # noqa: E402
from napari_samlung.core.windowing import Window  # noqa: E402
from napari_samlung.io import read_image, read_mask  # noqa: E402

#: A volume that never comes within 0.01 counts as this many interactions in the mean.
NEVER = 11


def slice_dice(labels: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    """Dice per slice that has true lung or a mask (a mask without lung scores 0)."""
    return {
        z: dice(labels[z] > 0, truth[z] > 0)
        for z in range(len(truth))
        if truth[z].any() or labels[z].any()
    }


def mean_dice(labels: np.ndarray, truth: np.ndarray) -> float:
    """Mean Dice over the slices with true lung."""
    return float(
        np.mean([dice(labels[z] > 0, truth[z] > 0) for z in range(len(truth)) if truth[z].any()])
    )


def false_slices(labels: np.ndarray, truth: np.ndarray) -> int:
    """Slices given a mask where the ground truth has no lung."""
    return sum(1 for z in range(len(truth)) if labels[z].any() and not truth[z].any())


def simulate(seg: Segmenter, image, truth: np.ndarray, window: Window, k_max: int) -> dict:
    """One volume's correction loop; returns its JSON entry."""
    data, spacing = image.data, image.spacing_zyx_mm
    every = (
        segment_from_labels(seg, data, truth, window=window, refine=True, spacing_zyx_mm=spacing)
        .summary()
        .dice.mean
    )
    t0 = time.perf_counter()
    auto = segment_auto(seg, data, window=window, spacing_zyx_mm=spacing).labels
    auto_seconds = time.perf_counter() - t0
    candidates = find_lung_candidates(data, spacing).lung_labels
    labels = auto.copy()
    dices, falses, seconds = [mean_dice(labels, truth)], [false_slices(labels, truth)], []
    with_lung = np.flatnonzero(truth.reshape(len(truth), -1).any(axis=1))
    seeds: dict[int, Seed] = {}
    cleared: set[int] = set()
    skipped: set[int] = set()
    for k in range(1, k_max + 1):
        if k == 1:
            z = int(with_lung[len(with_lung) // 2])
        else:
            scores = slice_dice(labels, truth)
            done = seeds.keys() | cleared | skipped
            candidates_z = [z for z in scores if z not in done]
            if not candidates_z:
                break
            z = min(candidates_z, key=lambda s: scores[s])
        t1 = time.perf_counter()
        boxes = [
            p
            for p in per_lung_prompts(truth[z], accepts_points=seg.accepts_points)
            if p.box_xyxy[2] - p.box_xyxy[0] >= 1 and p.box_xyxy[3] - p.box_xyxy[1] >= 1
        ]  # a lung one pixel wide cannot be boxed: the annotator skips it
        if not boxes and truth[z].any():
            skipped.add(z)  # nothing to draw here: leave the slice as it is
            seconds.append(time.perf_counter() - t1)
            dices.append(mean_dice(labels, truth))
            falses.append(false_slices(labels, truth))
            continue
        if truth[z].any():
            seeds[z] = Seed(z, boxes)
            result = propagate(
                seg,
                data,
                list(seeds.values()),
                window=window,
                candidates=candidates,
                spacing_zyx_mm=spacing,
            )
            labels = auto.copy()
            for zz in cleared:
                labels[zz] = 0
            for zz in result.written:
                labels[zz] = result.labels[zz]
        else:  # a mask where there is no lung: the annotator clears the slice
            cleared.add(z)
            labels[z] = 0
        seconds.append(time.perf_counter() - t1)
        dices.append(mean_dice(labels, truth))
        falses.append(false_slices(labels, truth))
    within = next((k for k, d in enumerate(dices) if d >= every - 0.01), None)
    return {
        "every_slice_dice": round(float(every), 4),
        "dice_by_interactions": [round(d, 4) for d in dices],
        "false_positive_slices_by_interactions": falses,
        "interactions_to_within_0_01": within,
        "seconds_per_interaction": round(float(np.mean(seconds)), 3) if seconds else None,
        "seconds_automatic": round(auto_seconds, 3),
    }


def plot(volumes: list[dict], path: Path) -> None:
    """Dice against interactions, one line per volume, the every-slice levels dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib: pip install matplotlib (or pip install '.[testing]')"
        ) from None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for i, vol in enumerate(volumes):
        colour = f"C{i}"
        ys = vol["dice_by_interactions"]
        ax.plot(range(len(ys)), ys, marker="o", color=colour, label=vol["name"])
        ax.axhline(vol["every_slice_dice"], color=colour, linestyle="--", linewidth=1)
    ax.set_xlabel("interactions (0 = automatic; then ground-truth boxes on the worst slice)")
    ax.set_ylabel("mean Dice, slices with lung")
    ax.set_title("Correction loop on ct_volumes_128 (dashed: ground-truth boxes on every slice)")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser("annotator", __doc__.splitlines()[0])
    p.add_argument("--model", default="lite_medsam")
    p.add_argument("--max-interactions", type=int, default=10)
    p.add_argument("--volumes", type=int, help="only the first N volumes (quick check)")
    p.add_argument("--plot", type=Path, help="write the Dice-vs-interactions plot (PNG)")
    args = p.parse_args(argv)
    setup(args)
    quiet_warnings()
    spec = get_spec(args.model)
    seg = Segmenter.from_registry(args.model, device=args.device, cache_limit_mb=2048)
    window = Window.preset(spec.default_window)
    volumes = []
    for image_path, mask_path in ct_volumes(args.data)[: args.volumes]:
        image = read_image(image_path)
        truth = read_mask(mask_path, like=image)
        entry = {"name": image_path.name.split("-")[0]}
        entry.update(simulate(seg, image, truth, window, args.max_interactions))
        volumes.append(entry)
        print(
            f"{entry['name']}: every-slice {entry['every_slice_dice']:.4f}; Dice by k "
            + " ".join(f"{d:.3f}" for d in entry["dice_by_interactions"])
            + f"; lung-free slices written by k {entry['false_positive_slices_by_interactions']}"
            + f"; within 0.01 after {entry['interactions_to_within_0_01']}"
            + f"; {entry['seconds_per_interaction']} s/interaction",
            flush=True,
        )
    reached = [
        v["interactions_to_within_0_01"] if v["interactions_to_within_0_01"] is not None else NEVER
        for v in volumes
    ]
    payload = {
        "model": args.model,
        "machine": machine(),
        "volumes": volumes,
        "mean_interactions_to_within_0_01": float(np.mean(reached)) if reached else None,
    }
    print(f"mean interactions to within 0.01: {payload['mean_interactions_to_within_0_01']}")
    write_json(args.json, payload)
    if args.plot:
        plot(volumes, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
