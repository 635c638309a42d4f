"""Mask operations: pairwise mask IoU, stability score, small-region clean-up."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ..errors import InputError, require


def _flat(masks: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        masks = torch.as_tensor(np.asarray(masks))
    if masks.dim() != 3:
        raise InputError(f"{name} must be N x H x W, got shape {tuple(masks.shape)}; fix: stack masks on axis 0")
    return masks.reshape(masks.shape[0], -1).bool()


def mask_iou(masks1: torch.Tensor, masks2: torch.Tensor, chunk_pixels: int = 0) -> torch.Tensor:
    """``N x H x W``, ``M x H x W`` bool -> ``N x M`` float32 IoU (0 where both are empty).

    Intersections are exact integer counts: the pixels are processed in chunks (float32
    products on fewer than 2**24 pixels each, accumulated in float64), which also bounds the
    memory to about ``(N + M) * chunk_pixels * 4`` bytes.
    """
    a, b = _flat(masks1, "masks1"), _flat(masks2, "masks2")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"masks1 and masks2 differ in size ({tuple(masks1.shape[1:])} vs "
                         f"{tuple(masks2.shape[1:])}); fix: compare masks of one image")
    n, m, hw = a.shape[0], b.shape[0], a.shape[1]
    if chunk_pixels <= 0:
        chunk_pixels = max(4096, min(2 ** 23, 2 ** 27 // max(1, n + m)))
    inter = torch.zeros(n, m, dtype=torch.float64, device=a.device)
    for s in range(0, hw, chunk_pixels):
        af = a[:, s : s + chunk_pixels].float()
        bf = b[:, s : s + chunk_pixels].float()
        inter += (af @ bf.T).double()
    union = a.sum(1, dtype=torch.float64)[:, None] + b.sum(1, dtype=torch.float64)[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    return iou.float()


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """``... x H x W`` logits -> ``...`` float32 stability: IoU of the masks thresholded at
    ``mask_threshold + offset`` (high) and ``mask_threshold - offset`` (low); the first lies inside
    the second, so IoU = count_high / count_low.

    The one stability score of samkit (``ImagePredictor``, ``AutoMaskGenerator``, the SAM 2
    decoder's dynamic multimask). Where the low mask is empty (no logit above
    ``mask_threshold - offset``, so the mask itself is empty) the score is 0.0: an empty mask is
    never "stable". The official codes differ only in that case:

    * segment-anything's and EdgeSAM's ``calculate_stability_score`` give NaN (0 / 0), which
      the automatic generators' ``>= stability_score_thresh`` filter drops, as it drops 0.0 for
      any threshold > 0 (with the filter off, the reported score is 0.0 instead of NaN);
    * EdgeSAM's predictor returns that NaN as the candidate's score, where an argmax would pick
      the empty mask; ``ImagePredictor(selection="stability")`` ranks it last;
    * SAM 2's decoder gives 1.0, so ``MaskDecoder`` treats an empty single mask as stable itself.
    """
    high = _count_above(logits, mask_threshold + offset)
    low = _count_above(logits, mask_threshold - offset)
    return torch.where(low > 0, high.float() / low.clamp(min=1).float(), 0.0)


def _count_above(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """``... x H x W`` -> ``...`` int64 number of pixels ``> threshold`` (exact: the bool mask is
    summed as bytes into int32, enough for 2**31 pixels per mask)."""
    above = torch.gt(logits, threshold)
    h, w = logits.shape[-2:]
    if h * w < 2 ** 31:  # one flat sum per mask: several times faster than over two dims
        return above.view(torch.uint8).flatten(-2).sum(-1, dtype=torch.int32).long()
    return above.sum(dim=(-1, -2), dtype=torch.int64)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``mode="islands"``) smaller than
    ``area_thresh`` pixels in one H x W bool mask, using 8-connected components (OpenCV).

    Returns ``(mask, changed)``. For islands, when every region is small the largest one is
    kept. Same rule as the official automatic mask generator.
    """
    if mode not in ("holes", "islands"):
        raise InputError(f"mode must be 'holes' or 'islands', got {mode!r}; fix: pick one of the two")
    cv2 = require("cv2", "cv", "removing small mask regions (min_mask_region_area > 0)")
    holes = mode == "holes"
    work = (np.asarray(mask, dtype=bool) ^ holes).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, 8)
    sizes = stats[1:, -1]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return np.asarray(mask, dtype=bool), False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True
