"""The segmenter: image embeddings (cached) + prompts -> lung masks.

Its parts live next to it: records and encoder input in :mod:`.embedding`,
device and memory questions in :mod:`.hardware`, mask assembly in
:mod:`.masks`, the speed paths in :mod:`.fast`.

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
- the mask decoder runs through :class:`~.fast.FastDecoder`: the same arithmetic as
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
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import PromptError
from .embedding import (
    INPUT_REVISION,
    Embedding,
    Prediction,
    check_rgb,
    embedding_from_cache,
    encoder_input,
    image_key,
    to_input_xy,
    upscale_logits,
    weights_fingerprint,
)
from .fast import FastDecoder, fuse_conv_bn, has_conv_bn, speed_up_tinyvit
from .hardware import CudaMemory, fit_batch_size, pick_precision
from .masks import choose_masks, clean_labels, combine_masks
from .models import ModelSpec, load_model
from .prompts import Prompt, Strategy, for_model, validate_prompt


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
        self.precision = pick_precision(precision, self.device)
        self.cache_limit_bytes = int(cache_limit_mb * 2**20)
        self.disk_cache = disk_cache
        self.fast = bool(fast)
        self._cache: OrderedDict[str, Embedding] = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.RLock()
        self.encoder_calls = 0  # slices run through the image encoder
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
        """:func:`~.embedding.encoder_input` for this model and device."""
        return encoder_input(images_rgb, self.spec, self.device)

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
        images_rgb = [check_rgb(im) for im in images_rgb]
        keys = [self.cache_key(im) for im in images_rgb]
        out: dict[str, Embedding] = {}
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                if key in out:
                    continue
                emb = self._cache.get(key)
                if emb is None and self.disk_cache is not None:
                    emb = embedding_from_cache(
                        key,
                        self.disk_cache.get(key),
                        images_rgb[i],
                        self.spec.input_size,
                        self.device,
                    )
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
        if not self.fast or not has_conv_bn(encoder):
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
        predicted_iou = np.zeros(len(prompts), np.float32)
        with self._lock:
            for (n_points, has_box), idx in groups.items():
                lg, iou = self._decode(
                    embedding, [prompts[i] for i in idx], n_points, has_box, multimask
                )
                logits[idx] = lg.cpu()
                predicted_iou[idx] = iou.cpu().numpy()
        logits_np = logits.numpy()
        return Prediction(logits_np > 0.0, logits_np, predicted_iou)

    #: :func:`~.embedding.to_input_xy` (benchmarks/ablation.py calls it by this name)
    _transform_xy = staticmethod(to_input_xy)

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
            coords = np.stack([to_input_xy(p.points_xy, emb) for p in prompts])
            labels = np.stack([p.point_labels for p in prompts])
            points = (
                torch.from_numpy(coords).to(self.device),
                torch.from_numpy(labels.astype(np.int32)).to(self.device),
            )
        if has_box:
            box = np.stack([to_input_xy(p.box_xyxy.reshape(2, 2), emb).reshape(4) for p in prompts])
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
            choice = choose_masks(low_res, iou, prompts, emb, self.spec.input_size)
            take = torch.arange(len(prompts))
            low_res, iou = low_res[take, choice][:, None], iou[take, choice][:, None]
        full = upscale_logits(low_res, emb, self.spec.input_size)
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

    # ------------------------------------------------------------------ slices

    def segment_slice(
        self,
        image_rgb: np.ndarray,
        prompts: Sequence[Prompt],
        *,
        strategy: Strategy | None = None,
        validate: bool = True,
        midline_col: float | None = None,
    ) -> tuple[np.ndarray, float]:
        """Lung labels (uint8, 0/1/2) for one slice from its prompts, and the mean predicted IoU.

        Prompts with a ``target_label`` of 1 or 2 paint that label; a
        :data:`~.prompts.ONE_LUNG` prompt paints one lung named by its side of
        ``midline_col`` (the body's midline in pixel columns; default the image
        centre); a prompt without one is split into left/right lungs.  Where
        two prompts' masks overlap the larger logit wins.
        """
        rows, cols = image_rgb.shape[:2]
        if validate:
            prompts = [validate_prompt(p, (rows, cols), self.accepts_points) for p in prompts]
        else:
            prompts = [for_model(p, self.accepts_points) for p in prompts]
        if not prompts:
            return np.zeros((rows, cols), np.uint8), float("nan")
        emb = self.embed(image_rgb)
        pred = self.predict(emb, prompts, multimask=bool(strategy and strategy.multimask))
        labels = combine_masks(pred, prompts, midline_col)
        if strategy is not None and strategy.postprocess:
            labels = clean_labels(labels)
        return labels, float(np.mean(pred.predicted_iou))
