"""Box geometry: areas, pairwise IoU, mask -> box, box-delta encoding.

Boxes are ``N x 4`` xyxy tensors. Boxes derived from masks follow the official SAM
convention: ``x1, y1`` are the first and ``x2, y2`` the LAST foreground pixel column/row
(inclusive pixel indices), so a one-pixel mask has a box of area 0.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError


def _check_boxes(boxes: torch.Tensor, name: str = "boxes") -> torch.Tensor:
    if not isinstance(boxes, torch.Tensor):
        boxes = torch.as_tensor(boxes)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise InputError(f"{name} must be an N x 4 xyxy tensor, got shape {tuple(boxes.shape)}; "
                         f"fix: stack boxes as rows [x1, y1, x2, y2]")
    return boxes


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``N x 4`` xyxy -> ``N`` areas ``(x2 - x1) * (y2 - y1)`` (integer boxes stay integer)."""
    boxes = _check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """``N x 4``, ``M x 4`` xyxy -> ``N x M`` IoU.

    Evaluated in the boxes' floating dtype as ``inter / (area_i + area_j - inter)``, the exact
    expression of the greedy NMS kernels, so thresholds decide identically. Two empty boxes
    give NaN (0/0), which never exceeds a threshold.
    """
    boxes1 = _check_boxes(boxes1, "boxes1")
    boxes2 = _check_boxes(boxes2, "boxes2")
    if not boxes1.is_floating_point():
        boxes1 = boxes1.float()
    if not boxes2.is_floating_point():
        boxes2 = boxes2.to(boxes1.dtype)
    a1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    a2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / ((a1[:, None] + a2[None, :]) - inter)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``... x H x W`` bool masks -> ``... x 4`` int64 xyxy boxes with inclusive pixel indices
    (SAM convention). Empty masks give ``[0, 0, 0, 0]``."""
    if masks.dim() < 2:
        raise InputError(f"masks must be ... x H x W, got shape {tuple(masks.shape)}; fix: add the H, W axes")
    lead = masks.shape[:-2]
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros(*lead, 4, dtype=torch.int64, device=masks.device)
    m = masks.reshape(-1, h, w).bool().view(torch.uint8)
    rows = m.amax(dim=-1).bool()  # B x H (``any``, whose kernel is many times slower here)
    cols = m.amax(dim=-2).bool()  # B x W
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    y2 = torch.where(rows, ar_h, -1).amax(dim=-1)
    y1 = torch.where(rows, ar_h, h).amin(dim=-1)
    x2 = torch.where(cols, ar_w, -1).amax(dim=-1)
    x1 = torch.where(cols, ar_w, w).amin(dim=-1)
    out = torch.stack([x1, y1, x2, y2], dim=-1)
    empty = ~rows.any(dim=-1)
    out[empty] = 0
    return out.reshape(*lead, 4)


def box_xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """``... x 4`` xyxy -> xywh (a copy)."""
    out = boxes.clone()
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    return out


def encode_box_deltas(boxes: torch.Tensor, reference: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """R-CNN box-delta encoding of ``boxes`` (``N x 4`` xyxy) relative to ``reference`` (``N x 4``
    or ``1 x 4``): ``(dx, dy, dw, dh) = ((cx - rcx) / rw, (cy - rcy) / rh, log(w / rw), log(h / rh))``."""
    b = boxes.double() if not boxes.is_floating_point() else boxes
    r = reference.to(b.dtype)
    bw, bh = (b[..., 2] - b[..., 0]).clamp(min=eps), (b[..., 3] - b[..., 1]).clamp(min=eps)
    rw, rh = (r[..., 2] - r[..., 0]).clamp(min=eps), (r[..., 3] - r[..., 1]).clamp(min=eps)
    bcx, bcy = b[..., 0] + 0.5 * bw, b[..., 1] + 0.5 * bh
    rcx, rcy = r[..., 0] + 0.5 * rw, r[..., 1] + 0.5 * rh
    return torch.stack([(bcx - rcx) / rw, (bcy - rcy) / rh, torch.log(bw / rw), torch.log(bh / rh)], dim=-1)


def is_box_near_crop_edge(boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int],
                          atol: float = 20.0) -> torch.Tensor:
    """``N x 4`` boxes in CROP coordinates -> ``N`` bool: a side lies within ``atol`` pixels of
    the crop border while not being within ``atol`` of the image border (SAM's rule for
    dropping masks cut by a crop)."""
    x0, y0 = crop_box[0], crop_box[1]
    shifted = boxes.float() + torch.tensor([x0, y0, x0, y0], dtype=torch.float32, device=boxes.device)
    cb = torch.as_tensor(list(crop_box), dtype=torch.float32, device=boxes.device)[None]
    ob = torch.as_tensor(list(orig_box), dtype=torch.float32, device=boxes.device)[None]
    near_crop = (shifted - cb).abs() <= atol
    near_image = (shifted - ob).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)
