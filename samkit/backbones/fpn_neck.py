"""FPN neck and image-encoder wrapper of the SAM 2 family (SAM 2, EdgeTAM).

* position encodings: :class:`samkit.layers.PositionEmbeddingSine` (DETR-style normalised
  sine encoding of each level's grid; the same cached encoding as the memory encoder's).
* :class:`FpnNeck` — 1x1 lateral convs to ``d_model`` and a top-down pass (nearest 2x
  upsampling, sum) on the levels listed in ``fpn_top_down_levels``; no output convs.
* :class:`ImageEncoder` — ``trunk`` + ``neck``; drops the ``scalp`` coarsest levels.

Key names follow the official checkpoint: ``image_encoder.neck.convs.{i}.conv.*`` where conv
``i`` acts on the trunk level ``n - i`` (coarsest first).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.position import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """``xs`` (trunk levels, finest first, ``B x C_i x H_i x W_i``) -> (features, position
    encodings), both lists finest first of ``B x d_model x H_i x W_i``.

    ``backbone_channel_list`` is coarsest first (as in the official configs). Levels in
    ``fpn_top_down_levels`` add the 2x-upsampled (``fpn_interp_model``) output of the next
    coarser level to their lateral features; the others keep only the lateral features."""

    def __init__(self, d_model: int, backbone_channel_list: Sequence[int],
                 fpn_top_down_levels: Optional[Sequence[int]] = None, fpn_interp_model: str = "nearest",
                 fuse_type: str = "sum", position_encoding: Optional[nn.Module] = None) -> None:
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError("fuse_type must be 'sum' or 'avg'")
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.position_encoding = position_encoding if position_encoding is not None else PositionEmbeddingSine(d_model)
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, d_model, kernel_size=1))) for c in backbone_channel_list
        )
        n = len(self.convs)
        self.fpn_top_down_levels = list(range(n) if fpn_top_down_levels is None else fpn_top_down_levels)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type

    def forward(self, xs: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"expected {n + 1} trunk levels, got {len(xs)}")
        out: List[Optional[torch.Tensor]] = [None] * (n + 1)
        pos: List[Optional[torch.Tensor]] = [None] * (n + 1)
        prev = None
        for i in range(n, -1, -1):  # coarse -> fine
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                align = None if self.fpn_interp_model == "nearest" else False
                top_down = F.interpolate(prev, scale_factor=2.0, mode=self.fpn_interp_model,
                                         align_corners=align, antialias=False)
                prev = lateral + top_down
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev)
        return out, pos


class ImageEncoder(nn.Module):
    """``trunk`` + ``neck``. ``forward(x: B x 3 x S x S)`` -> dict with
    ``backbone_fpn`` (list of ``B x d x H_i x W_i``, finest first, ``scalp`` coarsest dropped),
    ``vision_pos_enc`` (matching list) and ``vision_features`` (= ``backbone_fpn[-1]``)."""

    def __init__(self, trunk: nn.Module, neck: nn.Module, scalp: int = 0) -> None:
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(f"trunk channels {trunk.channel_list} != neck channels {neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    @torch.no_grad()
    def fuse(self) -> "ImageEncoder":
        """Re-parameterise the trunk for inference when it supports it (EdgeTAM's RepViT: BN
        folding, RepVGG merging; a no-op for Hiera / ViT trunks). In place, eval mode, after
        loading weights. Returns ``self``."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm running statistics; call .eval() first")
        if hasattr(self.trunk, "fuse"):
            self.trunk.fuse()
        return self

    def forward(self, x: torch.Tensor) -> dict:
        feats, pos = self.neck(self.trunk(x))
        if self.scalp > 0:
            feats, pos = feats[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": feats[-1], "vision_pos_enc": pos, "backbone_fpn": feats}
