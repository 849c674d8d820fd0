"""The segmenter: cached embeddings + prompts -> lung labels.

Plumbing runs on random-weight SAMs: the registered ``tiny_random`` (built by
segment_anything's real builder, 1024 px input) and, where a test needs many
embeddings, an even smaller 256 px one assembled from segment_anything's own
modules.  Quality, orientation and fast-vs-plain agreement run on the bundled
LiteMedSAM with real data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from conftest import DATA_DIR, fresh, random_rgb
from napari_samlung.core.embedding import Embedding, encoder_input, preprocess_shape, to_input_xy
from napari_samlung.core.engine import Segmenter
from napari_samlung.core.hardware import cpu_supports_bf16, fit_batch_size
from napari_samlung.core.masks import clean_labels
from napari_samlung.core.metrics import dice
from napari_samlung.core.models import get_spec
from napari_samlung.core.prompts import (
    POSITIVE,
    Prompt,
    box_xyxy_from_mask,
    get_strategy,
    prompts_from_labels,
)
from napari_samlung.core.windowing import Window, to_rgb
from napari_samlung.errors import ModelError, PromptError

MONTGOMERY = DATA_DIR / "montgomery"
COVID = DATA_DIR / "covid19_ct_slices"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set SAMLUNG_DATA to the shared data folder")
    return path


# --------------------------------------------------------------------------- fixtures
# ``tiny`` and ``micro`` (module-scoped segmenters), ``fresh`` and ``random_rgb``: conftest.py


def two_lungs(shape=(90, 150)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    rows, cols = shape
    labels[rows // 6 : rows - rows // 6, cols // 10 : cols * 4 // 10] = 2
    labels[rows // 5 : rows - rows // 8, cols * 6 // 10 : cols * 9 // 10] = 1
    return labels


@pytest.fixture
def encoder_batches(micro):
    """Batch sizes that reach the (micro) image encoder."""
    sizes: list[int] = []
    handle = micro.model.image_encoder.register_forward_hook(
        lambda module, args, out: sizes.append(int(args[0].shape[0]))
    )
    yield sizes
    handle.remove()


# --------------------------------------------------------------------------- embeddings


def test_embedding_is_cached_per_slice(tiny):
    seg = fresh(tiny)
    hu = np.linspace(-1200, 300, 90 * 150, dtype=np.float32).reshape(90, 150)
    rgb = to_rgb(hu, Window.preset("paper"))
    emb = seg.embed(rgb)
    assert seg.encoder_calls == 1
    assert emb.features.shape == (1, 256, 64, 64) and emb.features.dtype == torch.float32
    assert emb.original_size_rc == (90, 150)
    assert emb.input_size_rc == (614, 1024)
    # the same slice again (even as a new array) is not re-encoded
    again = seg.embed(rgb.copy())
    assert seg.encoder_calls == 1
    assert again is emb
    assert seg.cached(rgb)
    # a different window changes the encoder input: a new embedding
    other = to_rgb(hu, Window.preset("mediastinum"))
    assert not seg.cached(other)
    seg.embed(other)
    assert seg.encoder_calls == 2
    seg.clear_cache()
    assert seg.cache_bytes == 0 and not seg.cached(rgb)


def test_lru_cache_respects_its_memory_bound(micro):
    one = 32 * 16 * 16 * 4  # bytes of one micro-model embedding
    seg = fresh(micro, cache_limit_mb=2.2 * one / 2**20)  # room for two
    a, b, c = (random_rgb((40, 60), seed=s) for s in range(3))
    for img in (a, b, c):
        seg.embed(img)
    assert seg.encoder_calls == 3
    assert seg.cache_bytes == 2 * one <= seg.cache_limit_bytes
    assert not seg.cached(a) and seg.cached(b) and seg.cached(c)  # oldest evicted
    seg.embed(b)  # touch b: now c is the oldest
    seg.embed(a)
    assert seg.encoder_calls == 4
    assert seg.cached(a) and seg.cached(b) and not seg.cached(c)
    assert seg.cache_bytes <= seg.cache_limit_bytes


def test_cache_smaller_than_one_embedding_keeps_the_last(micro):
    seg = fresh(micro, cache_limit_mb=0.001)
    seg.embed(random_rgb(seed=0))
    seg.embed(random_rgb(seed=1))
    assert seg.cached(random_rgb(seed=1)) and not seg.cached(random_rgb(seed=0))
    assert seg.cache_bytes == 32 * 16 * 16 * 4


def test_embed_many_batches_by_shape_and_skips_duplicates(micro, encoder_batches):
    seg = fresh(micro)
    wide = [random_rgb((40, 70), s) for s in range(3)]
    tall = [random_rgb((70, 40), s) for s in range(2)]
    images = [wide[0], tall[0], wide[1], wide[0].copy(), wide[2], tall[1]]
    embs = seg.embed_many(images, batch_size=2)
    assert len(embs) == len(images)
    assert seg.encoder_calls == 5
    assert encoder_batches == [2, 1, 2]  # wide: 2+1, tall: 2
    assert embs[3] is embs[0]
    for img, emb in zip(images, embs, strict=True):
        assert emb.original_size_rc == img.shape[:2]
    assert embs[1].input_size_rc == (256, 146)
    # batching does not mix slices: each equals its embedding computed alone
    alone = fresh(micro).embed(wide[1])
    torch.testing.assert_close(embs[2].features, alone.features, atol=1e-4, rtol=1e-4)
    # everything is cached now
    seg.embed_many(images)
    assert seg.encoder_calls == 5


def test_embed_refuses_non_rgb_input(tiny):
    with pytest.raises(ValueError, match="window it first"):
        tiny.embed(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tiny.embed(np.zeros((20, 20, 3), np.float32))


def test_precision_choice():
    with pytest.raises(ModelError, match="precision must be auto, fp32 or bf16"):
        Segmenter(torch.nn.Identity(), get_spec("tiny_random"), "cpu", precision="fp16")
    auto = Segmenter(torch.nn.Identity(), get_spec("tiny_random"), "cpu", precision="auto")
    assert auto.precision == ("bf16" if cpu_supports_bf16() else "fp32")


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("shape", [(90, 150), (150, 90)])
def test_predict_returns_masks_at_the_original_size(tiny, shape):
    seg = tiny  # shared cache: no counting here
    emb = seg.embed(random_rgb(shape))
    prompts = prompts_from_labels(two_lungs(shape), "per-lung", accepts_points=True)
    pred = seg.predict(emb, prompts)
    assert pred.masks.shape == (2, *shape) and pred.masks.dtype == bool
    assert pred.logits.shape == (2, *shape) and pred.logits.dtype == np.float32
    assert pred.predicted_iou.shape == (2,)
    np.testing.assert_array_equal(pred.masks, pred.logits > 0)
    with pytest.raises(PromptError, match="no prompts"):
        seg.predict(emb, [])


def test_prompts_of_different_structure_decode_together(micro):
    seg = micro
    emb = seg.embed(random_rgb())
    prompts = [
        Prompt(box_xyxy=[10, 10, 60, 80], target_label=2),
        Prompt(points_xy=[[100, 40]], point_labels=[POSITIVE], target_label=1),
        Prompt(points_xy=[[20, 40], [110, 50]], point_labels=[1, 0], box_xyxy=[5, 5, 140, 85]),
    ]
    pred = seg.predict(emb, prompts)
    assert pred.masks.shape == (3, 90, 150)
    # same as decoding each prompt on its own
    for i, p in enumerate(prompts):
        single = seg.predict(emb, [p])
        np.testing.assert_allclose(single.logits[0], pred.logits[i], atol=1e-4)


def test_segment_slice_returns_lung_labels(micro):
    seg = micro
    rgb = random_rgb()
    for name in ("paper", "per-lung", "box", "multi-negative", "per-lung-post"):
        strategy = get_strategy(name)
        prompts = prompts_from_labels(two_lungs(), strategy, seg.accepts_points)
        labels, score = seg.segment_slice(rgb, prompts, strategy=strategy)
        assert labels.shape == (90, 150) and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2}
        assert np.isfinite(score)
    empty, score = seg.segment_slice(rgb, [])
    assert not empty.any() and np.isnan(score)


def test_multimask_path(micro):
    seg = micro
    emb = seg.embed(random_rgb())
    prompts = prompts_from_labels(two_lungs(), "per-lung-multimask", True)
    pred = seg.predict(emb, prompts, multimask=True)
    assert pred.masks.shape == (2, 90, 150) and pred.predicted_iou.shape == (2,)
    strategy = get_strategy("per-lung-multimask")
    labels, _ = seg.segment_slice(random_rgb(), prompts, strategy=strategy)
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_box_only_model_drops_points(micro):
    box_only = fresh(micro, spec=dataclasses.replace(micro.spec, accepts_points=False))
    assert not box_only.accepts_points
    rgb = random_rgb()
    with_points = Prompt(
        points_xy=[[30, 45], [75, 45]], point_labels=[1, 0], box_xyxy=[10, 10, 60, 80]
    )
    just_box = Prompt(box_xyxy=[10, 10, 60, 80])
    # points do change the tiny model's output, so dropping them is observable
    full = micro
    emb = full.embed(rgb)
    assert not np.allclose(
        full.predict(emb, [with_points]).logits, full.predict(emb, [just_box]).logits
    )
    expected = box_only.predict(box_only.embed(rgb), [just_box])
    for validate in (True, False):
        labels, score = box_only.segment_slice(rgb, [with_points], validate=validate)
        ref_labels, ref_score = box_only.segment_slice(rgb, [just_box], validate=validate)
        np.testing.assert_array_equal(labels, ref_labels)
        assert score == pytest.approx(ref_score)
    assert score == pytest.approx(float(expected.predicted_iou[0]))
    with pytest.raises(PromptError, match="needs a box"):
        box_only.segment_slice(rgb, [Prompt(points_xy=[[30, 45]], point_labels=[1])])


def test_clean_labels_keeps_largest_component_and_fills_holes():
    labels = np.zeros((20, 30), np.uint8)
    labels[2:12, 2:12] = 2
    labels[6, 6] = 0  # a hole
    labels[15:17, 2:4] = 2  # a speck
    labels[2:12, 18:28] = 1
    out = clean_labels(labels)
    assert out[6, 6] == 2
    assert not out[15:17, 2:4].any()
    np.testing.assert_array_equal(out[2:12, 18:28], 1)


# --------------------------------------------------------------------------- orientation


@pytest.mark.parametrize("long_side", [1024, 256])
@pytest.mark.parametrize("shape", [(90, 150), (150, 90), (630, 401), (401, 630), (512, 512)])
def test_transform_matches_segment_anything(tiny, shape, long_side):
    reference = ResizeLongestSide(long_side)
    new_rc = preprocess_shape(*shape, long_side)
    assert new_rc == reference.get_preprocess_shape(*shape, long_side)
    emb = Embedding(torch.zeros(1), new_rc, shape)
    rows, cols = shape
    coords_xy = np.array([[0, 0], [cols - 1, 0], [cols - 1, rows - 1], [cols / 3, rows / 7]])
    ours = to_input_xy(coords_xy, emb)
    np.testing.assert_allclose(ours, reference.apply_coords(coords_xy, shape), rtol=1e-5)
    box = np.array([cols * 0.8, rows * 0.1, cols - 1, rows * 0.3])
    ours_box = to_input_xy(box.reshape(2, 2), emb).reshape(4)
    np.testing.assert_allclose(ours_box, reference.apply_boxes(box, shape)[0], rtol=1e-5)


def test_points_reach_sam_as_x_y_of_the_resized_image(tiny, monkeypatch):
    """A point on a structure in the top-right of a wide image reaches the prompt
    encoder with a large x and a small y."""
    seg = tiny
    rgb = random_rgb((90, 150))
    seen = {}
    original = seg.model.prompt_encoder.forward

    def spy(points, boxes, masks):
        seen["points"] = points[0].clone()
        seen["boxes"] = boxes.clone()
        return original(points, boxes, masks)

    monkeypatch.setattr(seg.model.prompt_encoder, "forward", spy)
    labels = np.zeros((90, 150), np.uint8)
    labels[5:20, 120:145] = 1  # top-right corner
    (prompt,) = prompts_from_labels(labels, "per-lung", accepts_points=True)
    seg.segment_slice(rgb, [prompt])
    scale = 1024 / 150
    x, y = seen["points"][0, 0].tolist()
    assert 120 * scale <= x <= 145 * scale
    assert 5 * scale <= y <= 20 * scale
    np.testing.assert_allclose(
        seen["boxes"][0].numpy(),
        ResizeLongestSide(1024).apply_boxes(prompt.box_xyxy[None], (90, 150))[0],
        rtol=1e-5,
    )


# --------------------------------------------------------------------------- LiteMedSAM


@pytest.fixture(scope="module")
def lite() -> Segmenter:
    return Segmenter.from_registry("lite_medsam", device="cpu", precision="auto")


@pytest.fixture(scope="module")
def lite_fp32(lite) -> Segmenter:
    return Segmenter(lite.model, lite.spec, lite.device, precision="fp32")


def test_lite_medsam_segments_an_asymmetric_synthetic_structure(lite):
    # a bright ellipse in the top-right and a distractor in the bottom-left of a wide image
    rr, cc = np.mgrid[:200, :320]
    target = ((rr - 50) / 30.0) ** 2 + ((cc - 250) / 45.0) ** 2 <= 1
    distractor = ((rr - 150) / 35.0) ** 2 + ((cc - 70) / 50.0) ** 2 <= 1
    image = np.full((200, 320), 40, np.uint8)
    image[target | distractor] = 200
    box = box_xyxy_from_mask(target)
    assert box[0] > 200 and box[3] < 100  # x is the column, y the row
    labels, _ = lite.segment_slice(to_rgb(image, Window.preset("none")), [Prompt(box_xyxy=box)])
    assert dice(labels > 0, target) >= 0.95
    assert not labels[distractor].any()


def _montgomery(name: str):
    from napari_samlung.io import read_image, read_mask

    image = read_image(_need(MONTGOMERY / "images" / name))
    truth = read_mask(_need(MONTGOMERY / "masks" / name), like=image)
    return image.data, truth


def test_lite_medsam_on_a_real_xray(lite):
    image, truth = _montgomery("MCUCXR_0001_0.png")
    assert image.dtype == np.uint8 and set(np.unique(truth)) == {0, 1, 2}
    strategy = get_strategy("per-lung")
    rgb = to_rgb(image, Window.preset(lite.spec.default_window))
    prompts = prompts_from_labels(truth, strategy, lite.accepts_points)
    labels, score = lite.segment_slice(rgb, prompts, strategy=strategy)
    assert dice(labels > 0, truth > 0) >= 0.95
    # each lung keeps its own label
    assert dice(labels == 1, truth == 1) >= 0.9
    assert dice(labels == 2, truth == 2) >= 0.9
    assert 0 < score <= 1.5


def test_lite_medsam_on_a_real_ct_slice_in_hu(lite):
    image = np.load(_need(COVID / "coronacases_001_image_slice_110.npy"))
    truth = np.load(_need(COVID / "coronacases_001_masks_slice_110.npy"))
    assert image.dtype == np.int16
    window = Window.preset(lite.spec.default_window)
    rgb = to_rgb(image, window)
    strategy = get_strategy(lite.spec.default_strategy)
    prompts = prompts_from_labels(truth, strategy, lite.accepts_points)
    labels, _ = lite.segment_slice(rgb, prompts, strategy=strategy)
    assert dice(labels > 0, truth > 0) >= 0.9


@pytest.mark.parametrize("name", ["MCUCXR_0001_0.png", "MCUCXR_0002_0.png"])
def test_segmenter_agrees_with_segment_anything_predictor(lite, lite_fp32, name):
    """The reimplemented, cached, bf16-capable path gives SamPredictor's masks."""
    from segment_anything import SamPredictor

    image, truth = _montgomery(name)
    rgb = to_rgb(image, Window.preset("none"))
    if cpu_supports_bf16():
        assert lite.precision == "bf16"
    predictor = SamPredictor(lite.model)
    predictor.set_image(rgb, image_format="RGB")
    for value in (1, 2):
        box = box_xyxy_from_mask(truth == value)
        plain, _, _ = predictor.predict(box=box, multimask_output=False)
        for seg in (lite, lite_fp32):
            fast = seg.predict(seg.embed(rgb), [Prompt(box_xyxy=box)]).masks[0]
            assert dice(fast, plain[0]) >= 0.995, (seg.precision, value)
        # in fp32 the fast path is the same computation: pixel for pixel the same mask
        fast32 = lite_fp32.predict(lite_fp32.embed(rgb), [Prompt(box_xyxy=box)]).masks[0]
        assert np.array_equal(fast32, plain[0]), value


