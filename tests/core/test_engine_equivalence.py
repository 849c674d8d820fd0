"""The speed paths of ``core.engine`` give the reference results (fp32, random-weight SAMs).

- :func:`use_sdpa_attention`: the ViT attention blocks through
  ``F.scaled_dot_product_attention`` (relative positions as its additive mask) give
  segment_anything's own ``Attention`` output;
- ``Segmenter(fast=True)`` (the :class:`FastDecoder`) gives the logits, masks and scores of
  ``Segmenter(fast=False)`` (the model's own ``MaskDecoder``, run as ``SamPredictor`` does)
  for box, point and box + point prompts, with and without multimask output;
- the fast decoder's per-embedding context cache never serves another embedding (a
  freed tensor's id is reused by CPython; the cache must notice).

The random models' masks mean nothing, but their logits are not all near zero (|logit| up to
~0.1 to 0.2) and their masks are neither empty nor full, so a wrong operation shows.  On a
CPU the two decoder paths differ by ~2e-7 and the encoders by ~2e-6; the tolerances below
leave about 50x room for other BLAS builds, not for a wrong formula.

``tiny`` (1024 px, encoder depth 2 with one windowed and one global block, decoder depth 2)
and ``micro`` (256 px, depth 1) come from conftest.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fresh, random_rgb
from napari_samlung.core.embedding import Embedding, encoder_input, preprocess_shape
from napari_samlung.core.fast import FastDecoder, use_sdpa_attention
from napari_samlung.core.prompts import Prompt

SHAPE = (90, 150)  # rows, cols of the test slice (a wide one: resize and padding matter)
#: fp32 agreement of the two decoder paths (measured: 1.6e-7 on logits of magnitude 0.2).
LOGIT_ATOL, LOGIT_RTOL = 1e-5, 1e-4
#: fp32 agreement of the two attention implementations (measured: 1.9e-6 on values up to 5).
EMB_ATOL, EMB_RTOL = 1e-5, 1e-5
#: SDPA sums the attention in another order than the plain path: after every block of the
#: random ViT the fp32 rounding differs by a few ulps, up to ~1.2e-5 seen on this CPU.
SDPA_ATOL, SDPA_RTOL = 5e-5, 1e-5

#: Two prompts of each structure (they decode as one batch of two).
PROMPTS = {
    "box": [
        Prompt(box_xyxy=[10, 10, 60, 80]),
        Prompt(box_xyxy=[80, 5, 145, 85]),
    ],
    "points": [
        Prompt(points_xy=[[30, 45], [100, 40], [75, 20]], point_labels=[1, 0, 1]),
        Prompt(points_xy=[[120, 60], [20, 30], [60, 70]], point_labels=[1, 1, 0]),
    ],
    "box+points": [
        Prompt(points_xy=[[20, 40], [110, 50]], point_labels=[1, 0], box_xyxy=[5, 5, 140, 85]),
        Prompt(points_xy=[[100, 30], [40, 60]], point_labels=[1, 0], box_xyxy=[70, 10, 148, 88]),
    ],
}


# --------------------------------------------------------------------------- SDPA attention


def _vit_attentions(encoder: torch.nn.Module) -> list[torch.nn.Module]:
    from segment_anything.modeling.image_encoder import Attention

    return [m for m in encoder.modules() if isinstance(m, Attention)]


@pytest.mark.parametrize("model, batch", [("tiny", 1), ("micro", 2)])
def test_sdpa_attention_gives_the_same_embeddings(request, monkeypatch, model, batch):
    seg = request.getfixturevalue(model)
    shared = seg.model.image_encoder
    encoder = copy.deepcopy(shared).eval()
    images = [random_rgb((300, 200), seed=s) for s in range(batch)]
    # resized, normalised, padded: the real encoder input
    x, _ = encoder_input(images, seg.spec, seg.device)
    with torch.inference_mode():
        reference = encoder(x)

    sdpa_calls = []
    real_sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        sdpa_calls.append(kwargs.get("attn_mask") is not None)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    switched = use_sdpa_attention(encoder)
    assert switched == len(_vit_attentions(encoder)) == len(encoder.blocks) > 0
    with torch.inference_mode():
        out = encoder(x)
    # every block ran through SDPA, with the relative positions as its mask
    assert sdpa_calls == [True] * switched

    prompt_encoder = seg.model.prompt_encoder
    expected = (batch, prompt_encoder.embed_dim, *prompt_encoder.image_embedding_size)
    assert out.shape == reference.shape == expected
    assert reference.abs().max() > 1.0  # a non-trivial embedding
    torch.testing.assert_close(out, reference, rtol=SDPA_RTOL, atol=SDPA_ATOL)
    # the deep copy was switched, the shared model was not
    assert all("forward" not in vars(attn) for attn in _vit_attentions(shared))
    assert all("forward" in vars(attn) for attn in _vit_attentions(encoder))


# --------------------------------------------------------------------------- fast vs reference


@pytest.fixture(scope="module", params=["micro", "tiny"])
def paths(request):
    """(fast segmenter, its embedding, reference segmenter, its embedding) of one slice."""
    seg = request.getfixturevalue(request.param)
    fast = fresh(seg, fast=True, precision="fp32")
    reference = fresh(seg, fast=False, precision="fp32")
    rgb = random_rgb(SHAPE)
    return fast, fast.embed(rgb), reference, reference.embed(rgb)


def test_the_two_paths_really_differ_and_share_the_encoder_output(paths):
    fast, emb_fast, reference, emb_ref = paths
    assert isinstance(fast.fast_decoder, FastDecoder)
    assert reference.fast_decoder is None
    assert fast.cache_key(random_rgb(SHAPE)) != reference.cache_key(random_rgb(SHAPE))
    assert emb_fast.original_size_rc == emb_ref.original_size_rc == SHAPE
    assert emb_fast.input_size_rc == emb_ref.input_size_rc
    torch.testing.assert_close(emb_fast.features, emb_ref.features, rtol=EMB_RTOL, atol=EMB_ATOL)


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multimask"])
@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_fast_predict_matches_the_reference(paths, kind, multimask):
    fast, emb_fast, reference, emb_ref = paths
    prompts = PROMPTS[kind]
    got = fast.predict(emb_fast, prompts, multimask=multimask)
    want = reference.predict(emb_ref, prompts, multimask=multimask)

    assert got.logits.shape == want.logits.shape == (len(prompts), *SHAPE)
    # the reference is not degenerate: logits well away from zero, masks neither empty nor full
    assert np.abs(want.logits).max() > 1e-2
    for mask in want.masks:
        assert 0 < mask.mean() < 1
    np.testing.assert_allclose(got.logits, want.logits, rtol=LOGIT_RTOL, atol=LOGIT_ATOL)
    np.testing.assert_allclose(
        got.predicted_iou, want.predicted_iou, rtol=LOGIT_RTOL, atol=LOGIT_ATOL
    )
    # masks: identical wherever the logit is clear of the tolerance around zero
    # (with multimask this also says both paths chose the same one of the three masks)
    clear = np.abs(want.logits) > LOGIT_ATOL
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(got.masks[clear], want.masks[clear])


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multimask"])
def test_fast_decoder_matches_the_mask_decoder_on_every_output(paths, multimask):
    """Below ``predict``'s choice among the multimask outputs: all of them, low resolution,
    for a batch of two box + two-point prompts, and the predicted IoUs."""
    fast, emb, _, _ = paths
    model = fast.model
    size = fast.spec.input_size
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(2, 2, 2, generator=gen) * size * 0.6
    labels = torch.tensor([[1, 0], [0, 1]], dtype=torch.int32)
    corner = torch.rand(2, 2, generator=gen) * size * 0.4
    boxes = torch.cat([corner, corner + size * 0.4], dim=1)
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=boxes, masks=None)
        got_masks, got_iou = fast.fast_decoder(emb, sparse, multimask=multimask)
        want_masks, want_iou = model.mask_decoder(
            image_embeddings=emb.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
    outputs = 3 if multimask else 1
    grid = emb.features.shape[-1] * 4
    assert got_masks.shape == want_masks.shape == (2, outputs, grid, grid)
    assert got_iou.shape == want_iou.shape == (2, outputs)
    assert want_masks.abs().max() > 1e-2
    torch.testing.assert_close(got_masks, want_masks, rtol=LOGIT_RTOL, atol=LOGIT_ATOL)
    torch.testing.assert_close(got_iou, want_iou, rtol=LOGIT_RTOL, atol=LOGIT_ATOL)


# --------------------------------------------------------------------------- decoder context


def test_a_hand_made_embedding_never_gets_the_context_of_a_freed_one(micro):
    fast = fresh(micro, fast=True, precision="fp32")
    reference = fresh(micro, fast=False, precision="fp32")
    prompts = PROMPTS["box"][:1]
    channels = micro.model.prompt_encoder.embed_dim
    rows, cols = micro.model.prompt_encoder.image_embedding_size
    input_rc = preprocess_shape(*SHAPE, micro.spec.input_size)
    rng = np.random.default_rng(0)
    seen: set[int] = set()
    recycled = False
    for _ in range(10):
        feats = torch.from_numpy(rng.standard_normal((1, channels, rows, cols)).astype(np.float32))
        recycled = recycled or id(feats) in seen
        seen.add(id(feats))
        emb = Embedding(feats, input_rc, SHAPE)  # key "": as a caller of predict may make it
        got = fast.predict(emb, prompts).logits
        want = reference.predict(emb, prompts).logits
        np.testing.assert_allclose(got, want, rtol=LOGIT_RTOL, atol=LOGIT_ATOL)
        del emb, feats
    if not recycled:
        pytest.skip("no tensor id was reused here, so the case never arose")
