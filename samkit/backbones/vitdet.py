"""Plain ViT trunk (ViTDet style, Li et al., arXiv:2203.16527) and single-level neck of
EfficientTAM (Xiong et al., arXiv:2411.18933).

Trunk facts (EfficientTAM ``vitdet.ViT``): 16x16 patch conv; absolute position embedding
pretrained at 224 px with a class-token slot (``pos_embed``: ``1 x 197 x C``), the cls slot
dropped and the 14x14 grid bicubically resized to the token grid; pre-norm blocks (LayerNorm
eps 1e-6, GELU MLP x4), windowed attention (window 14, zero padding) in all blocks except
2, 5, 8, 11 (global); no relative position. Only the last block's output is returned.

Neck facts (``ViTDetNeck`` with ``neck_norm: LN``): 1x1 conv (no bias) -> LayerNorm2d ->
3x3 conv (no bias) -> LayerNorm2d, plus the sine position encoding.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP, PatchEmbed, PositionEmbeddingSine, sam_neck
from ..layers.inplace import add_
from ..layers.position import resize_abs_pos
from ..layers.windows import window_partition, window_unpartition


class Attention(nn.Module):
    """Multi-head self-attention on ``B x H x W x C`` (keys ``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B x heads x HW x hd
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, -1)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm ViT block on ``B x H x W x C``; ``window_size`` 0 = global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 window_size: int = 0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim, num_layers=2, activation=nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, padded, hw)
        else:
            x = self.attn(x)
        x = add_(x, shortcut)  # x is a temporary here: == shortcut + x
        return add_(self.mlp(self.norm2(x)), x)  # == x + mlp(norm2(x))


class ViT(nn.Module):
    """``B x 3 x S x S`` -> ``[B x C x S/16 x S/16]`` (one level; ``channel_list`` = [C])."""

    def __init__(self, embed_dim: int = 192, depth: int = 12, num_heads: int = 3, patch_size: int = 16,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, window_size: int = 14,
                 window_block_indexes: Sequence[int] = (0, 1, 3, 4, 6, 7, 9, 10),
                 pretrain_img_size: int = 224, pretrain_use_cls_token: bool = True) -> None:
        super().__init__()
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.patch_embed = PatchEmbed(3, embed_dim, kernel=patch_size)
        n = (pretrain_img_size // patch_size) ** 2 + (1 if pretrain_use_cls_token else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, window_size if i in window_block_indexes else 0)
            for i in range(depth)
        )
        self.channel_list = [embed_dim]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + resize_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        for block in self.blocks:
            x = block(x)
        return [x.permute(0, 3, 1, 2)]


class ViTDetNeck(nn.Module):
    """One level: ``[B x C x h x w]`` -> ([B x d x h x w], [B x d x h x w] sine encoding).
    Keys ``convs.0.{conv_1x1, norm_0, conv_3x3, norm_1}`` (norms only with ``neck_norm``)."""

    def __init__(self, d_model: int, backbone_channel_list: Sequence[int], neck_norm: Optional[str] = "LN",
                 position_encoding: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.d_model = d_model
        self.backbone_channel_list = list(backbone_channel_list)
        self.position_encoding = position_encoding if position_encoding is not None else PositionEmbeddingSine(d_model)
        # the SAM neck under EfficientTAM's child names; without neck_norm the convs have biases
        self.convs = nn.ModuleList(
            sam_neck(c, d_model, norm=neck_norm is not None, names=("conv_1x1", "norm_0", "conv_3x3", "norm_1"))
            for c in backbone_channel_list
        )

    def forward(self, xs: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        if len(xs) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} trunk levels, got {len(xs)}")
        # like the official neck, only the first level is computed (one level in practice)
        out = self.convs[0](xs[0])
        return [out], [self.position_encoding(out)]


VIT_CONFIGS = {
    "ti": dict(embed_dim=192, num_heads=3),
    "s": dict(embed_dim=384, num_heads=6),
}


def build_vit(size: str) -> ViT:
    """EfficientTAM trunk: ``size`` "ti" (192 wide, 3 heads) or "s" (384, 6); 12 blocks."""
    return ViT(**VIT_CONFIGS[size])
