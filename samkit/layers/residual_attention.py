"""The pre-norm residual attention transformer of CLIP (OpenAI's layout): one implementation for
the image ViT and the text tower.

Keys are the official ones: a block holds ``ln_1``, ``attn.in_proj_weight`` / ``attn.in_proj_bias``
(q, k, v packed in that order, ``3C x C`` / ``3C``), ``attn.out_proj.{weight,bias}``, ``ln_2``,
``mlp.c_fc``, ``mlp.c_proj``; a stack of blocks is ``resblocks.N``. Tensors are batch first
(``B x N x C``), unlike OpenAI's sequence-first code; the numbers are the same.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the GELU approximation every OpenAI CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class PackedSelfAttention(nn.Module):
    """Multi-head self-attention with one packed q/k/v projection (``nn.MultiheadAttention``'s
    parameter names: ``in_proj_weight`` 3C x C, ``in_proj_bias`` 3C, ``out_proj``).
    ``B x N x C -> B x N x C``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the width {dim}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three projections of ``x`` (``B x N x C`` each, heads not split)."""
        return F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """``causal``: token i attends to tokens 0..i only (CLIP's text mask)."""
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = (t.reshape(b, n, h, c // h).transpose(1, 2) for t in self.qkv(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class ResidualAttentionBlock(nn.Module):
    """``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; the MLP is ``c_fc`` (C -> 4C), ``act``
    (OpenAI CLIP: QuickGELU; SAM 3's text encoder: exact GELU), ``c_proj`` (4C -> C).
    ``B x N x C -> B x N x C``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, act: Type[nn.Module] = QuickGELU) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = PackedSelfAttention(dim, num_heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(dim, hidden)), ("gelu", act()), ("c_proj", nn.Linear(hidden, dim))]))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class ResidualTransformer(nn.Module):
    """``layers`` residual attention blocks (keys ``resblocks.N``) of width ``width``."""

    def __init__(self, width: int, layers: int, heads: int, act: Type[nn.Module] = QuickGELU) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, act=act) for _ in range(layers)])

    def forward(self, x: torch.Tensor, causal: bool = False, upto: Optional[int] = None) -> torch.Tensor:
        """``B x N x C -> B x N x C`` through blocks ``0 .. upto-1`` (all by default)."""
        for block in list(self.resblocks)[:upto]:
            x = block(x, causal=causal)
        return x

    def forward_layers(self, x: torch.Tensor, causal: bool = False) -> List[torch.Tensor]:
        """The output of every block, ``layers`` tensors ``B x N x C``."""
        outs = []
        for block in self.resblocks:
            x = block(x, causal=causal)
            outs.append(x)
        return outs
