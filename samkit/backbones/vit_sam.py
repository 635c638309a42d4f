"""SAM's image encoder: a plain ViT (B/L/H) with windowed attention, decomposed relative
position bias, a few global-attention blocks and a convolutional neck.

Input ``B x 3 x 1024 x 1024`` -> image embedding ``B x 256 x 64 x 64``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import LayerNorm2d, MLPBlock
from ..layers.windows import window_partition, window_unpartition


def relative_positions(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position table ``L x C`` -> per (query, key) embeddings ``q_size x k_size x C``,
    resizing the table linearly when it was trained for another length."""
    max_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_dist:
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_dist,
                                mode="linear")
        rel_pos = resized.reshape(-1, max_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    rel = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[rel.long()]


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            q_hw: Tuple[int, int], k_hw: Tuple[int, int]) -> torch.Tensor:
    """MViTv2 decomposed bias: ``q`` (B x qh*qw x C, unscaled) -> additive bias
    ``B x qh*qw x kh*kw``."""
    qh, qw = q_hw
    kh, kw = k_hw
    rh = relative_positions(qh, kh, rel_pos_h)
    rw = relative_positions(qw, kw, rel_pos_w)
    b, _, c = q.shape
    r_q = q.reshape(b, qh, qw, c)
    bias_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    bias_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    return (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(b, qh * qw, kh * kw)


class RelPosAttention(nn.Module):
    """Multi-head self-attention on ``B x H x W x C`` with optional decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_rel_pos: bool = False,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with relative positions")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        n = self.num_heads
        qkv = self.qkv(x).reshape(b, h * w, 3, n, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B x n x HW x d
        if self.use_rel_pos:
            q, k = self._fold_rel_pos(q, k, h, w)
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(out)

    def _fold_rel_pos(self, q: torch.Tensor, k: torch.Tensor, h: int, w: int):
        """Fold the decomposed relative-position bias into the dot product so that the fused
        attention kernel needs no HW x HW bias tensor:
        ``[s q, q.Rh(kh), q.Rw(kw)] . [k, onehot(kh), onehot(kw)] = s q.k + bias_h + bias_w``.
        Returns q, k of width d + h + w (B x n x HW x (d + h + w)); use with scale 1."""
        b, n, hw, d = q.shape
        rh = relative_positions(h, h, self.rel_pos_h)  # h x h x d
        rw = relative_positions(w, w, self.rel_pos_w)  # w x w x d
        r_q = q.reshape(b, n, h, w, d)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh).reshape(b, n, hw, h)
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw).reshape(b, n, hw, w)
        eye_h = torch.eye(h, dtype=k.dtype, device=k.device)
        eye_w = torch.eye(w, dtype=k.dtype, device=k.device)
        key_h = eye_h[:, None, :].expand(h, w, h).reshape(1, 1, hw, h).expand(b, n, hw, h)
        key_w = eye_w[None, :, :].expand(h, w, w).reshape(1, 1, hw, w).expand(b, n, hw, w)
        q2 = torch.cat([q * self.scale, bias_h, bias_w], dim=-1)
        k2 = torch.cat([k, key_h, key_w], dim=-1)
        return q2, k2


class Block(nn.Module):
    """Pre-norm transformer block; ``window_size`` 0 means global attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_layer: Type[nn.Module] = nn.LayerNorm, act_layer: Type[nn.Module] = nn.GELU,
                 use_rel_pos: bool = False, window_size: int = 0,
                 input_size: Optional[Tuple[int, int]] = None) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = RelPosAttention(dim, num_heads, qkv_bias, use_rel_pos,
                                    input_size if window_size == 0 else (window_size, window_size))
        self.norm2 = norm_layer(dim)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), act_layer)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches: ``B x 3 x H x W -> B x H/p x W/p x C``."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """SAM ViT. Keys as the official checkpoint: ``pos_embed``, ``patch_embed.proj``,
    ``blocks.{i}.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,norm2,mlp.lin1,mlp.lin2}``,
    ``neck.{0..3}``."""

    def __init__(self, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 256,
                 qkv_bias: bool = True, norm_layer: Type[nn.Module] = nn.LayerNorm,
                 act_layer: Type[nn.Module] = nn.GELU, use_abs_pos: bool = True, use_rel_pos: bool = True,
                 window_size: int = 14, global_attn_indexes: Sequence[int] = ()) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer, act_layer, use_rel_pos,
                  0 if i in global_attn_indexes else window_size, (grid, grid))
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
