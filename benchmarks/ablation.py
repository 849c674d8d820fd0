"""What each speed-up of the LiteMedSAM path buys, measured in one process.

Every variant runs on the same real 512x512 slice with ONE torch thread, and
the time reported is the CPU time of that thread (``time.thread_time``), the
median of ``--repeat`` runs.  CPU time of a single thread counts the work done
and hardly depends on other processes sharing the machine, unlike wall time;
variants are measured interleaved (round-robin), so slow phases of the
machine hit all of them alike.

    python benchmarks/ablation.py [--json FILE] [--repeat 5]
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import _common  # noqa: E402


def cpu_times(variants: dict, repeat: int) -> dict[str, float]:
    """Median thread CPU seconds per variant, measured round-robin."""
    for fn in variants.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            t0 = time.thread_time()
            fn()
            samples[name].append(time.thread_time() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def main(argv: list[str] | None = None) -> dict:
    p = _common.parser("ablation", __doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    args.threads = 1
    _common.setup(args)

    import torch
    from segment_anything import SamPredictor

    from napari_samlung.core.engine import Segmenter
    from napari_samlung.core.fast import FastDecoder, fuse_conv_bn, speed_up_tinyvit
    from napari_samlung.core.prompts import Prompt, box_xyxy_from_mask
    from napari_samlung.core.windowing import Window, to_rgb

    image_path = _common.montgomery_images(args.data, 1)[0]
    gray, labels = _common.montgomery_pair(args.data, image_path)
    rgb = to_rgb(gray, Window.preset("none"))
    box = box_xyxy_from_mask(labels == 1)
    prompt = [Prompt(box_xyxy=box)]

    seg = Segmenter.from_registry("lite_medsam", device="cpu", precision="bf16")
    model = seg.model
    x, _ = seg._to_input([rgb])
    x_cl = x.contiguous(memory_format=torch.channels_last)
    x4 = torch.cat([x] * 4).contiguous(memory_format=torch.channels_last)

    folded = fuse_conv_bn(copy.deepcopy(model.image_encoder)).eval()
    folded_cl = copy.deepcopy(folded).to(memory_format=torch.channels_last)
    attn_cl = copy.deepcopy(folded_cl)
    speed_up_tinyvit(attn_cl, torch.bfloat16, fuse_ops=False)
    default_bf16 = seg.encoder  # what the segmenter runs (bf16)
    fused_plain_attn = copy.deepcopy(folded_cl)
    speed_up_tinyvit(fused_plain_attn, torch.bfloat16)
    for module in fused_plain_attn.modules():  # back to TinyViT's own attention
        if type(module).__name__ == "Attention":
            module.__dict__.pop("forward", None)
    seg32 = Segmenter(model, seg.spec, "cpu", precision="fp32")

    def enc(module, inp, bf16: bool):
        def run():
            with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                return module(inp)

        return run

    predictor = SamPredictor(model)
    encoder_variants = {
        "SamPredictor.set_image (fp32, PIL resize)": lambda: predictor.set_image(rgb),
        "encoder fp32": enc(model.image_encoder, x, False),
        "encoder bf16 autocast": enc(model.image_encoder, x, True),
        "+ BatchNorm folded": enc(folded, x, True),
        "+ channels-last": enc(folded_cl, x_cl, True),
        "+ bf16 window attention": enc(attn_cl, x_cl, True),
        "+ oneDNN conv/linear+GELU fusion (default)": enc(default_bf16, x_cl, True),
        "  (the same without the bf16 window attention)": enc(fused_plain_attn, x_cl, True),
        "default, batch of 4 (per slice x4)": enc(default_bf16, x4, True),
        "fp32 with folding + fusion (precision=fp32)": lambda: seg32._encode([rgb]),
        "Segmenter.embed, cache miss (default)": lambda: (seg.clear_cache(), seg.embed(rgb)),
    }
    enc_s = cpu_times(encoder_variants, args.repeat)
    enc_s["default, batch of 4 (per slice x4)"] /= 4

    emb = seg.embed(rgb)
    emb32 = seg32.embed(rgb)
    reference = Segmenter(model, seg.spec, "cpu", precision="fp32", fast=False)
    emb_ref = reference.embed(rgb)
    with torch.inference_mode():
        predictor.set_image(rgb)
    fast32 = FastDecoder(model, torch.float32)
    fast16 = seg.fast_decoder
    sparse, _ = model.prompt_encoder(
        points=None,
        boxes=torch.from_numpy(seg._transform_xy(box.reshape(2, 2), emb).reshape(1, 4)),
        masks=None,
    )

    def decode(decoder, embedding):
        def run():
            with torch.inference_mode():
                return decoder(embedding, sparse)

        return run

    def plain_decode():
        with torch.inference_mode():
            return model.mask_decoder(
                image_embeddings=emb_ref.features,
                image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=model.prompt_encoder.no_mask_embed.weight.reshape(
                    1, -1, 1, 1
                ).expand(1, -1, 64, 64),
                multimask_output=False,
            )

    decoder_variants = {
        "SamPredictor.predict (fp32)": lambda: predictor.predict(box=box, multimask_output=False),
        "mask decoder module (fp32)": plain_decode,
        "FastDecoder fp32": decode(fast32, emb32),
        "FastDecoder bf16 (default)": decode(fast16, emb),
        "Segmenter.predict fast=False (fp32)": lambda: reference.predict(emb_ref, prompt),
        "Segmenter.predict (default)": lambda: seg.predict(emb, prompt),
        "Segmenter.segment_slice, validate=True (default)": lambda: seg.segment_slice(
            rgb, prompt, validate=True
        ),
    }
    dec_s = cpu_times(decoder_variants, max(args.repeat, 10) * 2)

    result = {
        "slice": image_path.name,
        "threads": torch.get_num_threads(),
        "clock": "thread_time (CPU seconds of the one torch thread)",
        "encoder_cpu_s": enc_s,
        "decoder_cpu_ms": {k: v * 1000.0 for k, v in dec_s.items()},
    }
    print(f"one thread, CPU time, {image_path.name} (512x512):")
    for name, value in enc_s.items():
        print(f"  {name:50s} {value:7.3f} s")
    for name, value in dec_s.items():
        print(f"  {name:50s} {value * 1000:7.1f} ms")
    _common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
