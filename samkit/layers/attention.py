"""Multi-head attention with separate q/k/v projections: the two-way transformer of every mask
decoder and, as the base of the RoPE variants (``samkit.memory.attention``), the SAM 2 family's
memory attention."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width
    (``internal_dim = embedding_dim // downsample_rate``). Keys/values may come from a space of
    width ``kv_in_dim`` (64 for SAM 2 memory tokens). Inputs ``B x Nq x C``, ``B x Nk x Ck`` ->
    ``B x Nq x C``. Keys ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (upstream names)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: Optional[int] = None) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the internal width {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``B x N x c`` -> ``B x heads x N x c/heads``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _merge(x: torch.Tensor) -> torch.Tensor:
        """``B x heads x N x d`` -> ``B x N x heads*d``."""
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def project(self, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q/k/v projections split into heads: each ``B x heads x N x internal_dim/heads`` (views of
        fresh tensors, so subclasses may rotate them in place)."""
        return self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``bias``: optional additive float per key (``Nk``), e.g. the log multiplicity of a key
        that stands for several identical ones."""
        q, k, v = self.project(q, k, v)
        mask = None if bias is None else bias.to(q.dtype).view(1, 1, 1, -1)
        return self.out_proj(self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class PackedAttention(nn.Module):
    """Multi-head attention in ``nn.MultiheadAttention``'s parameter layout (``in_proj_weight``
    3C x C packing q, k, v; ``in_proj_bias`` 3C; ``out_proj``) with separate query / key / value
    inputs, batch first: ``B x Nq x C``, ``B x Nk x C``, ``B x Nk x C`` -> ``B x Nq x C``
    (the DETR-style layers of SAM 3).

    ``key_padding_mask``: ``B x Nk`` bool, True where a key is padding (never attended);
    ``bias``: additive float ``B x heads x Nq x Nk`` (SAM 3's box relative-position bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide the width {dim}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor, part: int) -> torch.Tensor:
        c = self.out_proj.in_features
        w, b = self.in_proj_weight[part * c:(part + 1) * c], self.in_proj_bias[part * c:(part + 1) * c]
        y = F.linear(x, w, b)
        bsz, n, _ = y.shape
        return y.reshape(bsz, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        qh, kh, vh = self._heads(q, 0), self._heads(k, 1), self._heads(v, 2)
        mask = None
        if key_padding_mask is not None:
            keep = ~key_padding_mask[:, None, None, :]
            mask = keep if bias is None else bias.masked_fill(~keep, float("-inf"))
        elif bias is not None:
            mask = bias
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))
