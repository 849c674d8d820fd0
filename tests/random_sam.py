"""Random-weight SAMs for plumbing tests and benchmarks: ``tiny_random`` and
``micro_random`` (hidden registry entries; their masks are meaningless).

Importing this module registers them.  ``tests/conftest.py`` imports it, and
:func:`register_in_dask_workers` makes the worker processes of a Dask run
import it too; ``benchmarks/_common.py`` imports it for the benchmarks.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

from napari_samlung.core.models import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    ModelSpec,
    load_weights,
    register_model,
)


def build_tiny_random_sam(checkpoint: Path | None = None) -> torch.nn.Module:
    """A tiny random-weight SAM (ViT encoder of width 32, depth 2, 1024 px) built by
    ``segment_anything``'s real builder."""
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    model = _build_sam(
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=[1],
        checkpoint=None,
    )
    if checkpoint is not None:
        load_weights(model, checkpoint, "vit_tiny")
    return model


def build_micro_random_sam(checkpoint: Path | None = None) -> torch.nn.Module:
    """An even smaller random SAM (256 px input, width 32) from segment_anything's own
    modules: the same code paths as tiny_random at a tenth of the encoder time."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(0)
    dim, size, patch = 32, 256, 16
    encoder = ImageEncoderViT(
        depth=1,
        embed_dim=32,
        img_size=size,
        mlp_ratio=2,
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=[0],
        window_size=4,
        out_chans=dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=(size // patch, size // patch),
        input_image_size=(size, size),
        mask_in_chans=4,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
        transformer_dim=dim,
        iou_head_depth=2,
        iou_head_hidden_dim=32,
    )
    model = Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder)
    if checkpoint is not None:
        load_weights(model, checkpoint, "vit_micro")
    return model


def _random_vit(state: dict, grid: int) -> bool:
    """A width-32 random ViT whose positional embedding has ``grid`` x ``grid`` cells."""
    w = state.get("image_encoder.patch_embed.proj.weight")
    pos = state.get("image_encoder.pos_embed")
    return w is not None and int(w.shape[0]) == 32 and pos is not None and pos.shape[1] == grid


register_model(
    ModelSpec(
        id="tiny_random",
        description="tiny random-weight SAM (tests and benchmarks of plumbing only)",
        arch="vit_tiny",
        input_size=1024,
        pixel_mean=SAM_PIXEL_MEAN,
        pixel_std=SAM_PIXEL_STD,
        accepts_points=True,
        builder=build_tiny_random_sam,
        needs_checkpoint=False,
        hidden=True,
        recognises=functools.partial(_random_vit, grid=64),
    )
)
register_model(
    ModelSpec(
        id="micro_random",
        description="micro random-weight SAM, 256 px (fast tests of plumbing only)",
        arch="vit_micro",
        input_size=256,
        pixel_mean=SAM_PIXEL_MEAN,
        pixel_std=SAM_PIXEL_STD,
        accepts_points=True,
        builder=build_micro_random_sam,
        needs_checkpoint=False,
        hidden=True,
        recognises=functools.partial(_random_vit, grid=16),
    )
)


def register_in_dask_workers() -> None:
    """Make every Dask worker process import this module (a worker preload).

    Worker processes start a fresh interpreter: they see the environment
    variable, and a Nanny hands them the parent's Dask configuration.
    """
    preload = [str(Path(__file__).resolve())]
    os.environ["DASK_DISTRIBUTED__WORKER__PRELOAD"] = repr(preload)
    if "dask" in sys.modules:
        import dask

        dask.config.set({"distributed.worker.preload": preload})
