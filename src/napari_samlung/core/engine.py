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
"""

from __future__ import annotations

import threading
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
    ) -> None:
        self.model = model
        self.spec = spec
        self.device = torch.device(device)
        self.precision = self._pick_precision(precision)
        self.cache_limit_bytes = int(cache_limit_mb * 2**20)
        self.disk_cache = disk_cache
        self._cache: OrderedDict[str, Embedding] = OrderedDict()
        self._cache_bytes = 0
        self._lock = threading.RLock()
        self.encoder_calls = 0  # slices run through the image encoder
        mean = torch.tensor(spec.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        self._mean = mean.to(self.device)
        self._std = std.to(self.device)

    @classmethod
    def from_registry(
        cls,
        model_id: str = "lite_medsam",
        checkpoint=None,
        device: str = "auto",
        **kwargs,
    ) -> Segmenter:
        """Load a registered model and wrap it."""
        model, spec, dev = load_model(model_id, checkpoint, device)
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

    def cache_key(self, image_rgb: np.ndarray) -> str:
        return f"{self.spec.id}:{self.precision}:{image_key(image_rgb)}"

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
            x = F.interpolate(x, size=new_rc, mode="bilinear", align_corners=False, antialias=True)
            x = x.clamp_(0, 255)
        x = (x - self._mean) / self._std
        x = F.pad(x, (0, size - new_rc[1], 0, size - new_rc[0]))
        return x.contiguous(), new_rc

    def embed(self, image_rgb: np.ndarray) -> Embedding:
        """Embedding of one (rows, cols, 3) uint8 slice, from cache when possible."""
        return self.embed_many([image_rgb])[0]

    def embed_many(self, images_rgb: Sequence[np.ndarray], batch_size: int = 4) -> list[Embedding]:
        """Embeddings of many slices; cache misses go through the encoder in batches."""
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
                            self.disk_cache.put(keys[i], emb)
                        out[keys[i]] = emb
        return [out[k] for k in keys]

    def _from_disk(self, key: str, image_rgb: np.ndarray) -> Embedding | None:
        hit = self.disk_cache.get(key)
        if hit is None:
            return None
        feats, input_rc, original_rc = hit
        if tuple(original_rc) != tuple(image_rgb.shape[:2]):
            return None
        return Embedding(feats.to(self.device), tuple(input_rc), tuple(original_rc), key)

    @torch.inference_mode()
    def _encode(self, images_rgb: Sequence[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int]]:
        x, new_rc = self._to_input(images_rgb)
        with self._autocast():
            feats = self.model.image_encoder(x)
        self.encoder_calls += len(images_rgb)
        return feats.to(torch.float32), new_rc

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

    def _upscale(self, low_res: torch.Tensor, emb: Embedding) -> torch.Tensor:
        size = self.spec.input_size
        masks = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : emb.input_size_rc[0], : emb.input_size_rc[1]]
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
