"""The recognition half of Open-Vocabulary SAM (Yuan et al., 2024): CLIP2SAM's RoI classifier
and the seen/unseen score ensemble with the CLIP branch.

* :class:`LabelTokenMaskDecoder`: SAM's mask decoder as OVSAM configures it: one mask token, a
  learned *label token* in the first output slot (where SAM has its IoU token; it takes part in
  the token self-attention, so it changes the mask), no IoU head.
* :class:`Clip2SamHead`: the box of each predicted mask (:func:`mask_boxes`) pools the FPN level
  its size maps to (:func:`multi_level_roi_align`, mmdet's ``SingleRoIExtractor``), a 1x1 conv +
  ReLU (``roi_conv``) and a spatial mean give one D-dim embedding, compared by cosine with the
  class prototypes (max over each class's prototypes) times ``exp(4.6052) = 100``.
  ``label_mlp`` is in the released file but its output is multiplied by zero upstream, so it is
  loaded and never run.
* :func:`ensemble_logits`: geometric ensemble of the head's and the CLIP branch's class
  probabilities, weight ``alpha`` (0.1) on CLIP for seen classes and ``beta`` (0.9) for unseen
  ones, both 0 when the mask is empty on the CLIP grid; computed in log space.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP
from ..ops.roi_align import roi_align
from .mask_decoder import MaskDecoder
from .transformer import TwoWayTransformer

LOGIT_SCALE = 4.6052  # OVSAMHead's default ``logit``; exp() = 100.0
FINEST_SCALE = 56  # mmdet SingleRoIExtractor: boxes under 112 px (sqrt area) use the finest level


class _NoIou(nn.Module):
    """OVSAM's decoder has no IoU head: placeholder with no weights returning zeros ``B x 1``."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.new_zeros(tokens.shape[0], 1)


class LabelTokenMaskDecoder(MaskDecoder):
    """SAM's decoder with one mask token; ``iou_token`` holds OVSAM's label token (first output
    token) and there is no ``iou_prediction_head``. Returns masks ``B x 1 x 4h x 4w``."""

    def __init__(self, transformer_dim: int = 256) -> None:
        super().__init__(transformer_dim=transformer_dim,
                         transformer=TwoWayTransformer(depth=2, embedding_dim=transformer_dim, num_heads=8,
                                                       mlp_dim=2048),
                         num_multimask_outputs=0)
        self.iou_prediction_head = _NoIou()


def mask_boxes(low_res: torch.Tensor, stride: int = 4) -> torch.Tensor:
    """Tight boxes of ``sigmoid(low_res) > 0.5`` in model-frame pixels (mmdet ``mask2bbox`` times
    ``stride``; an empty mask gives 0, 0, 0, 0). ``low_res``: B x h x w -> B x 4 (x1, y1, x2, y2),
    x2/y2 exclusive."""
    fg = torch.sigmoid(low_res) > 0.5
    cols, rows = fg.any(dim=1), fg.any(dim=2)
    w, h = cols.shape[-1], rows.shape[-1]
    ar_w = torch.arange(w, device=fg.device)
    ar_h = torch.arange(h, device=fg.device)
    x1 = torch.where(cols, ar_w, w).min(-1).values
    x2 = torch.where(cols, ar_w, -1).max(-1).values + 1
    y1 = torch.where(rows, ar_h, h).min(-1).values
    y2 = torch.where(rows, ar_h, -1).max(-1).values + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=-1).float()
    empty = ~(cols.any(-1) & rows.any(-1))
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes) * stride


def roi_levels(boxes: torch.Tensor, num_levels: int) -> torch.Tensor:
    """mmdet ``map_roi_levels``: ``floor(log2(sqrt(w * h) / 56 + 1e-6))`` clamped to the levels."""
    scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    return torch.floor(torch.log2(scale / FINEST_SCALE + 1e-6)).clamp(0, num_levels - 1).long()


