"""EdgeTAM's 2-D spatial perceiver: compresses one frame's memory features
(B x 64 x 64 x 64) to 512 tokens (B x 512 x 64) when the memory is written.

* 256 global latents (``latents``) cross-attend to all 4096 memory tokens, whose keys and
  values get the memory position encoding added; their output position is zero.
* 256 windowed 2-D latents (``latents_2d``): the 64x64 map is cut into 16x16 windows of
  4x4 tokens; latent i attends only to window i (row-major). Their output position is the
  sine encoding of the 16x16 grid, and the memory attention rotates them with RoPE.
Both paths share the layer weights (``layers.N``: cross-attention, feed-forward, latent
self-attention, feed-forward) and the final ``norm``. Unlike upstream, batches of more
than one object work (upstream ``.view`` on an expanded tensor fails for B > 1).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.position import sine_encoding_2d


def _feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm, Linear (no bias) to ``mult*dim``, GELU, Linear back (``ff.0/1/3``)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverAttention(nn.Module):
    """Latents (B x L x C) attend to inputs (B x N x C); ``pos`` is added to keys and values."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 1) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        q = self._split(self.to_q(self.norm_latents(latents)))
        k, v = self.to_kv(self.norm_x(x)).chunk(2, dim=-1)
        k, v = self._split(k), self._split(v)
        if pos is not None:
            p = self._split(pos)
            k, v = k + p, v + p
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * c))


class SelfAttention(nn.Module):
    """Pre-norm self-attention of the latents (``self_attn.norm/to_q/to_kv/to_out``)."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 1) -> None:
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        b, n, _ = x.shape

        def split(t):
            return t.reshape(b, n, self.heads, -1).transpose(1, 2)

        k, v = self.to_kv(x).chunk(2, dim=-1)
        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(k), split(v))
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, dim_head: int = 64, heads: int = 1, ff_mult: int = 4) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim, dim_head, heads)
        self.ff = _feed_forward(dim, ff_mult)
        self.self_attn = SelfAttention(dim, dim_head, heads)
        self.self_ff = _feed_forward(dim, ff_mult)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        latents = self.attn(latents, x, pos) + latents
        latents = self.ff(latents) + latents
        latents = self.self_attn(latents) + latents
        return self.self_ff(latents) + latents


class PerceiverResampler(nn.Module):
    """``forward(x B x C x H x W, pos B x C x H x W)`` -> ``(tokens B x (L + L2) x C,
    pos B x (L + L2) x C)``; global latents first, then the 2-D latents in row-major order."""

    def __init__(self, dim: int = 64, depth: int = 2, dim_head: int = 64, heads: int = 1,
                 num_latents: int = 256, num_latents_2d: int = 256, ff_mult: int = 4) -> None:
        super().__init__()
        self.num_latents = num_latents
        self.num_latents_2d = num_latents_2d
        if num_latents > 0:
            self.latents = nn.Parameter(torch.zeros(num_latents, dim))
        if num_latents_2d > 0:
            self.latents_2d = nn.Parameter(torch.zeros(num_latents_2d, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, dim_head, heads, ff_mult) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def _global(self, x: torch.Tensor, pos: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        lat = self.latents.unsqueeze(0).expand(b, -1, -1)
        tokens = x.flatten(2).transpose(1, 2)
        p = None if pos is None else pos.flatten(2).transpose(1, 2)
        for layer in self.layers:
            lat = layer(lat, tokens, p)
        return self.norm(lat), torch.zeros_like(lat)

    def _windows(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        n = int(round(math.sqrt(self.num_latents_2d)))
        ws = h // n
        lat = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(b * n * n, 1, c)
        win = x.permute(0, 2, 3, 1).reshape(b, n, ws, n, ws, c).permute(0, 1, 3, 2, 4, 5)
        win = win.reshape(b * n * n, ws * ws, c)
        for layer in self.layers:
            lat = layer(lat, win)
        lat = lat.reshape(b, n * n, c)
        pos = sine_encoding_2d(n, n, c, x.device).flatten(2).transpose(1, 2).expand(b, -1, -1)
        return self.norm(lat), pos.to(lat.dtype)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        outs, poses = [], []
        if self.num_latents > 0:
            lat, p = self._global(x, pos)
            outs.append(lat)
            poses.append(p)
        if self.num_latents_2d > 0:
            lat, p = self._windows(x)
            outs.append(lat)
            poses.append(p)
        return torch.cat(outs, dim=1), torch.cat(poses, dim=1)
