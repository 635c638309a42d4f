"""Non-maximum suppression family. Every function returns int64 indices of the kept items
in decreasing score order (ties resolved by ``torch.sort(descending=True)``).

* ``greedy_nms``: classic greedy NMS with optional categories. Same semantics, bit for bit,
  as the batched greedy NMS of torchvision that the official SAM code calls: candidates are
  visited by descending score; a kept box suppresses every later box of its category whose
  IoU ``inter / (area_i + area_j - inter)`` (box dtype, compared in double precision) is
  ``> iou_thresh``; per category through the coordinate-offset trick up to 1000 boxes and
  per-category runs merged and re-sorted by score above, exactly as torchvision dispatches
  on CPU (which matters only for exact ties).
* ``fast_nms``: Fast NMS (YOLACT, Bolya et al. 2019): one upper-triangular IoU matrix in
  score order; a box is dropped when ANY higher-scoring box overlaps it ``> iou_thresh``,
  even one that is itself dropped. Fully parallel; it can drop more than greedy.
* ``mask_nms``: greedy NMS on mask IoU instead of box IoU, for crowded scenes where boxes of
  distinct objects overlap heavily but the masks do not.
* ``noh_nms``: NOH-NMS (Zhou et al., ACM MM 2020, "Improving Pedestrian Detection by Nearby
  Objects Hallucination"): each box comes with a hallucinated nearby-object box and the
  probability that such an overlapping neighbour exists. A kept box M suppresses a
  candidate b only when ``IoU(M, b) > max(iou_thresh, p_M * g_M(b))`` where ``g_M(b) =
  exp(-||delta(b | M) - delta(h_M | M)||^2 / (2 sigma^2))`` is a Gaussian in R-CNN box-delta
  space centred on M's hallucinated neighbour ``h_M`` (``sigma`` a scalar or per-box 4-vector).
  Candidates that look like the predicted neighbour get a higher suppression threshold;
  with ``p = 0`` it is greedy NMS.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from ..errors import InputError
from .boxes import _check_boxes, box_iou, encode_box_deltas
from .mask_ops import mask_iou

_MATRIX_LIMIT = 4096  # above this many boxes the greedy pass computes IoU rows on demand


def _scores(scores: torch.Tensor, n: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(scores)
    if scores.dim() != 1 or scores.shape[0] != n:
        raise InputError(f"scores must have shape ({n},) to match the boxes, got {tuple(scores.shape)}; "
                         f"fix: pass one score per box")
    return scores


def _thresh(iou_thresh: float) -> float:
    t = float(iou_thresh)
    if not np.isfinite(t):
        raise InputError(f"iou_thresh must be a finite number, got {iou_thresh!r}; fix: use a value in [0, 1]")
    return t


def _greedy_from_matrix(over: np.ndarray) -> list:
    """``over[i, j]``: item i (in visiting order) would suppress item j. Returns kept positions."""
    n = over.shape[0]
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return keep


def _greedy_single(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> torch.Tensor:
    """One category; ``boxes`` floating. Kept indices in visiting order."""
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = scores.sort(0, descending=True)[1]
    b = boxes[order]
    if n <= _MATRIX_LIMIT:
        over = (box_iou(b, b).double() > thr).cpu().numpy()
        keep = _greedy_from_matrix(over)
    else:
        suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
        keep = []
        for i in range(n):
            if bool(suppressed[i]):
                continue
            keep.append(i)
            if i + 1 < n:
                row = box_iou(b[i : i + 1], b[i + 1 :])[0].double() > thr
                suppressed[i + 1 :] |= row
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float,
               categories: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy NMS. ``boxes`` N x 4 xyxy, ``scores`` (N,), optional ``categories`` (N,) ints:
    boxes of different categories never suppress each other. Returns kept indices (int64)."""
    boxes = _check_boxes(boxes)
    n = boxes.shape[0]
    scores = _scores(scores, n)
    thr = _thresh(iou_thresh)
    if not boxes.is_floating_point():
        boxes = boxes.to(scores.dtype if scores.is_floating_point() else torch.float32)
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if categories is None:
        categories = torch.zeros(n, dtype=torch.int64, device=boxes.device)
    categories = torch.as_tensor(categories, device=boxes.device)
    if categories.shape != (n,):
        raise InputError(f"categories must have shape ({n},), got {tuple(categories.shape)}; fix: one id per box")
    if boxes.numel() > 4000:
        keep_mask = torch.zeros(n, dtype=torch.bool, device=boxes.device)
        for c in torch.unique(categories):
            members = torch.where(categories == c)[0]
            keep_mask[members[_greedy_single(boxes[members], scores[members], thr)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    # coordinate-offset trick: category c is shifted by c * (max + 1), so categories never overlap
    offsets = categories.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return _greedy_single(boxes + offsets[:, None], scores, thr)


def fast_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float,
             categories: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fast NMS (YOLACT). Keeps box j iff ``max_{i before j} IoU(i, j) <= iou_thresh`` over all
    higher-scoring boxes i of its category, suppressed or not. Kept indices by score."""
    boxes = _check_boxes(boxes)
    n = boxes.shape[0]
    scores = _scores(scores, n)
    thr = _thresh(iou_thresh)
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if not boxes.is_floating_point():
        boxes = boxes.float()
    order = scores.sort(0, descending=True)[1]
    b = boxes[order]
    iou = torch.nan_to_num(box_iou(b, b).double(), nan=0.0).triu_(diagonal=1)
    if categories is not None:
        c = torch.as_tensor(categories, device=boxes.device)[order]
        iou = iou * (c[:, None] == c[None, :])
    keep = iou.max(dim=0).values <= thr
    return order[keep]


def _iou_thresholded_greedy(iou: torch.Tensor, limit: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    over = (torch.nan_to_num(iou.double(), nan=0.0) > limit).cpu().numpy()
    keep = _greedy_from_matrix(over)
    return order[torch.as_tensor(keep, dtype=torch.int64, device=order.device)]


def mask_nms(masks: torch.Tensor, scores: torch.Tensor, iou_thresh: float,
             categories: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Greedy NMS on mask IoU. ``masks`` N x H x W bool. Kept indices by score."""
    if not isinstance(masks, torch.Tensor) or masks.dim() != 3:
        raise InputError("masks must be an N x H x W bool tensor; fix: stack the masks on axis 0")
    n = masks.shape[0]
    scores = _scores(scores, n)
    thr = _thresh(iou_thresh)
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=masks.device)
    order = scores.sort(0, descending=True)[1]
    m = masks[order]
    iou = mask_iou(m, m)
    if categories is not None:
        c = torch.as_tensor(categories, device=masks.device)[order]
        iou = iou * (c[:, None] == c[None, :])
    return _iou_thresholded_greedy(iou, torch.tensor(thr, dtype=torch.float64), order)


def noh_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thresh: float, nearby_boxes: torch.Tensor,
            nearby_probs: torch.Tensor, sigma: Union[float, torch.Tensor] = 0.2) -> torch.Tensor:
    """NOH-NMS (see module docstring). ``nearby_boxes`` N x 4 xyxy: each box's hallucinated
    nearby object; ``nearby_probs`` (N,) in [0, 1]: probability that this neighbour exists;
    ``sigma``: Gaussian std in box-delta units, scalar or N x 4. Kept indices by score."""
    boxes = _check_boxes(boxes)
    n = boxes.shape[0]
    scores = _scores(scores, n)
    thr = _thresh(iou_thresh)
    nearby_boxes = _check_boxes(nearby_boxes, "nearby_boxes")
    if nearby_boxes.shape[0] != n:
        raise InputError(f"nearby_boxes must have {n} rows (one per box), got {nearby_boxes.shape[0]}; "
                         f"fix: pass one hallucinated box per box")
    probs = torch.as_tensor(nearby_probs, dtype=torch.float64, device=boxes.device)
    if probs.shape != (n,) or bool(((probs < 0) | (probs > 1)).any()):
        raise InputError(f"nearby_probs must be {n} probabilities in [0, 1]; fix: apply a sigmoid to the logits")
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=boxes.device)
    if sig.dim() == 0:
        sig = sig.expand(n, 4)
    if sig.shape != (n, 4) or bool((sig <= 0).any()):
        raise InputError("sigma must be a positive scalar or an N x 4 tensor; fix: pass e.g. sigma=0.2")
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if not boxes.is_floating_point():
        boxes = boxes.float()
    order = scores.sort(0, descending=True)[1]
    b, h, p, s = boxes[order].double(), nearby_boxes[order].double(), probs[order], sig[order]
    # deltas of every candidate j relative to every kept-candidate i: N x N x 4
    d_cand = encode_box_deltas(b[None, :, :].expand(n, n, 4), b[:, None, :].expand(n, n, 4))
    d_hall = encode_box_deltas(h, b)[:, None, :]
    g = torch.exp(-(((d_cand - d_hall) / s[:, None, :]) ** 2).sum(-1) / 2.0)
    limit = torch.clamp(p[:, None] * g, min=thr)
    iou = box_iou(b, b)
    return _iou_thresholded_greedy(iou, limit, order)
