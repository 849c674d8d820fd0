"""The same volume segmented twice with the disk cache on.

Run 1 starts from an empty cache folder: every slice goes through the image
encoder and its embedding is written to disk.  Run 2 uses a new ``Segmenter``
(empty memory cache, as after restarting napari) on the same folder: every
embedding comes from disk, so the encoder must not run at all.

Each pair of runs is repeated ``--repeats`` times (each from an emptied cache
folder); the JSON's ``first_s``/``second_s``/``ratio`` are the medians and
``repeats`` lists every pair.  ``--model vit_b --random-weights --max-slices 6``
runs the same measurement with a SAM ViT-B encoder (random weights: speed does
not depend on them), whose encoder costs ~50x LiteMedSAM's on a CPU.

    python benchmarks/cache.py [--json FILE] [--volume id001] [--cache-dir DIR] [--repeats 3]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("cache", __doc__.splitlines()[0])
    p.add_argument("--model", default="lite_medsam")
    p.add_argument("--volume", default="id001", help="which ct_volumes_128 volume")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--cache-dir", type=Path, help="cache folder (default: a fresh temporary one)")
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs; medians are reported")
    p.add_argument(
        "--random-weights", action="store_true", help="build the model with random weights"
    )
    p.add_argument("--max-slices", type=int, help="only the first N slices with lung")
    args = p.parse_args(argv)
    _common.setup(args)

    import torch

    from napari_samlung.core.cache import DiskCache
    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.volume import segment_from_labels
    from napari_samlung.core.windowing import Window

    pairs = [pr for pr in _common.ct_volumes(args.data) if pr[0].name.startswith(args.volume)]
    if not pairs:
        sys.exit(f"no volume {args.volume!r} in {args.data / 'ct_volumes_128'}")
    image, labels = _common.ct_pair(*pairs[0])
    if args.random_weights:
        from napari_samlung.core.models import get_spec

        torch.manual_seed(0)
        spec = get_spec(args.model)
        model = spec.builder(None).to(args.device, torch.float32).eval()
        base = Segmenter(model, spec, args.device, precision=args.precision)
    else:
        base = Segmenter.from_registry(args.model, device=args.device, precision=args.precision)
    with_lung = [z for z in range(labels.shape[0]) if labels[z].any()]
    slices = with_lung[: args.max_slices] if args.max_slices else None
    window = Window.preset(base.spec.default_window)
    strategy = base.spec.default_strategy

    root = args.cache_dir or Path(tempfile.mkdtemp(prefix="samlung-cache-bench-"))
    cache = DiskCache(root)
    cache.clear()

    def run() -> tuple[float, Segmenter, object, float, float]:
        seg = Segmenter(
            base.model, base.spec, base.device, precision=base.precision, disk_cache=cache
        )
        seg.fast_decoder  # noqa: B018 - built before timing, as in a running widget
        embedding_s = [0.0]
        embed_many = seg.embed_many

        def timed_embed_many(*a, **k):  # time spent getting embeddings (encoder or disk)
            t = time.perf_counter()
            try:
                return embed_many(*a, **k)
            finally:
                embedding_s[0] += time.perf_counter() - t

        seg.embed_many = timed_embed_many
        c0, t0 = time.thread_time(), time.perf_counter()
        result = segment_from_labels(
            seg,
            image,
            labels,
            window=window,
            strategy=strategy,
            slices=slices,
            batch_size=args.batch_size,
        )
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return wall, seg, result, cpu, embedding_s[0]

    # warm-up on another segmenter without disk cache (first-call allocations)
    warm = Segmenter(base.model, base.spec, base.device, precision=base.precision)
    z = int(np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))[0])
    segment_from_labels(warm, image, labels, window=window, strategy=strategy, slices=[z])

    pairs_out = []
    for _ in range(max(1, args.repeats)):
        cache.clear()
        hits0 = cache.hits
        first_s, first, r1, first_cpu, first_emb = run()
        second_s, second, r2, second_cpu, second_emb = run()
        same = all(
            np.array_equal(r1.labels[s.slice_index], r2.labels[s.slice_index]) for s in r1.scores
        )
        pairs_out.append(
            {
                "first_s": first_s,
                "second_s": second_s,
                "ratio": first_s / second_s,
                "first_main_thread_cpu_s": first_cpu,
                "second_main_thread_cpu_s": second_cpu,
                "first_embedding_s": first_emb,
                "second_embedding_s": second_emb,
                "second_decoding_and_scoring_s": second_s - second_emb,
                "encoder_calls_first": first.encoder_calls,
                "encoder_calls_second": second.encoder_calls,
                "disk_hits_second": cache.hits - hits0,
                "same_labels": bool(same),
            }
        )

    def med(key: str) -> float:
        return float(np.median([r[key] for r in pairs_out]))

    n_slices = len(r1.scores)
    result = {
        "model": base.model_id,
        "weights": "random" if args.random_weights else "real",
        "precision": base.precision,
        "volume": pairs[0][0].name,
        "slices": n_slices,
        "threads": torch.get_num_threads(),
        "repeats": pairs_out,
        "first_s": med("first_s"),
        "second_s": med("second_s"),
        "ratio": med("ratio"),
        "first_main_thread_cpu_s": med("first_main_thread_cpu_s"),
        "second_main_thread_cpu_s": med("second_main_thread_cpu_s"),
        "first_embedding_s": med("first_embedding_s"),
        "second_embedding_s": med("second_embedding_s"),
        "embedding_ratio": med("first_embedding_s") / med("second_embedding_s"),
        "second_decoding_and_scoring_s": med("second_decoding_and_scoring_s"),
        "second_ms_per_slice": 1000 * med("second_s") / n_slices,
        "encoder_calls_first": max(r["encoder_calls_first"] for r in pairs_out),
        "encoder_calls_second": max(r["encoder_calls_second"] for r in pairs_out),
        "disk_hits_second": min(r["disk_hits_second"] for r in pairs_out),
        "corrupt_files": cache.corrupt,
        "cache_files": len(cache),
        "cache_mb": cache.size_bytes() / 2**20,
        "same_labels": all(r["same_labels"] for r in pairs_out),
        "first_dice": float(np.mean([s.dice for s in r1.scores])),
        "second_dice": float(np.mean([s.dice for s in r2.scores])),
    }
    first_s, second_s = result["first_s"], result["second_s"]
    first_cpu, second_cpu = result["first_main_thread_cpu_s"], result["second_main_thread_cpu_s"]
    first_emb, second_emb = result["first_embedding_s"], result["second_embedding_s"]
    same = result["same_labels"]
    print(
        f"{result['volume']}: {result['slices']} slices with lung, {base.model_id} "
        f"({base.precision}), cache in {root}"
    )
    print(f"  medians of {len(pairs_out)} pairs of runs")
    print(
        f"  run 1 (empty cache)  {first_s:7.2f} s (main thread CPU {first_cpu:6.2f} s)  "
        f"encoder calls {result['encoder_calls_first']}"
    )
    print(
        f"  run 2 (from disk)    {second_s:7.2f} s (main thread CPU {second_cpu:6.2f} s)  "
        f"encoder calls {result['encoder_calls_second']}, "
        f"{result['second_ms_per_slice']:.1f} ms/slice"
    )
    print(
        f"  getting the embeddings: run 1 {first_emb:.2f} s (encoder), run 2 {second_emb:.3f} s "
        f"(disk): {result['embedding_ratio']:.0f}x"
    )
    print(
        f"  run 2 is {result['ratio']:.1f}x faster; same labels: {same}; cache "
        f"{result['cache_files']} files, {result['cache_mb']:.1f} MiB"
    )
    if args.cache_dir is None:
        shutil.rmtree(root, ignore_errors=True)
    _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
