"""TEST-ONLY: torchvision.ops.boxes semantics in pure PyTorch.

``nms`` follows torchvision's CPU kernel: candidates are visited in the order of
``scores.sort(0, descending=True)`` (the same call, so ties resolve the same way); each
unsuppressed candidate is kept and suppresses every later unsuppressed candidate whose IoU
with it is ``> iou_threshold``. IoU is evaluated in the box dtype as
``inter / (area_i + area_j - inter)`` with areas ``(x2 - x1) * (y2 - y1)`` and compared
against the threshold in double precision (the kernel compares a scalar_t with a double).
A 0/0 IoU (two empty boxes) is NaN and never suppresses.
"""
import torch
from torch import Tensor


def _check(boxes: Tensor, scores: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise RuntimeError(f"boxes should be a N x 4 tensor, got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise RuntimeError("boxes and scores should have same number of elements in dimension 0")
    if boxes.dtype != scores.dtype:
        raise RuntimeError("dets should have the same type as scores")
    if not boxes.is_floating_point():
        raise RuntimeError("nms only supports floating point boxes")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices (int64) of the kept boxes, in decreasing score order."""
    _check(boxes, scores)
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = (boxes[:, k].contiguous() for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = scores.sort(0, descending=True)[1]
    n = order.numel()
    # positions in sorted order; suppressed flags indexed by original index
    suppressed = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    keep = []
    order_list = order.tolist()
    for pos in range(n):
        i = order_list[pos]
        if bool(suppressed[i]):
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        if rest.numel() == 0:
            break
        xx1 = torch.maximum(x1[i], x1[rest])
        yy1 = torch.maximum(y1[i], y1[rest])
        xx2 = torch.minimum(x2[i], x2[rest])
        yy2 = torch.minimum(y2[i], y2[rest])
        zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
        w = torch.maximum(zero, xx2 - xx1)
        h = torch.maximum(zero, yy2 - yy1)
        inter = w * h
        ovr = inter / ((areas[i] + areas[rest]) - inter)
        hit = ovr.double() > float(iou_threshold)
        # already-suppressed candidates stay suppressed; the flags only grow
        suppressed[rest[hit]] = True
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _batched_nms_coordinate_trick(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_vanilla(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
        members = torch.where(idxs == class_id)[0]
        kept = nms(boxes[members], scores[members], iou_threshold)
        keep_mask[members[kept]] = True
    kept_all = torch.where(keep_mask)[0]
    return kept_all[scores[kept_all].sort(descending=True)[1]]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS independently per category ``idxs``; kept indices in decreasing score order.

    Same dispatch as torchvision on CPU: the coordinate-offset trick when
    ``boxes.numel() <= 4000`` (the boxes of category c are shifted by
    ``c * (boxes.max() + 1)`` so categories never overlap), per-category NMS otherwise.
    """
    if boxes.numel() > 4000 and boxes.device.type == "cpu":
        return _batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
    if boxes.numel() > 100_000:
        return _batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
    return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)


def _upcast(t: Tensor) -> Tensor:
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes: Tensor) -> Tensor:
    """N x 4 xyxy -> N areas ``(x2 - x1) * (y2 - y1)`` (small dtypes upcast like torchvision)."""
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """N x 4, M x 4 xyxy -> N x M IoU."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = _upcast(rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)
