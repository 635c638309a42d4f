"""The two necks Open-Vocabulary SAM puts on the four stages of a CLIP ModifiedResNet
(Yuan et al., 2024), in the key layout of the released files.

* :class:`Sam2ClipAdapter` (SAM2CLIP, file ``sam2clip_vith_rn50x16.pth``, keys under
  ``neck_student.``): every stage is brought to stride 16 (strided conv, or a transposed conv for
  stride 32), projected to ``embed_dim`` and tagged with a learned level embedding; the levels
  are summed, an absolute position embedding is added, five SAM ViT blocks (windows of 14, the
  last one global, decomposed relative positions) and SAM's neck give a SAM-like
  ``B x 256 x 64 x 64`` image embedding that SAM's mask decoder reads.
* :class:`ClipFpn` (CLIP2SAM, file ``clip2sam_*_rn50x16.pth``, keys under ``fpn_neck.``): the
  FPN of Lin et al. as mmdet's ``FPN`` computes it with ``num_outs`` = number of inputs (1x1
  lateral convs, nearest top-down upsampling to the finer size, 3x3 output convs, all with bias,
  no norm, no activation).
"""
from __future__ import annotations

from functools import partial
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import sam_neck
from .vit_sam import Block


class _Projection(nn.Module):
    """One level's patchifier (key ``projection``): a conv with kernel = stride = 16 / s for
    strides s < 16, a transposed conv with kernel = stride = s / 16 for s > 16.
    ``B x C x H x W -> B x H' x W' x D`` (channels last)."""

    def __init__(self, in_chans: int, embed_dim: int, stride: int, target: int) -> None:
        super().__init__()
        if stride > target:
            k = stride // target
            self.projection = nn.ConvTranspose2d(in_chans, embed_dim, kernel_size=k, stride=k)
        else:
            k = target // stride
            self.projection = nn.Conv2d(in_chans, embed_dim, kernel_size=k, stride=k)
        self.kernel = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mmdet's PatchEmbed pads bottom/right ("corner") up to a whole number of kernels, for
        # both kinds of convolution (never needed for a 1024 x 1024 input)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.kernel, (-w) % self.kernel
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return self.projection(x).permute(0, 2, 3, 1)


class Sam2ClipAdapter(nn.Module):
    """SAM2CLIP: CLIP ResNet stages -> SAM-like image embedding.

    ``in_channels`` per stage (RN50x16: 384, 768, 1536, 3072 at strides 4, 8, 16, 32),
    ``embed_dim`` (1280, SAM ViT-H's width), ``out_chans`` (256), ``grid`` = input size / 16 (64).
    Keys: ``patch_embeds.{i}.projection``, ``pos_embed`` (1 x grid x grid x D, a buffer),
    ``level_encoding.weight`` (levels x D), ``blocks.{0..4}`` (SAM ViT block keys), ``neck.{0..3}``.
    """

    TARGET_STRIDE = 16

    def __init__(self, in_channels: Sequence[int] = (384, 768, 1536, 3072), strides: Sequence[int] = (4, 8, 16, 32),
                 embed_dim: int = 1280, out_chans: int = 256, grid: int = 64, depth: int = 5, num_heads: int = 16,
                 window_size: int = 14, global_attn_indexes: Sequence[int] = (4,)) -> None:
        super().__init__()
        self.patch_embeds = nn.ModuleList(
            _Projection(c, embed_dim, s, self.TARGET_STRIDE) for c, s in zip(in_channels, strides))
        self.register_buffer("pos_embed", torch.zeros(1, grid, grid, embed_dim))
        self.level_encoding = nn.Embedding(len(in_channels), embed_dim)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, 4.0, True, norm, nn.GELU, True,
                  0 if i in global_attn_indexes else window_size, (grid, grid))
            for i in range(depth))
        self.neck = sam_neck(embed_dim, out_chans)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stage maps (finest first) -> ``B x out_chans x grid x grid``."""
        if len(feats) != len(self.patch_embeds):
            raise ValueError(f"expected {len(self.patch_embeds)} feature maps, got {len(feats)}")
        x = None
        for i, (proj, f) in enumerate(zip(self.patch_embeds, feats)):
            level = proj(f) + self.level_encoding.weight[i]
            x = level if x is None else x + level
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


class _Conv(nn.Module):
    """mmcv ``ConvModule`` without norm and activation (key ``conv``)."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ClipFpn(nn.Module):
    """FPN over the CLIP stages: ``len(in_channels)`` maps -> as many ``B x out_channels`` maps at
    the same strides. Keys ``lateral_convs.{i}.conv``, ``fpn_convs.{i}.conv``."""

    def __init__(self, in_channels: Sequence[int] = (384, 768, 1536, 3072), out_channels: int = 256) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(_Conv(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(_Conv(out_channels, out_channels, 3) for _ in in_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        laterals: List[torch.Tensor] = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        return tuple(conv(x) for conv, x in zip(self.fpn_convs, laterals))