@pytest.mark.parametrize("shape_rc", [(128, 128), (512, 512), (630, 401), (97, 300)])
def test_encoder_input_is_exactly_segment_anythings(micro, shape_rc):
    """Resize, normalise and pad give SamPredictor's input (PIL resizes in two
    rounded passes; a one-pass float resize differed by a grey level on ~15 % of
    pixels and moved the boundary of small masks).  PIL's fixed-point weights
    can still round a near-tie the other way: on noise, <= 0.1 % of values by
    one grey level."""
    from segment_anything.utils.transforms import ResizeLongestSide

    rgb = random_rgb(shape_rc, seed=sum(shape_rc))
    rgb[: shape_rc[0] // 2] //= 3  # an edge, so that interpolation matters
    seg = fresh(micro)
    x, new_rc = encoder_input([rgb], seg.spec, seg.device)
    resized = ResizeLongestSide(micro.spec.input_size).apply_image(rgb)
    assert resized.shape[:2] == new_rc
    expected = micro.model.preprocess(
        torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
    )
    grey_levels = ((x - expected) * micro.model.pixel_std.view(1, 3, 1, 1)).abs()
    assert float(grey_levels.max()) <= 1.0 + 1e-4
    assert float((grey_levels > 1e-3).float().mean()) <= 1e-3


def test_out_of_memory_halves_the_encoder_batch_and_continues(micro):
    """An OOM in the encoder (as on a full GPU) halves the batch instead of crashing."""
    seg = fresh(micro)
    real = seg.encoder
    calls = []

    def flaky(x):
        calls.append(x.shape[0])
        if x.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x)

    seg._encoder = flaky
    images = [random_rgb(seed=s) for s in range(4)]
    embs = seg.embed_many(images, batch_size=4)
    assert len(embs) == 4 and seg.encoder_calls == 4
    assert calls[:3] == [4, 2, 1] and set(calls[2:]) == {1}
    expected = fresh(micro).embed(images[3]).features
    torch.testing.assert_close(embs[3].features, expected, rtol=1e-4, atol=1e-4)


