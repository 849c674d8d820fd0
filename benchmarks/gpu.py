"""Image-encoder throughput on a GPU: slices/s and peak memory.

Models: SAM vit_b, vit_l, vit_h (random weights: the speed does not depend on
them) and LiteMedSAM (bundled weights); batch sizes 1, 8, 32; precision fp32
(segment_anything's own attention), fp32 with scaled-dot-product attention,
and bf16 autocast with scaled-dot-product attention
(``core.engine.use_sdpa_attention``).  An out-of-memory configuration is
recorded as such and the run goes on (``Segmenter`` halves a batch that runs
out of memory; the batch it ended up with is recorded as
``encoder_batch_after_oom``; the forward passes of the last timed call, which
``Segmenter`` sizes to the free memory, as ``encoder_passes``).

Without a CUDA GPU it says so and exits 0.  ``--cpu-smoke`` runs the same
code on the CPU with the tiny test model (to check the script itself).

    python benchmarks/gpu.py [--json FILE]   # default benchmarks/results/gpu_<card>.json
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import _common  # noqa: E402

MODELS = ("lite_medsam", "vit_b", "vit_l", "vit_h")
BATCHES = (1, 8, 32)


def card_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu"


def build(model_id: str, device, sdpa: bool, precision: str):
    import torch

    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.fast import use_sdpa_attention
    from napari_samlung.core.models import get_spec

    spec = get_spec(model_id)
    if model_id == "lite_medsam":
        seg = Segmenter.from_registry(model_id, device=str(device), precision=precision)
    else:
        torch.manual_seed(0)
        model = spec.builder(None).to(device=device, dtype=torch.float32).eval()
        seg = Segmenter(model, spec, device, precision=precision)
    switched = use_sdpa_attention(seg.model.image_encoder) if sdpa else 0
    return seg, switched


def measure(seg, batch: int, min_seconds: float, sync) -> dict:
    """Slices per second of ``Segmenter._encode`` (resize, normalise, encode) and peak memory."""
    import torch

    rng = np.random.default_rng(batch)
    images = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(batch)]
    cuda = seg.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(seg.device)
    seg._encode(images)  # warm-up (cuDNN autotune, allocator)
    sync()
    runs, t0 = 0, time.perf_counter()
    while True:
        seg._encode(images)
        sync()
        runs += 1
        elapsed = time.perf_counter() - t0
        if runs >= 2 and elapsed >= min_seconds:
            break
    out = {
        "slices_per_s": runs * batch / elapsed,
        "s_per_slice": elapsed / (runs * batch),
        # forward passes of the last call: smaller than the batch where the free
        # memory would not hold it (Segmenter sizes batches to the free memory)
        "encoder_passes": list(seg.last_encoder_batches),
    }
    if cuda:
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(seg.device) / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = _common.parser("gpu", __doc__.splitlines()[0])
    p.set_defaults(json=None, device="cuda")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    p.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per config")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU (script check)")
    args = p.parse_args(argv)

    import torch

    if args.cpu_smoke:
        device = torch.device("cpu")
        args.models, args.batches, args.min_seconds = ["tiny_random"], [1, 2], 0.0
        card = "cpu_smoke"

        def sync():
            return None
    else:
        if not torch.cuda.is_available():
            print("no CUDA GPU here: nothing to measure (run this on a GPU machine)")
            return 0
        device = torch.device(args.device if args.device.startswith("cuda") else "cuda")
        card = torch.cuda.get_device_name(device)

        def sync():
            torch.cuda.synchronize(device)

        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
        torch.backends.cudnn.allow_tf32 = False
    _common.quiet_warnings()

    configs = [("fp32", False), ("fp32", True), ("bf16", True)]
    results: dict = {"card": card, "batches": args.batches, "runs": []}
    for model_id in args.models:
        for precision, sdpa in configs:
            if model_id == "lite_medsam" and sdpa and precision == "fp32":
                continue  # TinyViT has no SAM-ViT attention blocks to switch
            try:
                seg, switched = build(model_id, device, sdpa, precision)
            except Exception as exc:  # weights missing, etc.
                print(f"{model_id}: cannot build ({exc})")
                break
            for batch in args.batches:
                row = {
                    "model": model_id,
                    "precision": precision,
                    "sdpa": bool(sdpa and switched),
                    "batch": batch,
                }
                seg._micro_batch = None  # the segmenter halves a batch that runs out of memory
                try:
                    row.update(measure(seg, batch, args.min_seconds, sync))
                except torch.OutOfMemoryError:
                    row["oom"] = True
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                if seg._micro_batch is not None and seg._micro_batch < batch:
                    # out of memory at this batch: the encoder ran in smaller pieces
                    row["encoder_batch_after_oom"] = seg._micro_batch
                results["runs"].append(row)
                if row.get("oom"):
                    print(f"{model_id:12s} {precision} sdpa={row['sdpa']!s:5s} b={batch:3d}  OOM")
                else:
                    mem = f"  peak {row['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in row else ""
                    halved = row.get("encoder_batch_after_oom")
                    note = f"  (out of memory: ran as batches of {halved})" if halved else ""
                    print(
                        f"{model_id:12s} {precision} sdpa={row['sdpa']!s:5s} b={batch:3d}  "
                        f"{row['slices_per_s']:8.1f} slices/s{mem}{note}"
                    )
            del seg
            if device.type == "cuda":
                torch.cuda.empty_cache()
    path = args.json or _common.RESULTS / f"gpu_{card_slug(card)}.json"
    _common.write_json(path, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
