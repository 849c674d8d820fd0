"""The segmenter: image embeddings (cached) + prompts -> lung masks.

This reimplements the two halves of ``segment_anything.SamPredictor`` so that
they can be cached, batched and run at lower precision:

- :meth:`Segmenter.embed` resizes (longest side, antialiased bilinear, in
  torch: no PIL round trip), normalises, pads and runs the image encoder once
  per distinct slice.  Embeddings are kept in a bounded in-memory LRU keyed by
  the model and a hash of the encoder's exact input (the windowed RGB slice),
  and optionally in a disk cache.  A changed window or normalisation changes
  that input, so it can never return a stale embedding.
- :meth:`Segmenter.predict` runs the prompt encoder and mask decoder for any
  number of prompts on one slice in one batch, and returns full-resolution
  masks.

Speed (see docs/performance.md for the measurements behind each choice):

- the encoder runs under bf16 autocast where the hardware has bf16
  (``precision="auto"``); a TinyViT encoder (LiteMedSAM) runs as a private copy
  with every Conv+BatchNorm pair folded into one convolution and in
  channels-last memory layout;
- the mask decoder runs through :class:`FastDecoder`: the same arithmetic as
  ``segment_anything``'s ``MaskDecoder`` (checked against it to float
  rounding in fp32), with the prompt-independent image-side projections
  computed once per embedding, scaled-dot-product attention, the two
  transposed convolutions as matrix products in a channels-last blocked
  layout, the positional encoding computed once, and, at ``bf16`` precision,
  bf16 weights;
- ``fast=False`` runs the model's own modules exactly as ``SamPredictor``
  does (the reference for the agreement tests).
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from ..errors import ModelError, PromptError
from .labels import split_lungs
from .models import ModelSpec, load_model
from .prompts import Prompt, Strategy, validate_prompt


@dataclass
class Embedding:
    """Encoder output for one slice plus the geometry needed to decode it."""

    features: torch.Tensor  # (1, C, h, w) float32, on the model's device
    input_size_rc: tuple[int, int]  # resized size before padding
    original_size_rc: tuple[int, int]
    key: str = ""

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


@dataclass
class Prediction:
    """Masks for the prompts of one slice."""

    masks: np.ndarray  # (n_prompts, rows, cols) bool
    logits: np.ndarray  # (n_prompts, rows, cols) float32
    scores: np.ndarray  # (n_prompts,) predicted IoU


def preprocess_shape(rows: int, cols: int, long_side: int) -> tuple[int, int]:
    """Size after resizing the longest side to ``long_side`` (as SAM's ResizeLongestSide)."""
    scale = long_side / max(rows, cols)
    return int(rows * scale + 0.5), int(cols * scale + 0.5)


def image_key(image_rgb: np.ndarray) -> str:
    """Content hash of an encoder input (shape, dtype and bytes)."""
    import xxhash

    arr = np.ascontiguousarray(image_rgb)
    digest = xxhash.xxh3_128()
    digest.update(f"{arr.shape}{arr.dtype}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: Revision of how a slice becomes the encoder input (resize, normalise, pad);
#: part of every cache key, so a change never serves embeddings of the old input.
#: 2: resized in two rounded passes, as PIL does.
INPUT_REVISION = "in2"


def _resize_like_pil(x: torch.Tensor, size_rc: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of 0..255 float images exactly as segment_anything's
    ``ResizeLongestSide`` does it through PIL: width first, then height, each
    pass antialiased and rounded (half up) to whole grey levels.  One float
    pass instead differs by one grey level on ~15 % of pixels, which moves
    the boundary of small masks."""
    kw = {"mode": "bilinear", "align_corners": False, "antialias": True}
    rows, cols = x.shape[-2:]
    if cols != size_rc[1]:
        x = F.interpolate(x, size=(rows, size_rc[1]), **kw).clamp_(0, 255).add_(0.5).floor_()
    if rows != size_rc[0]:
        x = F.interpolate(x, size=size_rc, **kw).clamp_(0, 255).add_(0.5).floor_()
    return x


def fit_batch_size(
    wanted: int, free_bytes: float, slice_bytes: float, headroom: float = 0.8
) -> int:
    """Largest batch, from 1 to ``wanted``, whose estimated peak memory
    (``slice_bytes`` per slice) fits in ``headroom`` of ``free_bytes``."""
    if slice_bytes <= 0:
        return max(1, wanted)
    return max(1, min(wanted, int(headroom * free_bytes // slice_bytes)))


class CudaMemory:
    """Free and peak memory of one CUDA device, as batch sizing needs them."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def free_bytes(self) -> int:
        """Free device memory plus what torch's allocator holds unused."""
        free, _ = torch.cuda.mem_get_info(self.device)
        idle = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        return int(free + idle)

    def start(self) -> int:
        """Reset the peak counter; returns the memory allocated now."""
        torch.cuda.reset_peak_memory_stats(self.device)
        return torch.cuda.memory_allocated(self.device)

    def peak_since(self, start: int) -> int:
        """Peak allocation since :meth:`start`, above what was allocated then."""
        return torch.cuda.max_memory_allocated(self.device) - start


class Segmenter:
    """Embeds slices once and decodes any number of prompts on them.

    Thread-safe: one lock serialises model calls, so a widget's background
    embedding worker and a prediction never run the model at the same time.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        device: torch.device | str = "cpu",
        *,
        precision: str = "auto",
        cache_limit_mb: float = 512.0,
        disk_cache=None,
        fast: bool = True,
    ) -> None:
        self.model = model
        self.spec = spec
        self.device = torch.device(device)
        self.precision = self._pick_precision(precision)
        self.cache_limit_bytes = int(cache_limit_mb * 2**20)
        self.disk_cache = disk_cache
        self.fast = bool(fast)
        self._cache: OrderedDict[str, Embedding] = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.RLock()
        self.encoder_calls = 0  # slices run through the image encoder
        mean = torch.tensor(spec.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        self._mean = mean.to(self.device)
        self._std = std.to(self.device)
        self._weights_id: str | None = None
        self._encoder: torch.nn.Module | None = None
        self._channels_last = False
        self._micro_batch: int | None = None  # encoder slices per forward pass (None: all)
        # GPU memory, for batch sizes that fit (None on the CPU: no sizing needed)
        self.memory: CudaMemory | None = (
            CudaMemory(self.device) if self.device.type == "cuda" else None
        )
        self._slice_bytes: float | None = None  # measured encoder peak per slice
        self.last_encoder_batches: list[int] = []  # forward-pass sizes of the last encoder call
        self._fuse_ops = True  # oneDNN conv/linear + GELU fusion in the TinyViT encoder
        self._decoder: FastDecoder | None = None

    @classmethod
    def from_registry(
        cls,
        model_id: str = "lite_medsam",
        checkpoint=None,
        device: str = "auto",
        *,
        progress=None,
        **kwargs,
    ) -> Segmenter:
        """Load a registered model and wrap it.  ``progress(done_bytes, total_bytes)``
        is called while its weights download (the first use of a SAM ViT)."""
        model, spec, dev = load_model(model_id, checkpoint, device, progress=progress)
        return cls(model, spec, dev, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def accepts_points(self) -> bool:
        return self.spec.accepts_points

    @property
    def model_id(self) -> str:
        return self.spec.id

    def _pick_precision(self, precision: str) -> str:
        if precision not in ("auto", "fp32", "bf16"):
            raise ModelError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        if precision != "auto":
            return precision
        if self.device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        if self.device.type == "cpu" and cpu_supports_bf16():
            return "bf16"
        return "fp32"

    def _autocast(self):
        if self.precision == "bf16" and self.device.type in ("cpu", "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return torch.autocast(self.device.type, enabled=False)

    # ------------------------------------------------------------------ embedding

    @property
    def weights_id(self) -> str:
        """Fingerprint of the model's weights (16 hex digits), computed once.

        Part of every cache key, so that two checkpoints of one architecture
        (SAM ViT-B and a MedSAM fine-tune, say) never share a disk cache entry.
        """
        if self._weights_id is None:
            self._weights_id = weights_fingerprint(self.model)
        return self._weights_id

    def cache_key(self, image_rgb: np.ndarray) -> str:
        """Identity of a slice's embedding: model id, weights, precision, path and
        a hash of the exact encoder input (so the window is covered)."""
        variant = self.precision if self.fast else f"{self.precision}-ref"
        return f"{self.spec.id}@{self.weights_id}:{variant}:{INPUT_REVISION}:{image_key(image_rgb)}"

    def cached(self, image_rgb: np.ndarray) -> bool:
        """True when this slice's embedding is already in memory."""
        return self.cache_key(image_rgb) in self._cache

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._cache_bytes = 0

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    def _remember(self, emb: Embedding) -> None:
        if emb.key in self._cache:
            self._cache.move_to_end(emb.key)
            return
        self._cache[emb.key] = emb
        self._cache_bytes += emb.nbytes
        while self._cache_bytes > self.cache_limit_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes

    def _to_input(self, images_rgb: Sequence[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Resize, normalise and pad a batch of same-size RGB uint8 slices."""
        rows, cols = images_rgb[0].shape[:2]
        size = self.spec.input_size
        new_rc = preprocess_shape(rows, cols, size)
        batch = torch.from_numpy(np.stack(images_rgb)).to(self.device)
        x = batch.permute(0, 3, 1, 2).to(torch.float32)
        if (rows, cols) != new_rc:
            x = _resize_like_pil(x, new_rc)
        x = (x - self._mean) / self._std
        x = F.pad(x, (0, size - new_rc[1], 0, size - new_rc[0]))
        return x.contiguous(), new_rc

    def embed(self, image_rgb: np.ndarray) -> Embedding:
        """Embedding of one (rows, cols, 3) uint8 slice, from cache when possible."""
        return self.embed_many([image_rgb])[0]

    def embed_many(
        self, images_rgb: Sequence[np.ndarray], batch_size: int = 4, *, tag: str | None = None
    ) -> list[Embedding]:
        """Embeddings of many slices; cache misses go through the encoder in batches.

        ``tag`` (e.g. the window's description) is stored with new disk cache
        entries for inspection; it is not part of the cache key, which already
        hashes the exact encoder input.
        """
        images_rgb = [self._check_rgb(im) for im in images_rgb]
        keys = [self.cache_key(im) for im in images_rgb]
        out: dict[str, Embedding] = {}
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                if key in out:
                    continue
                emb = self._cache.get(key)
                if emb is None and self.disk_cache is not None:
                    emb = self._from_disk(key, images_rgb[i])
                if emb is not None:
                    self._remember(emb)
                    out[key] = emb
                elif i not in missing and keys.index(key) == i:
                    missing.append(i)
            # group same-size slices so they batch
            by_shape: dict[tuple[int, int], list[int]] = {}
            for i in missing:
                by_shape.setdefault(images_rgb[i].shape[:2], []).append(i)
            for shape, idx in by_shape.items():
                for start in range(0, len(idx), max(1, batch_size)):
                    chunk = idx[start : start + max(1, batch_size)]
                    feats, new_rc = self._encode([images_rgb[i] for i in chunk])
                    for j, i in enumerate(chunk):
                        emb = Embedding(feats[j : j + 1].clone(), new_rc, shape, keys[i])
                        self._remember(emb)
                        if self.disk_cache is not None:
                            self._to_disk(emb, tag)
                        out[keys[i]] = emb
        return [out[k] for k in keys]

    def _from_disk(self, key: str, image_rgb: np.ndarray) -> Embedding | None:
        hit = self.disk_cache.get(key)
        if hit is None:
            return None
        feats, input_rc, original_rc = hit
        if tuple(original_rc) != tuple(image_rgb.shape[:2]):
            return None
        expected = preprocess_shape(*image_rgb.shape[:2], self.spec.input_size)
        if tuple(input_rc) != expected:
            return None
        return Embedding(
            feats.to(self.device, torch.float32), tuple(input_rc), tuple(original_rc), key
        )

    def _to_disk(self, emb: Embedding, tag: str | None) -> None:
        if tag is None:
            self.disk_cache.put(emb.key, emb)
        else:
            self.disk_cache.put(emb.key, emb, tag=tag)

    @property
    def encoder(self) -> torch.nn.Module:
        """The module that computes embeddings (an optimised private copy for TinyViT)."""
        if self._encoder is None:
            self._encoder, self._channels_last = self._build_encoder()
        return self._encoder

    def _build_encoder(self) -> tuple[torch.nn.Module, bool]:
        encoder = self.model.image_encoder
        if not self.fast or not _has_conv_bn(encoder):
            return encoder, False
        # TinyViT: fold BatchNorm into the convolutions (measured: about -10 % encoder
        # time, same output to float rounding), faster attention and, on the CPU,
        # convolution/linear + GELU fused by oneDNN in channels-last layout.
        encoder = fuse_conv_bn(copy.deepcopy(encoder)).eval()
        on_cpu = self.device.type == "cpu"
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        speed_up_tinyvit(encoder, dtype, fuse_ops=on_cpu and self._fuse_ops)
        if on_cpu:
            # Its first stage keeps 256 x 256 x 256 activations: batched, they
            # overflow the CPU caches and a slice takes about twice as long.
            self._micro_batch = 1
            return encoder.to(memory_format=torch.channels_last), True
        return encoder, False

    @torch.inference_mode()
    def _encode(self, images_rgb: Sequence[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int]]:
        x, new_rc = self._to_input(images_rgb)
        encoder = self.encoder
        cap = self._micro_batch or x.shape[0]  # most slices per forward pass
        parts = []
        self.last_encoder_batches = []
        start = 0
        with self._autocast():
            while start < x.shape[0]:
                step = self._fit_batch(min(cap, x.shape[0] - start))
                part = x[start : start + step]
                if self._channels_last:
                    part = part.contiguous(memory_format=torch.channels_last)
                mark = self.memory.start() if self.memory is not None else None
                try:
                    out = encoder(part)
                except torch.OutOfMemoryError:
                    if step == 1:
                        raise
                    # out of GPU memory: halve the batch and carry on (and remember it)
                    cap = self._micro_batch = max(1, step // 2)
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                except RuntimeError:
                    if not self._fuse_ops or encoder is self.model.image_encoder:
                        raise
                    # a oneDNN build without these fusions: plain operations from now on
                    self._fuse_ops, self._encoder = False, None
                    encoder = self.encoder
                    out = encoder(part)
                if mark is not None:
                    per_slice = self.memory.peak_since(mark) / part.shape[0]
                    self._slice_bytes = max(self._slice_bytes or 0.0, per_slice)
                parts.append(out.to(torch.float32))
                self.last_encoder_batches.append(part.shape[0])
                start += part.shape[0]
        self.encoder_calls += len(images_rgb)
        feats = parts[0] if len(parts) == 1 else torch.cat(parts)
        return feats.contiguous(), new_rc

    def _fit_batch(self, wanted: int) -> int:
        """Slices for the next forward pass: ``wanted``, or fewer where the
        device's free memory would not hold them.  On a GPU the first pass runs
        one slice to measure what a slice costs; later passes take as many as
        fit in 80 % of the free memory then (re-read before every pass)."""
        if self.memory is None or wanted <= 1:
            return wanted
        if self._slice_bytes is None:
            return 1
        return fit_batch_size(wanted, self.memory.free_bytes(), self._slice_bytes)

    @staticmethod
    def _check_rgb(image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected a (rows, cols, 3) uint8 slice, got shape {image.shape} {image.dtype}; "
                "window it first with core.windowing.to_rgb"
            )
        return image

    # ------------------------------------------------------------------ decoding

    @torch.inference_mode()
    def predict(
        self, embedding: Embedding, prompts: Sequence[Prompt], *, multimask: bool = False
    ) -> Prediction:
        """Decode prompts (already validated, in original-slice pixel coordinates)."""
        if not prompts:
            raise PromptError("no prompts to segment")
        rows, cols = embedding.original_size_rc
        # Prompts with the same structure decode together in one batch.
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault((len(p.points_xy), p.box_xyxy is not None), []).append(i)
        logits = torch.empty((len(prompts), rows, cols), dtype=torch.float32)
        scores = np.zeros(len(prompts), np.float32)
        with self._lock:
            for (n_points, has_box), idx in groups.items():
                lg, sc = self._decode(
                    embedding, [prompts[i] for i in idx], n_points, has_box, multimask
                )
                logits[idx] = lg.cpu()
                scores[idx] = sc.cpu().numpy()
        logits_np = logits.numpy()
        return Prediction(logits_np > 0.0, logits_np, scores)

    def _transform_xy(self, coords_xy: np.ndarray, emb: Embedding) -> np.ndarray:
        rows, cols = emb.original_size_rc
        new_rows, new_cols = emb.input_size_rc
        out = np.asarray(coords_xy, np.float32).copy()
        out[..., 0] *= new_cols / cols
        out[..., 1] *= new_rows / rows
        return out

    def _decode(
        self,
        emb: Embedding,
        prompts: Sequence[Prompt],
        n_points: int,
        has_box: bool,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        points = boxes = None
        if n_points:
            coords = np.stack([self._transform_xy(p.points_xy, emb) for p in prompts])
            labels = np.stack([p.point_labels for p in prompts])
            points = (
                torch.from_numpy(coords).to(self.device),
                torch.from_numpy(labels.astype(np.int32)).to(self.device),
            )
        if has_box:
            box = np.stack(
                [self._transform_xy(p.box_xyxy.reshape(2, 2), emb).reshape(4) for p in prompts]
            )
            boxes = torch.from_numpy(box).to(self.device)
        sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
        decoder = self.fast_decoder
        if decoder is not None:
            low_res, iou = decoder(emb, sparse, multimask=multimask)
        else:
            low_res, iou = self.model.mask_decoder(
                image_embeddings=emb.features,
                image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        if multimask:
            choice = self._choose_masks(low_res, iou, prompts, emb)
            take = torch.arange(len(prompts))
            low_res, iou = low_res[take, choice][:, None], iou[take, choice][:, None]
        full = self._upscale(low_res, emb)
        return full[:, 0], iou[:, 0]

    @property
    def fast_decoder(self) -> FastDecoder | None:
        """The decoder used when ``fast`` (built on first use), else ``None``."""
        if not self.fast or not FastDecoder.supports(self.model):
            return None
        if self._decoder is None:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
            self._decoder = FastDecoder(self.model, dtype=dtype)
        return self._decoder

    def _upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        """Low-resolution logits -> logits at the original slice size (as SAM's
        ``postprocess_masks``: to the input size, crop the padding, to the slice)."""
        size = self.spec.input_size
        masks = low_res.to(torch.float32)
        if tuple(masks.shape[-2:]) != (size, size):  # same size is an exact no-op
            masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : emb.input_size_rc[0], : emb.input_size_rc[1]]
        if tuple(masks.shape[-2:]) == tuple(emb.original_size_rc):
            return masks.contiguous()
        return F.interpolate(masks, emb.original_size_rc, mode="bilinear", align_corners=False)

    def _choose_masks(
        self, low_res: torch.Tensor, iou: torch.Tensor, prompts: Sequence[Prompt], emb: Embedding
    ) -> torch.Tensor:
        """Per prompt, the mask with the best predicted IoU plus box agreement."""
        score = iou.clone()
        full = self._upscale(low_res, emb) > 0
        for i, p in enumerate(prompts):
            if p.box_xyxy is None:
                continue
            x0, y0, x1, y1 = p.box_xyxy
            for k in range(full.shape[1]):
                m = full[i, k]
                if not m.any():
                    score[i, k] -= 1.0
                    continue
                r = torch.nonzero(m.any(dim=1)).flatten()
                c = torch.nonzero(m.any(dim=0)).flatten()
                mb = (float(c[0]), float(r[0]), float(c[-1]), float(r[-1]))
                score[i, k] += _box_iou(mb, (float(x0), float(y0), float(x1), float(y1)))
        return score.argmax(dim=1)

    # ------------------------------------------------------------------ slices

    def segment_slice(
        self,
        image_rgb: np.ndarray,
        prompts: Sequence[Prompt],
        *,
        strategy: Strategy | None = None,
        validate: bool = True,
    ) -> tuple[np.ndarray, float]:
        """Lung labels (uint8, 0/1/2) for one slice from its prompts, and the mean score.

        Prompts with a ``target_label`` paint that label; prompts without one
        are split into left/right lungs.  Where two prompts' masks overlap the
        larger logit wins.
        """
        rows, cols = image_rgb.shape[:2]
        if validate:
            prompts = [validate_prompt(p, (rows, cols), self.accepts_points) for p in prompts]
        elif not self.accepts_points:
            prompts = [p.without_points() for p in prompts]
        if not prompts:
            return np.zeros((rows, cols), np.uint8), float("nan")
        emb = self.embed(image_rgb)
        pred = self.predict(emb, prompts, multimask=bool(strategy and strategy.multimask))
        labels = combine_masks(pred, prompts)
        if strategy is not None and strategy.postprocess:
            labels = clean_labels(labels)
        return labels, float(np.mean(pred.scores))


def combine_masks(pred: Prediction, prompts: Sequence[Prompt]) -> np.ndarray:
    """Merge per-prompt masks into one lung label image."""
    n, rows, cols = pred.logits.shape
    if n == 1 and prompts[0].target_label is None:
        return split_lungs(pred.masks[0])
    logits = np.where(pred.masks, pred.logits, -np.inf)
    winner = np.argmax(logits, axis=0)
    any_mask = pred.masks.any(axis=0)
    out = np.zeros((rows, cols), np.uint8)
    for i, p in enumerate(prompts):
        sel = any_mask & (winner == i)
        if p.target_label is None:
            out[sel] = split_lungs(sel)[sel]
        else:
            out[sel] = p.target_label
    return out


def clean_labels(labels: np.ndarray) -> np.ndarray:
    """Per lung label: keep the largest connected component and fill its holes."""
    out = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        comp, n = ndi.label(labels == value)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = ndi.binary_fill_holes(comp == (int(np.argmax(sizes)) + 1))
        out[keep & (out == 0)] = value
    return out


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- speed


def weights_fingerprint(model: torch.nn.Module) -> str:
    """xxh3-64 over the names, shapes, dtypes and bytes of a model's state (16 hex digits)."""
    import xxhash

    digest = xxhash.xxh3_64()
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        if t.numel():
            t = t.to("cpu").contiguous().reshape(-1)
            digest.update(memoryview(t.view(torch.uint8).numpy()).cast("B"))
    return digest.hexdigest()


def _has_conv_bn(module: torch.nn.Module) -> bool:
    return any(_is_conv_bn(m) for m in module.modules())


def _is_conv_bn(module: torch.nn.Module) -> bool:
    children = dict(module.named_children())
    return (
        set(children) == {"c", "bn"}
        and isinstance(children["c"], torch.nn.Conv2d)
        and isinstance(children["bn"], torch.nn.BatchNorm2d)
    )


@torch.no_grad()
def fuse_conv_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every TinyViT ``Conv2d_BN`` (a Conv2d followed by a BatchNorm2d in
    eval mode) inside ``module`` by one equivalent Conv2d, in place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if not _is_conv_bn(child):
                continue
            conv, bn = child.c, child.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = torch.nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                groups=conv.groups,
                bias=True,
            ).to(conv.weight.device, conv.weight.dtype)
            fused.weight.copy_(conv.weight * scale[:, None, None, None])
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            setattr(parent, name, fused)
    return module


# ----------------------------------------------------------------- TinyViT encoder


def speed_up_tinyvit(encoder: torch.nn.Module, dtype: torch.dtype, fuse_ops: bool = True) -> int:
    """Faster forwards for the blocks of a TinyViT encoder (LiteMedSAM), in place.

    - window attention: the relative-position bias is added and the softmax
      taken in the dtype of the scores (bf16 under autocast) instead of
      autocast's float32 round trip (about 4x less time for the attention of
      the 14 x 14 windows);
    - with ``fuse_ops`` and oneDNN available: each convolution or linear layer
      followed by GELU runs as one oneDNN call with GELU as a post-op (the
      GELU is computed in float32 inside), and the MBConv residual add is
      fused into its last convolution.  ``dtype`` is the dtype they run in
      (bf16 under bf16 autocast).

    The arithmetic is unchanged up to rounding.  Returns the number of blocks
    switched.  Call :func:`fuse_conv_bn` first (the fused ops take plain convs).
    """
    import types

    names = {"Attention", "MBConv", "PatchEmbed", "PatchMerging", "Mlp"}
    fused = fuse_ops and _onednn_fusion_available()
    count = 0
    for module in encoder.modules():
        kind = type(module).__name__
        if kind not in names or not type(module).__module__.endswith("tiny_vit_sam"):
            continue
        if kind == "Attention" and hasattr(module, "ab"):
            module.forward = types.MethodType(_tinyvit_attention, module)
        elif not fused:
            continue
        elif (
            kind == "MBConv"
            and isinstance(module.drop_path, torch.nn.Identity)
            and _plain_convs(module.conv1, module.conv2, module.conv3)
            and isinstance(module.act1, torch.nn.GELU)
            and isinstance(module.act2, torch.nn.GELU)
        ):
            module.forward = types.MethodType(_tinyvit_mbconv, module)
        elif (
            kind == "PatchEmbed"
            and _plain_convs(module.seq[0])
            and isinstance(module.seq[1], torch.nn.GELU)
        ):
            module.forward = types.MethodType(_tinyvit_patch_embed, module)
        elif (
            kind == "PatchMerging"
            and _plain_convs(module.conv1, module.conv2)
            and isinstance(module.act, torch.nn.GELU)
        ):
            module.forward = types.MethodType(_tinyvit_patch_merging, module)
        elif kind == "Mlp" and isinstance(module.act, torch.nn.GELU):
            module.forward = types.MethodType(_tinyvit_mlp, module)
        else:
            continue
        module._fused_dtype = dtype
        count += 1
    return count


def _plain_convs(*layers: torch.nn.Module) -> bool:
    """True when every layer is a bare Conv2d (BatchNorm already folded in)."""
    return all(type(layer) is torch.nn.Conv2d for layer in layers)


def _onednn_fusion_available() -> bool:
    try:
        return bool(
            torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        )
    except (AttributeError, RuntimeError):  # pragma: no cover
        return False


def _fused_weights(layer: torch.nn.Module, dtype: torch.dtype):
    cache = layer.__dict__.setdefault("_fused_weights", {})
    if dtype not in cache:
        weight = layer.weight.detach().to(dtype)
        if weight.dim() == 4:
            weight = weight.contiguous(memory_format=torch.channels_last)
        bias = None if layer.bias is None else layer.bias.detach().to(dtype)
        cache[dtype] = (weight, bias)
    return cache[dtype]


def _conv_gelu(conv: torch.nn.Conv2d, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    weight, bias = _fused_weights(conv, dtype)
    return torch.ops.mkldnn._convolution_pointwise(
        x.to(dtype), weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups,
        "gelu", [], "none",
    )  # fmt: skip


def _tinyvit_mbconv(self, x: torch.Tensor) -> torch.Tensor:
    dtype = self._fused_dtype
    shortcut = x
    x = _conv_gelu(self.conv1, x, dtype)
    x = _conv_gelu(self.conv2, x, dtype)
    weight, bias = _fused_weights(self.conv3, dtype)
    conv = self.conv3
    x = torch.ops.mkldnn._convolution_pointwise.binary(
        x, shortcut.to(dtype), weight, bias, conv.padding, conv.stride, conv.dilation,
        conv.groups, "add", None, None, [], None,
    )  # fmt: skip
    return self.act3(x)


def _tinyvit_patch_embed(self, x: torch.Tensor) -> torch.Tensor:
    return self.seq[2](_conv_gelu(self.seq[0], x, self._fused_dtype))


def _tinyvit_patch_merging(self, x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:
        rows, cols = self.input_resolution
        x = x.view(len(x), rows, cols, -1).permute(0, 3, 1, 2)
    x = _conv_gelu(self.conv1, x, self._fused_dtype)
    x = _conv_gelu(self.conv2, x, self._fused_dtype)
    return self.conv3(x).flatten(2).transpose(1, 2)


def _tinyvit_mlp(self, x: torch.Tensor) -> torch.Tensor:
    x = self.norm(x)
    weight, bias = _fused_weights(self.fc1, self._fused_dtype)
    flat = x.to(self._fused_dtype).reshape(-1, x.shape[-1])
    hidden = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, "gelu", [], "none")
    return self.fc2(hidden.view(*x.shape[:-1], -1))


def _tinyvit_attention(self, x: torch.Tensor) -> torch.Tensor:
    batch, tokens, _ = x.shape
    x = self.norm(x)
    qkv = self.qkv(x).view(batch, tokens, self.num_heads, -1)
    q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=3)
    q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    with torch.autocast(x.device.type, enabled=False):
        bias = self.__dict__.get("_bias_cast")
        if bias is None or bias.dtype != q.dtype:
            bias = self.ab.to(q.dtype)
            self.__dict__["_bias_cast"] = bias
        scores = torch.matmul(q * self.scale, k.transpose(-2, -1)).add_(bias)
        out = torch.matmul(torch.softmax(scores, dim=-1), v.to(scores.dtype))
    return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.dh))


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
                x.device.type == "cpu" and self.gelu2 == "none" and _onednn_fusion_available()
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
