"""Mask assembly: SAM's per-prompt masks -> one lung label image.

Labels are uint8 (rows, cols) images with 0 background, 1 left lung and
2 right lung (see :mod:`.labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from .embedding import Embedding, Prediction, upscale_logits
from .labels import side_of_midline, split_lungs
from .prompts import ONE_LUNG, Prompt


def combine_masks(
    pred: Prediction, prompts: Sequence[Prompt], midline_col: float | None = None
) -> np.ndarray:
    """Merge per-prompt masks into one lung label image.

    Parameters
    ----------
    pred : Prediction
        Masks and logits, (n_prompts, rows, cols).
    prompts : sequence of Prompt
        The prompts of ``pred``, in order.  A ``target_label`` of 1 or 2 paints
        that label; :data:`~.prompts.ONE_LUNG` paints one lung, named by the side
        of ``midline_col`` its mask lies on; ``None`` (a box around both lungs)
        is split into left and right lungs.
    midline_col : float, optional
        The body's midline, in pixel columns (default: the image's centre).

    Returns
    -------
    np.ndarray
        (rows, cols) uint8 lung labels; where masks overlap the larger logit wins.
    """
    n, rows, cols = pred.logits.shape
    if midline_col is None:
        midline_col = (cols - 1) / 2.0
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
        elif p.target_label == ONE_LUNG:
            if sel.any():
                out[sel] = side_of_midline(sel, midline_col)
        else:
            out[sel] = p.target_label
    return out


def clean_labels(labels: np.ndarray) -> np.ndarray:
    """Per lung label: keep the largest connected component and fill its holes.

    ``labels`` is a (rows, cols) label image; the result has its shape and dtype.
    """
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


def choose_masks(
    low_res: torch.Tensor,
    predicted_iou: torch.Tensor,
    prompts: Sequence[Prompt],
    emb: Embedding,
    input_size: int,
) -> torch.Tensor:
    """Per prompt, the index of the mask with the best predicted IoU plus box agreement.

    Parameters
    ----------
    low_res : torch.Tensor
        (n_prompts, n_masks, h, w) low-resolution mask logits.
    predicted_iou : torch.Tensor
        (n_prompts, n_masks) the model's predicted IoU of each mask.
    prompts : sequence of Prompt
        The prompts; a prompt's box (x0, y0, x1, y1) adds the IoU of each
        mask's bounding box with it (an empty mask loses 1).
    emb : Embedding
        The slice's embedding (for the geometry).
    input_size : int
        The model's square input size, in pixels.

    Returns
    -------
    torch.Tensor
        (n_prompts,) int64 indices into the masks.
    """
    score = predicted_iou.clone()
    full = upscale_logits(low_res, emb, input_size) > 0
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


def _box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes with inclusive pixel corners."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = ix * iy
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0
