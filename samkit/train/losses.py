"""Training losses. Masks are compared on the low-resolution grid of the model frame, inside the
valid (non-padding) region; every loss is per mask (``N``) so the caller can weight and sum them.

* ``bce_dice``: binary cross-entropy with logits (mean over valid pixels) + Dice loss
  ``1 - (2 |p t| + 1) / (|p| + |t| + 1)`` with ``p = sigmoid(logits)`` (EdgeSAM's mask loss, here
  against the binarised teacher mask; for fine-tuning against the ground truth).
* ``iou_mse``: the IoU head's prediction against the IoU of the thresholded mask with the target
  (SAM's IoU-prediction loss; fine-tuning only, EdgeSAM does not distil the IoU head).
* ``embedding_mse``: mean squared error of image embeddings (phase 1 / MobileSAM).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_dice(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``N x h x w`` logits, ``N x h x w`` bool target, valid ``N x h x w`` or ``h x w`` -> ``N``."""
    v = valid.to(logits.dtype).expand_as(logits)
    t = target.to(logits.dtype)
    n = v.flatten(1).sum(1).clamp_min(1.0)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * v).flatten(1).sum(1) / n
    p = torch.sigmoid(logits) * v
    inter = (p * t).flatten(1).sum(1)
    dice = 1.0 - (2.0 * inter + 1.0) / (p.flatten(1).sum(1) + (t * v).flatten(1).sum(1) + 1.0)
    return bce + dice


def mask_iou(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of ``N x h x w`` bool masks inside ``valid``; 1 where both are empty -> ``N``."""
    p, t = pred & valid, target & valid
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.ones_like(union))


def iou_mse(pred_iou: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
            threshold: float = 0.0) -> torch.Tensor:
    """``N`` predicted IoUs vs the IoU of ``logits > threshold`` with ``target`` -> ``N``."""
    with torch.no_grad():
        actual = mask_iou(logits > threshold, target, valid)
    return (pred_iou.float() - actual) ** 2


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error of two ``B x C x h x w`` embeddings -> scalar."""
    return F.mse_loss(student.float(), teacher.float())
