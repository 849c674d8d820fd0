"""SAM ViT image encoder attention through ``F.scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def use_sdpa_attention(image_encoder: torch.nn.Module) -> int:
    """Switch the attention blocks of a SAM ViT image encoder to
    ``F.scaled_dot_product_attention`` (the relative-position terms become its
    additive mask).  Same arithmetic; lets CUDA use fused kernels.  Returns the
    number of blocks switched."""
    import types

    try:
        from segment_anything.modeling.image_encoder import Attention as VitAttention
    except ImportError:  # pragma: no cover
        return 0
    count = 0
    for module in image_encoder.modules():
        if isinstance(module, VitAttention):
            module.forward = types.MethodType(_vit_sdpa_forward, module)
            count += 1
    return count


def _vit_sdpa_forward(self, x: torch.Tensor) -> torch.Tensor:
    from segment_anything.modeling.image_encoder import get_rel_pos

    batch, rows, cols, _ = x.shape
    qkv = self.qkv(x).reshape(batch, rows * cols, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (b, heads, n, d)
    bias = None
    if self.use_rel_pos:
        rel_h = get_rel_pos(rows, rows, self.rel_pos_h)
        rel_w = get_rel_pos(cols, cols, self.rel_pos_w)
        r_q = q.reshape(batch * self.num_heads, rows, cols, -1)
        bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h.to(r_q.dtype))
        bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w.to(r_q.dtype))
        bias = (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(
            batch, self.num_heads, rows * cols, rows * cols
        )
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = out.view(batch, self.num_heads, rows, cols, -1).permute(0, 2, 3, 1, 4)
    return self.proj(out.reshape(batch, rows, cols, -1))
