"""Memory attention of the SAM 2 family: current-frame tokens attend to the memory bank.

Tokens are batch-first: current frame ``B x N x 256`` (N = 64*64 at 1024 px), memory
``B x M x 64`` (spatial memory tokens of all memory frames, then object-pointer tokens).

Rotary position encoding (2-D axial RoPE, theta 10000) is written with real arithmetic:
each consecutive channel pair (2j, 2j+1) of a head is rotated by an angle; the first
``head_dim/4`` pairs use the column index x, the next ``head_dim/4`` the row index y, with
frequencies ``theta^(-4i/head_dim)``. Memory keys repeat the query's angle table once per
memory frame (``rope_k_repeat``); the last ``num_k_exclude_rope`` keys (object pointers) are
not rotated. Both RoPE classes extend :class:`samkit.layers.Attention` (its projections,
key names and head split). Variants (chosen by ``RoPEAttention(pool=...)`` or the EdgeTAM class):

* ``pool="v1"`` (EfficientTAM ``EfficientRoPEAttention1``): with more than one memory frame,
  spatial keys and values are 2x2 average pooled per frame, ``+ 2 ln 2`` is added to the
  pooled logits (each pooled key stands for 4 keys), object pointer tokens stay unpooled.
* ``pool="v2"`` (``EfficientRoPEAttention2``): as upstream's code does it, ``2 ln 2`` is added
  to the pooled *key vectors* (not the logits) before plain attention.
* ``RoPEAttentionV2`` (EdgeTAM): queries and keys have their own grids (64x64 / 16x16);
  each memory frame is [global latents (not rotated), 2-D latents (rotated)].
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.attention import Attention


def axial_rope_angles(head_dim: int, end_x: int, end_y: int, theta: float = 10000.0,
                      device: Optional[torch.device] = None, scale: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each ``(end_x*end_y) x head_dim/2``, for tokens in row-major order; token
    positions are multiplied by ``scale`` (SAM 3's ViT runs its global blocks at the window's
    rope scale: 24/72)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float() / head_dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32, device=device)
    tx = t % end_x
    ty = torch.div(t, end_x, rounding_mode="floor")
    if scale != 1.0:
        tx, ty = tx * scale, ty * scale
    ang = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of ``x`` (B x heads x L x D) by tables ``L' x D/2``; L = r * L'
    (the table is tiled r times along the tokens, one tile per memory frame)."""
    b, h, n, d = x.shape
    reps = n // cos.shape[0]
    if reps * cos.shape[0] != n:
        raise ValueError(f"RoPE: {n} tokens are not a multiple of the {cos.shape[0]}-token grid")
    xp = x.float().reshape(b, h, reps, n // reps, d // 2, 2)
    a, c = xp[..., 0], xp[..., 1]
    out = torch.stack((a * cos - c * sin, a * sin + c * cos), dim=-1)
    return out.reshape(b, h, n, d).type_as(x)


def rope_(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """In-place RoPE: rotate the channel pairs of the float32 view ``x`` (``... x L x D``,
    last dim contiguous) by the complex table ``L' x D/2`` (``cos + i sin``), tiled over
    ``L = r * L'`` tokens by broadcasting (no copy of the table, one pass over ``x``).
    Same arithmetic as :func:`apply_rope` (one complex product per pair). Returns ``x``."""
    n, d = x.shape[-2], x.shape[-1]
    reps = n // table.shape[0]
    if reps * table.shape[0] != n:
        raise ValueError(f"RoPE: {n} tokens are not a multiple of the {table.shape[0]}-token grid")
    xc = torch.view_as_complex(x.view(*x.shape[:-2], reps, n // reps, d // 2, 2))
    xc.mul_(table)
    return x


class _RopeCache:
    """Complex RoPE tables per (head_dim, grid, theta, device), built once."""

    def __init__(self) -> None:
        self.tables: Dict[tuple, torch.Tensor] = {}

    def get(self, head_dim: int, ex: int, ey: int, theta: float, device) -> torch.Tensor:
        key = (head_dim, ex, ey, theta, str(device))
        if key not in self.tables:
            cos, sin = axial_rope_angles(head_dim, ex, ey, theta, device)
            self.tables[key] = torch.complex(cos, sin)
        return self.tables[key]


def _pool2x2(x: torch.Tensor, grid: int, frames: int) -> torch.Tensor:
    """B x h x (frames*grid*grid) x d -> B x h x (frames*(grid/2)^2) x d, 2x2 average per frame."""
    b, h, _, d = x.shape
    x = x.reshape(b, h, frames, grid, grid, d).permute(0, 1, 2, 5, 3, 4).reshape(b * h * frames, d, grid, grid)
    x = F.avg_pool2d(x, 2, stride=2)
    g2 = grid // 2
    return x.reshape(b, h, frames, d, g2 * g2).permute(0, 1, 2, 4, 3).reshape(b, h, frames * g2 * g2, d)


def _broadcast_queries(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Queries of one frame (``1 x heads x N x d``, projected and rotated once) against the
    memories of ``B`` objects (``B x heads x M x d``): the same queries for every object."""
    if q.shape[0] == 1 and k.shape[0] > 1:
        return q.expand(k.shape[0], -1, -1, -1)
    return q


class RoPEAttention(Attention):
    """Attention with 2-D axial RoPE on queries and keys (sequence lengths must be square
    grids; keys may hold several grids when ``rope_k_repeat``). ``pool`` selects the
    EfficientTAM pooled cross-attention (None, "v1", "v2")."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: Optional[int] = None, rope_theta: float = 10000.0,
                 rope_k_repeat: bool = False, pool: Optional[str] = None) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, kv_in_dim)
        if pool not in (None, "v1", "v2"):
            raise ValueError(f"pool must be None, 'v1' or 'v2', not {pool!r}")
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.pool = pool
        self._cache = _RopeCache()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0,
                **_: int) -> torch.Tensor:
        q, k, v = self.project(q, k, v)
        nq, d = q.shape[-2], q.shape[-1]
        side = int(round(math.sqrt(nq)))
        table = self._cache.get(d, side, side, self.rope_theta, q.device)
        rope_(q, table)
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope != nq and not self.rope_k_repeat:
            raise ValueError("keys differ in length from queries; rope_k_repeat is required")
        if n_rope > 0:
            rope_(k[:, :, :n_rope], table)  # the object-pointer keys after n_rope stay unrotated
        q = _broadcast_queries(q, k)
        if self.pool is None or n_rope <= nq:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            frames = n_rope // nq
            kp = _pool2x2(k[:, :, :n_rope], side, frames)
            vp = _pool2x2(v[:, :, :n_rope], side, frames)
            v_all = torch.cat([vp, v[:, :, n_rope:]], dim=2)
            if self.pool == "v1":
                scale = 1.0 / math.sqrt(d)
                logits = torch.cat([q @ kp.transpose(-2, -1) * scale + 2 * math.log(2),
                                    q @ k[:, :, n_rope:].transpose(-2, -1) * scale], dim=-1)
                out = torch.softmax(logits, dim=-1) @ v_all
            else:
                k_all = torch.cat([kp + 2 * math.log(2), k[:, :, n_rope:]], dim=2)
                out = F.scaled_dot_product_attention(q, k_all, v_all)
        return self.out_proj(self._merge(out))


class RoPEAttentionV2(Attention):
    """EdgeTAM cross-attention: queries on a ``q_sizes`` grid, keys per memory frame as
    ``[n_global unrotated latents, k_sizes grid of rotated latents]``; object pointer tokens
    (last ``num_k_exclude_rope``) unrotated. ``rope_k_repeat`` = number of memory frames."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1,
                 kv_in_dim: Optional[int] = None, rope_theta: float = 10000.0,
                 q_sizes: Tuple[int, int] = (64, 64), k_sizes: Tuple[int, int] = (16, 16)) -> None:
        super().__init__(embedding_dim, num_heads, downsample_rate, kv_in_dim)
        self.rope_theta = rope_theta
        self.q_sizes = tuple(q_sizes)
        self.k_sizes = tuple(k_sizes)
        self._cache = _RopeCache()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0,
                rope_k_repeat: int = -1, **_: int) -> torch.Tensor:
        q, k, v = self.project(q, k, v)
        d = q.shape[-1]
        rope_(q, self._cache.get(d, self.q_sizes[0], self.q_sizes[1], self.rope_theta, q.device))
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            table = self._cache.get(d, self.k_sizes[0], self.k_sizes[1], self.rope_theta, q.device)
            frames = max(int(rope_k_repeat), 1)
            per = n_rope // frames
            n_glob = per - table.shape[0]
            b, h, _, c = k.shape
            # per memory frame: [n_glob global latents (unrotated), grid latents (rotated)]
            rope_(k[:, :, :n_rope].view(b, h, frames, per, c)[:, :, :, n_glob:], table)
        q = _broadcast_queries(q, k)
        return self.out_proj(self._merge(F.scaled_dot_product_attention(q, k, v)))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm block: self-attention (RoPE), cross-attention to memory, ReLU MLP.

    Upstream flags kept: ``pos_enc_at_attn`` (False), ``pos_enc_at_cross_attn_keys`` (True),
    ``pos_enc_at_cross_attn_queries`` (False).
    """

    def __init__(self, self_attn: nn.Module, cross_attn: nn.Module, d_model: int = 256,
                 dim_feedforward: int = 2048, pos_enc_at_attn: bool = False,
                 pos_enc_at_cross_attn_keys: bool = True, pos_enc_at_cross_attn_queries: bool = False) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.cross_attn_image = cross_attn
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries

    def self_block(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """The residual self-attention step: ``tgt + self_attn(norm1(tgt))`` (B x N x C)."""
        t = self.norm1(tgt)
        qk = t + query_pos if self.pos_enc_at_attn else t
        return tgt + self.self_attn(qk, qk, t)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor,
                num_k_exclude_rope: int = 0, rope_k_repeat: int = -1,
                memory_key: Optional[torch.Tensor] = None, after_self: bool = False) -> torch.Tensor:
        """``memory_key``: ``memory + pos`` when the caller computed it once for all layers;
        ``after_self``: ``tgt`` is already the output of :meth:`self_block`."""
        if memory_key is None:
            memory_key = memory + pos if self.pos_enc_at_cross_attn_keys else memory
        if not after_self:
            tgt = self.self_block(tgt, query_pos)
        t = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(
            t + query_pos if self.pos_enc_at_cross_attn_queries else t,
            memory_key, memory, num_k_exclude_rope=num_k_exclude_rope, rope_k_repeat=rope_k_repeat)
        t = self.norm3(tgt)
        return tgt + self.linear2(torch.relu_(self.linear1(t)))


class MemoryAttention(nn.Module):
    """Stack of ``MemoryAttentionLayer`` plus a final LayerNorm.

    ``forward(curr B x N x C, curr_pos B x N x C, memory B x M x Cm, memory_pos B x M x Cm,
    num_obj_ptr_tokens, num_spatial_frames)`` -> ``B x N x C``.

    Many objects on one frame: ``curr`` / ``curr_pos`` of batch 1 with the memories of ``B``
    objects. Everything before the first cross-attention does not depend on the object (the
    input position, the first layer's self-attention, its ``norm2`` and the cross-attention's
    query projection and rotation), so it runs once at batch 1; the cross-attention broadcasts
    its queries over the ``B`` memories and the residual makes the stream ``B x N x C`` from
    there on. Each object's numbers are those of a batch-1 call with its own memory.
    ``prefix(curr, curr_pos)`` is that object-independent start up to the first cross-attention
    (1 x N x C); ``forward(..., prefix=p)`` continues from it (one frame, several batches).
    """

    def __init__(self, layers: nn.ModuleList, d_model: int = 256, pos_enc_at_input: bool = True) -> None:
        super().__init__()
        self.layers = layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: torch.Tensor,
                memory_pos: torch.Tensor, num_obj_ptr_tokens: int = 0, num_spatial_frames: int = -1,
                prefix: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.prefix(curr, curr_pos) if prefix is None else prefix
        memory_key = memory + memory_pos  # the same for every layer: added once
        for i, layer in enumerate(self.layers):
            key = memory_key if layer.pos_enc_at_cross_attn_keys else memory
            out = layer(out, memory, memory_pos, curr_pos, num_k_exclude_rope=num_obj_ptr_tokens,
                        rope_k_repeat=num_spatial_frames, memory_key=key, after_self=i == 0)
        return self.norm(out)

    def prefix(self, curr: torch.Tensor, curr_pos: torch.Tensor) -> torch.Tensor:
        """The input position and the first layer's self-attention: ``B x N x C`` (no memory)."""
        out = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        return self.layers[0].self_block(out, curr_pos)