def test_fit_batch_size_keeps_the_estimated_peak_within_the_free_memory():
    gib = 2**30
    assert fit_batch_size(32, free_bytes=10 * gib, slice_bytes=1 * gib) == 8  # 80 % of 10 GiB
    assert fit_batch_size(4, free_bytes=10 * gib, slice_bytes=1 * gib) == 4  # no more than asked
    assert fit_batch_size(32, free_bytes=0.5 * gib, slice_bytes=1 * gib) == 1  # never below one
    assert fit_batch_size(8, free_bytes=gib, slice_bytes=0) == 8


class FakeGpuMemory:
    """Stands in for CudaMemory: a device with ``free`` bytes on which one
    encoder pass costs ``per_slice`` bytes per slice at its peak."""

    def __init__(self, free: float, per_slice: float) -> None:
        self.free, self.per_slice, self.batch = free, per_slice, 0

    def free_bytes(self) -> float:
        return self.free

    def start(self) -> int:
        return 0

    def peak_since(self, start: int) -> float:
        return self.per_slice * self.batch


def test_encoder_batch_adapts_to_free_gpu_memory(micro):
    """On a GPU the first pass measures one slice, then batches fill 80 % of the
    free memory, re-read before every pass; embeddings are unchanged."""
    seg = fresh(micro)
    memory = FakeGpuMemory(free=5e9, per_slice=1e9)
    seg.memory = memory
    real = seg.encoder
    calls = []

    def spy(x):
        memory.batch = x.shape[0]
        calls.append(x.shape[0])
        return real(x)

    seg._encoder = spy
    images = [random_rgb(seed=s) for s in range(12)]
    embs = seg.embed_many(images, batch_size=12)
    assert calls == [1, 4, 4, 3]  # probe, then int(0.8 * 5 GB / 1 GB) = 4 at a time
    assert seg.last_encoder_batches == calls and seg.encoder_calls == 12
    expected = fresh(micro).embed(images[7]).features
    torch.testing.assert_close(embs[7].features, expected, rtol=1e-4, atol=1e-4)

    calls.clear()
    memory.free = 2.2e9  # another program took memory: smaller batches, no probe again
    seg.embed_many([random_rgb(seed=s) for s in range(20, 24)], batch_size=4)
    assert calls == [1, 1, 1, 1]
