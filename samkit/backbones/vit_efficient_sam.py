"""Plain ViT image encoder of EfficientSAM (ViT-Ti and ViT-S, SAMI-pretrained).

Reference: Xiong et al., EfficientSAM (CVPR 2024, arXiv:2312.00863). Module names follow the
official checkpoint (``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.norm1/attn.qkv/attn.proj/
norm2/mlp.fc1/mlp.fc2``, ``neck``).

Input ``B x 3 x 1024 x 1024``. A 16 x 16 stride-16 patch convolution gives ``B x 64 x 64 x D``
tokens (D = 192 for ViT-Ti, 384 for ViT-S). The absolute position embedding was trained at
224 x 224 with a class token: ``pos_embed`` is ``1 x (1 + 14*14) x D``; its class entry is dropped
and the 14 x 14 grid is resized bicubically (align_corners=False) to 64 x 64. Twelve pre-norm
blocks with *global* attention over all 4096 tokens follow (LayerNorm eps 1e-6, MLP ratio 4,
GELU), then the SAM neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d).
Output ``B x 256 x 64 x 64``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from samkit.layers import PatchEmbed, sam_neck
from samkit.layers.inplace import add_, gelu_
from samkit.layers.position import resize_abs_pos


class GlobalAttention(nn.Module):
    """Multi-head self-attention over all tokens. ``B x N x D -> B x N x D``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """``fc1``, GELU, ``fc2``. ``... x D -> ... x D``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block. ``B x N x D -> B x N x D``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GlobalAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = add_(self.attn(self.norm1(x)), x)  # == x + attn(norm1(x))
        return add_(self.mlp(self.norm2(x)), x)


class EfficientSamViT(nn.Module):
    """EfficientSAM's ViT encoder. ``B x 3 x img_size x img_size -> B x out_chans x S/16 x S/16``."""

    def __init__(self, dim: int = 192, num_heads: int = 3, depth: int = 12, img_size: int = 1024,
                 patch_size: int = 16, mlp_ratio: float = 4.0, out_chans: int = 256,
                 pretrain_img_size: int = 224) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(3, dim, kernel=patch_size)
        grid = pretrain_img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.neck = sam_neck(dim, out_chans)

    @classmethod
    def vit_t(cls) -> "EfficientSamViT":
        return cls(dim=192, num_heads=3)

    @classmethod
    def vit_s(cls) -> "EfficientSamViT":
        return cls(dim=384, num_heads=6)

    def abs_pos(self, h: int, w: int) -> torch.Tensor:
        """Position embedding for an ``h x w`` token grid: ``1 x h x w x D`` (class entry dropped)."""
        return resize_abs_pos(self.pos_embed, True, (h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x 1024 x 1024`` normalised image -> ``B x 256 x 64 x 64`` embedding."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"EfficientSAM's encoder expects {self.img_size}x{self.img_size} input, "
                             f"got {tuple(x.shape[-2:])}; preprocess with the model's preprocess()")
        x = self.patch_embed(x)  # B x h x w x D
        b, h, w, d = x.shape
        x = (x + self.abs_pos(h, w)).reshape(b, h * w, d)
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.reshape(b, h, w, d).permute(0, 3, 1, 2))
