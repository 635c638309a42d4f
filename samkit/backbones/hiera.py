"""Hiera trunk of SAM 2 / SAM 2.1 (Ryali et al., arXiv:2306.00989; SAM 2 variant "hieradet").

A hierarchical ViT working on channels-last token maps ``B x H x W x C``:

* patch embedding: 7x7 conv, stride 4 (1024 -> 256 x 256 tokens);
* absolute position embedding made of a small "background" grid (``pos_embed``,
  ``1 x C x bh x bw``) bicubically resized to the token grid, plus a window embedding
  (``pos_embed_window``, ``1 x C x w0 x w0``) tiled over it (Bolya et al., arXiv:2311.05613);
* four stages; the first block of stages 2-4 doubles the width (``dim_mul``) and the heads
  (``head_mul``) and max-pools the queries 2x2 ("q-pooling"), so the stage outputs have
  strides 4, 8, 16 and 32;
* windowed attention with a per-stage window size (``window_spec``), except the blocks listed
  in ``global_att_blocks``, which attend globally.

``forward`` returns the four stage outputs, finest first, as ``B x C_i x H_i x W_i``.
Module names follow the official checkpoint (``image_encoder.trunk.*``).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP, PatchEmbed
from ..layers.windows import window_partition, window_unpartition
from ..layers.inplace import add_


def _maxpool_tokens(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    """Apply a 2-D pool to a channels-last map ``B x H x W x C`` -> ``B x H' x W' x C``."""
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


# --------------------------------------------------------------------------- blocks
class MultiScaleAttention(nn.Module):
    """Attention on ``B x H x W x dim`` producing ``B x H' x W' x dim_out``; the queries are
    optionally max-pooled (``q_pool``), which downsamples the output. Keys ``qkv``, ``proj``."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each B x HW x heads x hd
        if self.q_pool is not None:
            q = _maxpool_tokens(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block on ``B x H x W x dim``. When ``dim != dim_out`` the shortcut is
    projected (``proj``) and pooled like the queries. ``window_size`` 0 = global attention."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float = 4.0,
                 q_stride: Optional[Tuple[int, int]] = None, window_size: int = 0) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = _maxpool_tokens(shortcut, self.pool)
        window = self.window_size
        if window > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded = window_partition(x, window)
        x = self.attn(x)
        if self.q_stride:
            # the queries were pooled inside each window: smaller windows, smaller map
            window = self.window_size // self.q_stride[0]
            hw = (shortcut.shape[1], shortcut.shape[2])
            padded = (hw[0] + (-hw[0]) % window, hw[1] + (-hw[1]) % window) if window > 0 else hw
        if self.window_size > 0:
            x = window_unpartition(x, window, padded, hw)
        x = add_(x, shortcut)  # x is a temporary here: == shortcut + x
        return add_(self.mlp(self.norm2(x)), x)  # == x + mlp(norm2(x))


# --------------------------------------------------------------------------- trunk
class Hiera(nn.Module):
    """Hiera trunk. ``B x 3 x S x S`` -> list of 4 maps ``B x C_i x S/4/2^i x S/4/2^i``
    (finest first); ``channel_list`` gives their widths coarsest first (FPN order)."""

    def __init__(self, embed_dim: int = 96, num_heads: int = 1, q_pool: int = 3,
                 q_stride: Tuple[int, int] = (2, 2), stages: Sequence[int] = (2, 3, 16, 3),
                 dim_mul: float = 2.0, head_mul: float = 2.0,
                 window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14),
                 window_spec: Sequence[int] = (8, 4, 14, 7),
                 global_att_blocks: Sequence[int] = (12, 16, 20), mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError("stages and window_spec must have the same length")
        depth = sum(stages)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][:q_pool]
        self.patch_embed = PatchEmbed(3, embed_dim, kernel=7, stride=4, padding=3)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        self.blocks = nn.ModuleList()
        stage = 0
        dim = embed_dim
        for i in range(depth):
            dim_out = dim
            # the window size lags by one block: a stage's first block keeps the previous size
            window = 0 if i in global_att_blocks else window_spec[stage]
            if i - 1 in self.stage_ends:
                dim_out = int(dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                stage += 1
            self.blocks.append(MultiScaleBlock(
                dim, dim_out, num_heads, mlp_ratio=mlp_ratio,
                q_stride=tuple(q_stride) if i in q_pool_blocks else None, window_size=window,
            ))
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        """Background embedding resized (bicubic) to ``hw`` + tiled window embedding: ``1 x h x w x C``."""
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic", align_corners=False)
        win = self.pos_embed_window
        reps = [a // b for a, b in zip(pos.shape, win.shape)]
        pos = pos + win.tile(reps)
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed((x.shape[1], x.shape[2]))
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


# Official configurations (sam2 / sam2.1 configs; identical for both releases).
HIERA_CONFIGS = {
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
                 window_pos_embed_bkg_spatial_size=(7, 7)),
    "small": dict(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
                  window_pos_embed_bkg_spatial_size=(7, 7)),
    "base_plus": dict(embed_dim=112, num_heads=2),
    "large": dict(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
                  window_pos_embed_bkg_spatial_size=(7, 7), window_spec=(8, 4, 16, 8)),
}


def build_hiera(size: str) -> Hiera:
    """``size`` in ``HIERA_CONFIGS`` (tiny, small, base_plus, large)."""
    return Hiera(**HIERA_CONFIGS[size])
