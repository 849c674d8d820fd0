"""A faster SAM mask decoder (:class:`FastDecoder`) for prompts without a mask input."""

from __future__ import annotations

import copy
import weakref
from collections import OrderedDict

import torch
import torch.nn.functional as F

from ..embedding import Embedding
from ..hardware import onednn_fusion_available


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, heads, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, heads * d)


class FastDecoder:
    """SAM's mask decoder for prompts without a mask input, with less work per prompt.

    The arithmetic is that of ``segment_anything.modeling.MaskDecoder`` with its
    ``TwoWayTransformer`` (same weights, same operations up to float rounding;
    the agreement is tested), reorganised for speed:

    - per embedding, once (:meth:`context`): the image tokens plus the
      "no mask" embedding, and the three first-layer projections of them that
      do not depend on the prompt (keys and values of token-to-image attention,
      queries of image-to-token attention);
    - the dense positional encoding is computed once per decoder;
    - attention through ``F.scaled_dot_product_attention`` (a plain softmax
      product where the keys are a handful of prompt tokens);
    - the two stride-2 transposed convolutions of the output upscaling are
      non-overlapping, i.e. per-pixel matrix products: they run as such on
      token-major data, and the pixel shuffle is done once, on the final
      mask logits;
    - only the mask tokens asked for are turned into masks;
    - with ``dtype=torch.bfloat16`` the decoder runs on a bf16 copy of its
      weights (no per-call casts).
    """

    def __init__(
        self, model: torch.nn.Module, dtype: torch.dtype = torch.float32, contexts: int = 4
    ) -> None:
        self.dtype = dtype
        self.prompt_encoder = model.prompt_encoder
        dec = model.mask_decoder
        if dtype != torch.float32:
            dec = copy.deepcopy(dec).to(dtype)
        self.decoder = dec
        self.transformer = dec.transformer
        self._contexts: OrderedDict[int, tuple[weakref.ref, dict]] = OrderedDict()
        self._max_contexts = contexts
        up = list(dec.output_upscaling)
        convt1, norm, act1, convt2, act2 = up
        with torch.inference_mode():
            dense_pe = self.prompt_encoder.get_dense_pe()
            self.grid_hw = tuple(dense_pe.shape[-2:])
            self.image_pe = dense_pe.flatten(2).transpose(1, 2).contiguous().to(dtype)
            self.no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, 1, -1).to(dtype)
            self.output_tokens = torch.cat(
                [dec.iou_token.weight, dec.mask_tokens.weight], dim=0
            ).clone()
            # ConvTranspose2d weight (in, out, kh, kw) -> (in, kh*kw*out): output index (p, q, o)
            self.c_mid = convt1.weight.shape[1]
            self.c_out = convt2.weight.shape[1]
            self.w1 = convt1.weight.permute(0, 2, 3, 1).reshape(convt1.weight.shape[0], -1)
            self.w1 = self.w1.t().contiguous()
            self.b1 = convt1.bias.repeat(4).contiguous()
            self.w2 = convt2.weight.permute(0, 2, 3, 1).reshape(convt2.weight.shape[0], -1)
            self.w2 = self.w2.t().contiguous()
            self.b2 = convt2.bias.repeat(4).contiguous()
            self.norm_weight, self.norm_bias, self.norm_eps = norm.weight, norm.bias, norm.eps
        self.gelu1 = getattr(act1, "approximate", "none")
        self.gelu2 = getattr(act2, "approximate", "none")
        self._fuse_gelu2: bool | None = None  # decided on the first call

    @staticmethod
    def supports(model: torch.nn.Module) -> bool:
        """True for SAM-style decoders with the standard output upscaling."""
        try:
            dec = model.mask_decoder
            convt1, norm, act1, convt2, act2 = list(dec.output_upscaling)
            layers = dec.transformer.layers
            attn = layers[0].cross_attn_token_to_image
        except (AttributeError, ValueError, IndexError, TypeError):
            return False
        return (
            isinstance(convt1, torch.nn.ConvTranspose2d)
            and isinstance(convt2, torch.nn.ConvTranspose2d)
            and all(c.kernel_size == (2, 2) and c.stride == (2, 2) for c in (convt1, convt2))
            and all(c.padding == (0, 0) and c.output_padding == (0, 0) for c in (convt1, convt2))
            and isinstance(act1, torch.nn.GELU)
            and isinstance(act2, torch.nn.GELU)
            and hasattr(norm, "eps")
            and hasattr(attn, "k_proj")
            and hasattr(model.prompt_encoder, "no_mask_embed")
        )

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def _linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
        return F.linear(x, layer.weight, layer.bias)

    def _attend(self, attn, q=None, k=None, v=None, *, qh=None, kh=None, vh=None):
        """One SAM ``Attention`` (projections, heads, softmax, output projection);
        pre-projected heads (``qh``/``kh``/``vh``) skip their projection."""
        heads = attn.num_heads
        if qh is None:
            qh = _split_heads(self._linear(q, attn.q_proj), heads)
        if kh is None:
            kh = _split_heads(self._linear(k, attn.k_proj), heads)
        if vh is None:
            vh = _split_heads(self._linear(v, attn.v_proj), heads)
        batch = max(qh.shape[0], kh.shape[0])
        if qh.shape[0] != batch:
            qh = qh.expand(batch, -1, -1, -1)
        if kh.shape[0] != batch:
            kh = kh.expand(batch, -1, -1, -1)
            vh = vh.expand(batch, -1, -1, -1)
        if kh.shape[2] >= qh.shape[2]:
            out = F.scaled_dot_product_attention(qh, kh, vh)
        else:  # a few keys (the prompt tokens): a plain product is faster
            scores = torch.matmul(qh * (qh.shape[-1] ** -0.5), kh.transpose(-1, -2))
            out = torch.matmul(torch.softmax(scores, dim=-1), vh)
        return self._linear(_merge_heads(out), attn.out_proj)

    def _tokens_to_image(self, attn, q: torch.Tensor, x_k: torch.Tensor, x_v: torch.Tensor):
        """``attn(q=tokens, k=x_k, v=x_v)`` for image keys/values, reassociated so
        that the image tokens are never projected: the query heads are mapped
        into the key space instead (``q W_k``), and the softmax weights are
        applied to the raw values, which are projected afterwards (the weights
        of each row sum to one).  The query-key-bias term is constant over the
        keys and drops out of the softmax.  Per prompt, as 2D products (no
        transposed copies of the image tokens)."""
        heads = attn.num_heads
        qh = _split_heads(self._linear(q, attn.q_proj), heads)  # (b, H, t, d)
        b, _, t, d = qh.shape
        w_k = attn.k_proj.weight.view(heads, d, -1)  # (H, d, C)
        qk = torch.matmul(qh * (d**-0.5), w_k).reshape(b, heads * t, -1)  # (b, H*t, C)
        mixed = torch.stack(
            [
                torch.softmax(F.linear(qk[i], x_k[i if x_k.shape[0] > 1 else 0]), dim=-1)
                @ x_v[i if x_v.shape[0] > 1 else 0]
                for i in range(b)
            ]
        ).view(b, heads, t, -1)  # (b, H, t, C)
        w_v = attn.v_proj.weight.view(heads, d, -1).transpose(1, 2)  # (H, C, d)
        out = torch.matmul(mixed, w_v) + attn.v_proj.bias.view(heads, 1, d)
        return self._linear(_merge_heads(out), attn.out_proj)

    def _image_to_tokens(self, attn, x_q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """``attn(q=x_q, k=tokens, v=tokens)`` for image queries, reassociated so
        that the image tokens are never projected: the key heads are mapped into
        the query space (``k W_q``) and the value heads through the output
        projection before the (image x tokens) attention weights are applied."""
        heads = attn.num_heads
        kh = _split_heads(self._linear(k, attn.k_proj), heads)  # (b, H, t, d)
        vh = _split_heads(self._linear(v, attn.v_proj), heads)
        b, _, t, d = kh.shape
        w_q = attn.q_proj.weight.view(heads, d, -1)  # (H, d, C)
        scale = d**-0.5
        kq = torch.matmul(kh * scale, w_q).reshape(b, heads * t, -1)  # (b, H*t, C)
        kb = (kh * scale * attn.q_proj.bias.view(heads, 1, d)).sum(-1).reshape(b, heads * t)
        w_o = attn.out_proj.weight.view(-1, heads, d).permute(1, 2, 0)  # (H, d, C)
        values = torch.matmul(vh, w_o).reshape(b, heads * t, -1)  # (b, H*t, C)
        outs = []
        for i in range(b):
            # scores token-major, (H*t, N): the softmax over a head's t tokens then
            # runs over an inner axis of N contiguous values (vectorises well)
            image = x_q[i if x_q.shape[0] > 1 else 0]
            scores = torch.addmm(kb[i].unsqueeze(1), kq[i], image.t())
            probs = torch.softmax(scores.view(heads, t, -1), dim=1).view_as(scores)
            outs.append(torch.addmm(attn.out_proj.bias, probs.t(), values[i]))
        return torch.stack(outs)

    def _upscaled_masks(self, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Output upscaling and mask product, token-major: image tokens (b, h*w, C)
        -> (b, h*w*4, C/4) -> (b, h*w*16, C/8) -> mask logits (b, h*w*16, m), float32."""
        batch, cells, _ = keys.shape
        x = F.linear(keys, self.w1, self.b1).view(-1, self.c_mid)
        x = F.layer_norm(x, (self.c_mid,), self.norm_weight, self.norm_bias, self.norm_eps)
        x = self._linear_gelu2(F.gelu(x, approximate=self.gelu1))
        x = x.view(batch, cells * 16, self.c_out)
        return torch.bmm(x, hyper.transpose(1, 2)).to(torch.float32)

    def _linear_gelu2(self, x: torch.Tensor) -> torch.Tensor:
        """GELU(x W2 + b2) of the second upscaling step, as one oneDNN call on the
        CPU where available (4x faster: no separate pass over the 2 M outputs)."""
        if self._fuse_gelu2 is None:
            self._fuse_gelu2 = (
                x.device.type == "cpu" and self.gelu2 == "none" and onednn_fusion_available()
            )
        if self._fuse_gelu2:
            try:
                return torch.ops.mkldnn._linear_pointwise(x, self.w2, self.b2, "gelu", [], "none")
            except RuntimeError:  # a oneDNN build without this fusion: plain from now on
                self._fuse_gelu2 = False
        return F.gelu(F.linear(x, self.w2, self.b2), approximate=self.gelu2)

    def context(self, emb: Embedding) -> dict[str, torch.Tensor]:
        """The prompt-independent part of decoding ``emb`` (cached per embedding)."""
        # keyed by the features tensor itself (its id, checked through a weak
        # reference: a freed tensor's id can be reused by the next one)
        key = id(emb.features)
        hit = self._contexts.get(key)
        if hit is not None and hit[0]() is emb.features:
            self._contexts.move_to_end(key)
            return hit[1]
        feats = emb.features.to(self.dtype)
        channels = feats.shape[1]
        # (1, C, h, w) -> (1, h*w, C) as one 2D transpose (5x faster than a 4D permute copy)
        keys0 = feats.reshape(channels, -1).t().contiguous().unsqueeze(0) + self.no_mask
        with_pe = keys0 + self.image_pe
        first = self.transformer.layers[0]
        t2i = first.cross_attn_token_to_image
        ctx = {
            "keys": keys0,
            "keys_pe": with_pe,
            "t2i_k": _split_heads(self._linear(with_pe, t2i.k_proj), t2i.num_heads),
            "t2i_v": _split_heads(self._linear(keys0, t2i.v_proj), t2i.num_heads),
        }
        self._contexts[key] = (weakref.ref(emb.features), ctx)
        while len(self._contexts) > self._max_contexts:
            self._contexts.popitem(last=False)
        return ctx

    # ------------------------------------------------------------------ decoding

    @torch.inference_mode()
    def __call__(
        self, emb: Embedding, sparse: torch.Tensor, *, multimask: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution mask logits (float32, (b, m, 4h, 4w)) and predicted IoUs
        (b, m) for ``b`` sparse prompt embeddings; ``m`` is 3 with ``multimask``, else 1."""
        ctx = self.context(emb)
        tf, dec = self.transformer, self.decoder
        batch = sparse.shape[0]
        tokens = torch.cat(
            [self.output_tokens.unsqueeze(0).expand(batch, -1, -1), sparse.to(self.dtype)], dim=1
        )
        query_pe, queries, keys, key_pe = tokens, tokens, ctx["keys"], self.image_pe
        for i, layer in enumerate(tf.layers):
            # image tokens + positional encoding, the same for both cross-attentions
            # of this layer (the keys change only at its end)
            keys_pe = ctx["keys_pe"] if i == 0 else keys + key_pe
            if layer.skip_first_layer_pe:
                queries = self._attend(layer.self_attn, queries, queries, queries)
            else:
                q = queries + query_pe
                queries = queries + self._attend(layer.self_attn, q, q, queries)
            queries = layer.norm1(queries)
            q = queries + query_pe
            if i == 0:
                out = self._attend(
                    layer.cross_attn_token_to_image, q, kh=ctx["t2i_k"], vh=ctx["t2i_v"]
                )
            else:
                out = self._tokens_to_image(layer.cross_attn_token_to_image, q, keys_pe, keys)
            queries = layer.norm2(queries + out)
            queries = layer.norm3(queries + layer.mlp(queries))
            k = queries + query_pe
            out = self._image_to_tokens(layer.cross_attn_image_to_token, keys_pe, k, queries)
            keys = layer.norm4(keys + out)
        q = queries + query_pe
        out = self._tokens_to_image(tf.final_attn_token_to_image, q, keys + key_pe, keys)
        queries = tf.norm_final_attn(queries + out)

        iou = dec.iou_prediction_head(queries[:, 0])
        chosen = range(1, dec.num_mask_tokens) if multimask else range(0, 1)
        hyper = torch.stack(
            [dec.output_hypernetworks_mlps[t](queries[:, 1 + t]) for t in chosen], dim=1
        )
        rows, cols = self.grid_hw
        masks = self._upscaled_masks(keys.expand(batch, -1, -1), hyper)  # (b, h*w*16, m)
        m = masks.shape[-1]
        # index (i, j, p, q, p2, q2) -> pixel (4i + 2p + p2, 4j + 2q + q2)
        masks = masks.view(batch, rows, cols, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        masks = masks.reshape(batch, m, rows * 4, cols * 4)
        iou = iou[:, 1:] if multimask else iou[:, :1]
        return masks, iou.to(torch.float32)
