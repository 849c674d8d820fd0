"""The same volume segmented twice with the disk cache on.

Run 1 starts from an empty cache folder: every slice goes through the image
encoder and its embedding is written to disk.  Run 2 uses a new ``Segmenter``
(empty memory cache, as after restarting napari) on the same folder: every
embedding comes from disk, so the encoder must not run at all.

    python benchmarks/cache.py [--json FILE] [--volume id001] [--cache-dir DIR]
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
    base = Segmenter.from_registry(args.model, device=args.device, precision=args.precision)
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
            seg, image, labels, window=window, strategy=strategy, batch_size=args.batch_size
        )
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        return wall, seg, result, cpu, embedding_s[0]

    # warm-up on another segmenter without disk cache (first-call allocations)
    warm = Segmenter(base.model, base.spec, base.device, precision=base.precision)
    z = int(np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))[0])
    segment_from_labels(warm, image, labels, window=window, strategy=strategy, slices=[z])

    first_s, first, r1, first_cpu, first_emb = run()
    second_s, second, r2, second_cpu, second_emb = run()
    same = all(
        np.array_equal(r1.labels[s.slice_index], r2.labels[s.slice_index]) for s in r1.scores
    )
    result = {
        "model": base.model_id,
        "precision": base.precision,
        "volume": pairs[0][0].name,
        "slices": len(r1.scores),
        "first_s": first_s,
        "second_s": second_s,
        "ratio": first_s / second_s,
        "threads": torch.get_num_threads(),
        "first_main_thread_cpu_s": first_cpu,
        "second_main_thread_cpu_s": second_cpu,
        "cpu_ratio": first_cpu / second_cpu,
        "first_embedding_s": first_emb,
        "second_embedding_s": second_emb,
        "embedding_ratio": first_emb / second_emb,
        "second_decoding_and_scoring_s": second_s - second_emb,
        "encoder_calls_first": first.encoder_calls,
        "encoder_calls_second": second.encoder_calls,
        "disk_hits_second": cache.hits,
        "corrupt_files": cache.corrupt,
        "cache_files": len(cache),
        "cache_mb": cache.size_bytes() / 2**20,
        "same_labels": bool(same),
        "first_dice": float(np.mean([s.dice for s in r1.scores])),
        "second_dice": float(np.mean([s.dice for s in r2.scores])),
    }
    print(
        f"{result['volume']}: {result['slices']} slices with lung, {base.model_id} "
        f"({base.precision}), cache in {root}"
    )
    print(
        f"  run 1 (empty cache)  {first_s:7.2f} s (main thread CPU {first_cpu:6.2f} s)  "
        f"encoder calls {first.encoder_calls}"
    )
    print(
        f"  run 2 (from disk)    {second_s:7.2f} s (main thread CPU {second_cpu:6.2f} s)  "
        f"encoder calls {second.encoder_calls}"
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
