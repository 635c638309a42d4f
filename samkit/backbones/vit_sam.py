"""SAM's image encoder: a plain ViT (B/L/H) with windowed attention, decomposed relative
position bias, a few global-attention blocks and a convolutional neck.

Input ``B x 3 x 1024 x 1024`` -> image embedding ``B x 256 x 64 x 64``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLPBlock, PatchEmbed, sam_neck
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


def _tracing() -> bool:
    """ONNX export / TorchScript tracing / torch.compile: the chunked path writes into slices
    in place, which tracers do not record, so they get the single fused-mask kernel instead."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def _records_grad(*tensors: torch.Tensor) -> bool:
    """Autograd records this computation (training): the chunked path's in-place writes and
    ``out=`` products cannot be differentiated, so the fused-mask formulation runs instead."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class RelPosAttention(nn.Module):
    """Multi-head self-attention on ``B x H x W x C`` with optional decomposed relative positions.

    Fast path (exact up to float rounding): small windows run the fused SDPA kernel with the
    ``HW x HW`` bias as its float mask; large (global) grids run per head over query chunks,
    adding the two bias tables in place, so no ``heads x HW x HW`` tensor is ever built."""

    #: grids with more tokens than this attend in query chunks (global attention)
    chunk_above: int = 1024
    #: query rows per chunk on the chunked path
    chunk_rows: int = 256

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
        return self.proj(self.attend(self.qkv(x)))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """``B x H x W x 3C`` projected queries/keys/values -> ``B x H x W x C`` (before ``proj``)."""
        b, h, w, _ = qkv.shape
        n = self.num_heads
        q, k, v = qkv.reshape(b, h * w, 3, n, -1).permute(2, 0, 3, 1, 4).unbind(0)  # B x n x HW x d
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            rh = relative_positions(h, h, self.rel_pos_h)  # h x h x d
            rw = relative_positions(w, w, self.rel_pos_w)  # w x w x d
            r_q = q.reshape(b, n, h, w, -1)
            bias_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh).reshape(b, n, h * w, h)
            bias_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw).reshape(b, n, h * w, w)
            if h * w > self.chunk_above and not _tracing() and not _records_grad(q, bias_h, bias_w):
                out = self._chunked(q, k, v, bias_h, bias_w, h, w)
            else:
                mask = (bias_h[..., :, None] + bias_w[..., None, :]).reshape(b, n, h * w, h * w)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return out.transpose(1, 2).reshape(b, h, w, -1)

    def _chunked(self, q, k, v, bias_h, bias_w, h: int, w: int) -> torch.Tensor:
        """softmax(s q k^T + bias_h + bias_w) v, one head and ``chunk_rows`` queries at a time."""
        b, n, hw, _ = q.shape
        out = torch.empty_like(v)
        q = q * self.scale
        rows = self.chunk_rows
        for bi in range(b):
            for hi in range(n):
                k_t = k[bi, hi].transpose(0, 1)
                for i in range(0, hw, rows):
                    s = torch.mm(q[bi, hi, i:i + rows], k_t)
                    grid = s.view(-1, h, w)
                    grid.add_(bias_h[bi, hi, i:i + rows, :, None]).add_(bias_w[bi, hi, i:i + rows, None, :])
                    torch.mm(torch.softmax(s, dim=-1), v[bi, hi], out=out[bi, hi, i:i + rows])
        return out


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
            x = self._windowed(x)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))

    def _windowed(self, x: torch.Tensor) -> torch.Tensor:
        """Windowed attention. The official code zero-pads the normalised input and projects the
        padding too; a zero row projects to the bias, so we project only real tokens and pad the
        projections with the bias (same numbers, fewer FLOPs), and project back only real tokens."""
        b, h, w, _ = x.shape
        ws = self.window_size
        attn = self.attn
        qkv = attn.qkv(x)
        hp, wp = h + (-h) % ws, w + (-w) % ws
        if (hp, wp) != (h, w):
            fill = attn.qkv.bias() if callable(attn.qkv.bias) else attn.qkv.bias  # bias(): an int8 Linear
            fill = fill if fill is not None else qkv.new_zeros(qkv.shape[-1])
            padded = fill.to(qkv.dtype).expand(b, hp, wp, -1).clone()
            padded[:, :h, :w] = qkv
            qkv = padded
        windows, _ = window_partition(qkv, ws)
        out = window_unpartition(attn.attend(windows), ws, (hp, wp), (h, w))
        return attn.proj(out)


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
        self.patch_embed = PatchEmbed(in_chans, embed_dim, kernel=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer, act_layer, use_rel_pos,
                  0 if i in global_attn_indexes else window_size, (grid, grid))
            for i in range(depth)
        )
        self.neck = sam_neck(embed_dim, out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
