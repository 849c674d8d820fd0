"""Image embeddings: the records, the exact encoder input and the geometry
between a slice and the encoder's frame.

A slice (rows, cols) is resized so that its longest side is the model's input
size, normalised and padded at the bottom and right; prompts and masks move
between the two frames with :func:`to_input_xy` and :func:`upscale_logits`.
Everything matches ``segment_anything.SamPredictor`` (tested against it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .models import ModelSpec

#: Revision of how a slice becomes the encoder input (resize, normalise, pad);
#: part of every cache key, so a change never serves embeddings of the old input.
#: 2: resized in two rounded passes, as PIL does.
INPUT_REVISION = "in2"


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
    predicted_iou: np.ndarray  # (n_prompts,) float32, the model's estimate of each mask's IoU


def preprocess_shape(rows: int, cols: int, long_side: int) -> tuple[int, int]:
    """Size after resizing the longest side to ``long_side`` (as SAM's ResizeLongestSide).

    Parameters
    ----------
    rows, cols : int
        Slice size in pixels.
    long_side : int
        Target length of the longest side, in pixels.

    Returns
    -------
    tuple of int
        ``(rows, cols)`` after resizing, rounded half up.
    """
    scale = long_side / max(rows, cols)
    return int(rows * scale + 0.5), int(cols * scale + 0.5)


def image_key(image_rgb: np.ndarray) -> str:
    """Content hash of an encoder input (shape, dtype and bytes), 32 hex digits."""
    import xxhash

    arr = np.ascontiguousarray(image_rgb)
    digest = xxhash.xxh3_128()
    digest.update(f"{arr.shape}{arr.dtype}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


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


def check_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as an array, or a ValueError unless it is a (rows, cols, 3) uint8 slice."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a (rows, cols, 3) uint8 slice, got shape {image.shape} {image.dtype}; "
            "window it first with core.windowing.to_rgb"
        )
    return image


def resize_like_pil(x: torch.Tensor, size_rc: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of 0..255 float images exactly as segment_anything's
    ``ResizeLongestSide`` does it through PIL.

    Width first, then height, each pass antialiased and rounded (half up) to
    whole grey levels.  One float pass instead differs by one grey level on
    ~15 % of pixels, which moves the boundary of small masks.

    Parameters
    ----------
    x : torch.Tensor
        (batch, channels, rows, cols) float32 in 0..255; modified results are new tensors.
    size_rc : tuple of int
        Target ``(rows, cols)``.
    """
    kw = {"mode": "bilinear", "align_corners": False, "antialias": True}
    rows, cols = x.shape[-2:]
    if cols != size_rc[1]:
        x = F.interpolate(x, size=(rows, size_rc[1]), **kw).clamp_(0, 255).add_(0.5).floor_()
    if rows != size_rc[0]:
        x = F.interpolate(x, size=size_rc, **kw).clamp_(0, 255).add_(0.5).floor_()
    return x


def encoder_input(
    images_rgb: Sequence[np.ndarray], spec: ModelSpec, device: torch.device | str
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The image encoder's input for a batch of same-size slices.

    Parameters
    ----------
    images_rgb : sequence of np.ndarray
        (rows, cols, 3) uint8 slices, all of one size.
    spec : ModelSpec
        Gives the input size and the pixel mean and standard deviation.
    device : torch.device or str

    Returns
    -------
    x : torch.Tensor
        (batch, 3, size, size) float32: resized (longest side to ``size``),
        normalised and zero-padded at the bottom and right.
    new_rc : tuple of int
        ``(rows, cols)`` after resizing, before padding.
    """
    rows, cols = images_rgb[0].shape[:2]
    size = spec.input_size
    new_rc = preprocess_shape(rows, cols, size)
    mean = torch.tensor(spec.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    std = torch.tensor(spec.pixel_std, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    batch = torch.from_numpy(np.stack(images_rgb)).to(device)
    x = batch.permute(0, 3, 1, 2).to(torch.float32)
    if (rows, cols) != new_rc:
        x = resize_like_pil(x, new_rc)
    x = (x - mean) / std
    x = F.pad(x, (0, size - new_rc[1], 0, size - new_rc[0]))
    return x.contiguous(), new_rc


def to_input_xy(coords_xy: np.ndarray, emb: Embedding) -> np.ndarray:
    """Points (..., 2) as (x, y) in slice pixels -> (x, y) in the resized encoder frame."""
    rows, cols = emb.original_size_rc
    new_rows, new_cols = emb.input_size_rc
    out = np.asarray(coords_xy, np.float32).copy()
    out[..., 0] *= new_cols / cols
    out[..., 1] *= new_rows / rows
    return out


def upscale_logits(low_res: torch.Tensor, emb: Embedding, input_size: int) -> torch.Tensor:
    """Low-resolution mask logits -> logits at the original slice size.

    As SAM's ``postprocess_masks``: to the (square) input size, crop the
    padding, to the slice.  ``low_res`` is (batch, masks, h, w); the result is
    (batch, masks, rows, cols) float32.
    """
    masks = low_res.to(torch.float32)
    if tuple(masks.shape[-2:]) != (input_size, input_size):  # same size is an exact no-op
        masks = F.interpolate(masks, (input_size, input_size), mode="bilinear", align_corners=False)
    masks = masks[..., : emb.input_size_rc[0], : emb.input_size_rc[1]]
    if tuple(masks.shape[-2:]) == tuple(emb.original_size_rc):
        return masks.contiguous()
    return F.interpolate(masks, emb.original_size_rc, mode="bilinear", align_corners=False)


def embedding_from_cache(
    key: str, hit, image_rgb: np.ndarray, input_size: int, device: torch.device
) -> Embedding | None:
    """An :class:`Embedding` from a disk cache entry, or None when its geometry does not fit.

    ``hit`` is what :meth:`DiskCache.get` returns: ``(features, input_size_rc,
    original_size_rc)`` or None.
    """
    if hit is None:
        return None
    feats, input_rc, original_rc = hit
    if tuple(original_rc) != tuple(image_rgb.shape[:2]):
        return None
    if tuple(input_rc) != preprocess_shape(*image_rgb.shape[:2], input_size):
        return None
    return Embedding(feats.to(device, torch.float32), tuple(input_rc), tuple(original_rc), key)