def multi_level_roi_align(feats: Sequence[torch.Tensor], boxes: torch.Tensor, output_size: int,
                          strides: Sequence[int]) -> torch.Tensor:
    """RoIAlign of each box (K x 4, model-frame pixels, image 0 of ``feats``) on the level its size
    maps to (:func:`roi_levels`), sampling ratio 0, aligned -> K x C x s x s."""
    levels = roi_levels(boxes, len(feats))
    rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)
    out = feats[0].new_zeros(boxes.shape[0], feats[0].shape[1], output_size, output_size)
    for i, (f, s) in enumerate(zip(feats, strides)):
        idx = (levels == i).nonzero(as_tuple=True)[0]
        if idx.numel():
            out[idx] = roi_align(f, rois[idx], output_size, 1.0 / s, 0, aligned=True)
    return out


def class_logits(embedding: torch.Tensor, prototypes: torch.Tensor, logit_scale: float = LOGIT_SCALE) -> torch.Tensor:
    """``embedding`` N x D, ``prototypes`` (K+1) x P x D (unit rows; the last class is the
    all-zero background) -> N x (K+1): ``exp(logit_scale) * max_p cos(e, prototype_kp)``."""
    e = F.normalize(embedding, dim=-1)
    sims = torch.einsum("nd,kpd->nkp", e, prototypes).max(-1).values
    return math.exp(logit_scale) * sims


class Clip2SamHead(nn.Module):
    """CLIP2SAM classifier on the FPN. Keys ``label_mlp.layers.{0,1,2}`` (256 -> 256 -> 256 -> D,
    loaded, unused: see the module docstring) and ``roi_conv.0.conv.weight`` (D x 256 x 1 x 1)."""

    def __init__(self, embed_dim: int, transformer_dim: int = 256, roi_size: int = 12,
                 strides: Sequence[int] = (4, 8, 16, 32)) -> None:
        super().__init__()
        self.label_mlp = MLP(transformer_dim, transformer_dim, embed_dim, 3)
        conv = nn.Module()
        conv.conv = nn.Conv2d(transformer_dim, embed_dim, kernel_size=1, bias=False)
        self.roi_conv = nn.Sequential(conv)
        self.roi_size = roi_size
        self.strides = tuple(strides)

    def embed(self, fpn: Sequence[torch.Tensor], low_res: torch.Tensor) -> torch.Tensor:
        """FPN maps (batch 1) and mask logits B x 256 x 256 -> region embeddings B x D."""
        boxes = mask_boxes(low_res)
        x = multi_level_roi_align(fpn, boxes, self.roi_size, self.strides)
        x = F.relu(F.conv2d(x, self.roi_conv[0].conv.weight))
        return x.mean(dim=(-1, -2))


def ensemble_logits(query: torch.Tensor, clip: torch.Tensor, valid: torch.Tensor, seen: torch.Tensor,
                    allowed: Optional[torch.Tensor] = None, alpha: float = 0.1, beta: float = 0.9) -> torch.Tensor:
    """OVSAM's open-vocabulary inference. ``query``, ``clip``: N x (K+1) logits of the head and of
    the CLIP branch; ``valid``: N bool (the mask covers a cell of the CLIP grid); ``seen``: (K+1)
    bool (classes trained on, and the background); ``allowed``: (K+1) bool or None (classes
    outside it get -1000, as upstream for the classes of neither split).
    Returns N x (K+1) ``log(q^(1-w) c^w)`` with w = alpha for seen, beta for unseen classes
    (0 where not ``valid``). Upstream multiplies probabilities and takes the log, which turns an
    underflowed probability into -inf or NaN; here log-probabilities are mixed directly."""
    log_q = torch.log_softmax(query, dim=-1)
    log_c = torch.log_softmax(clip, dim=-1)
    v = valid.to(query.dtype)[:, None]
    w = torch.where(seen[None, :], alpha * v, beta * v)
    out = (1.0 - w) * log_q + w * log_c
    if allowed is not None:
        out = torch.where(allowed[None, :], out, torch.full_like(out, -1000.0))
    return out


def label_from_logits(logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """N x (K+1) ensembled logits -> (class index N long, probability N float32): softmax over all
    K+1 entries (background included), argmax over the K classes."""
    prob = torch.softmax(logits, dim=-1)[:, :-1]
    score, idx = prob.max(dim=-1)
    return idx, score.float()
