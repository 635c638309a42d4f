"""TinyViT image encoder as used by MobileSAM (TinyViT-5M at 1024 x 1024 input).

Reference: Wu et al., TinyViT: Fast Pretraining Distillation for Small Vision Transformers
(ECCV 2022); Zhang et al., MobileSAM (arXiv:2306.14289). Module names follow MobileSAM's
checkpoint (``patch_embed.seq.{0,2}``, ``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``,
``neck``) so that the key remap stays trivial. The "patch embedding" is a convolutional stem
(:class:`samkit.layers.ConvStem`, shared with RepViT), held as ``patch_embed.seq``; the neck is
:func:`samkit.layers.sam_neck`. The ImageNet classification head that the
official module keeps (``norm_head``, ``head``) is not part of this encoder; the checkpoint remap
drops those keys.

Shapes for MobileSAM (``TinyViT.mobile_sam()``), input ``B x 3 x 1024 x 1024``:

=========  ===============  ============  ==========================================
stage      tokens           width         blocks
=========  ===============  ============  ==========================================
patch      256 x 256        64            two stride-2 3x3 conv + BN (GELU between)
layers.0   256 x 256        64            2 MBConv, then PatchMerging -> 128 x 128 x 128
layers.1   128 x 128        128           2 TinyViT blocks (window 7), merge -> 64x64x160
layers.2   64 x 64          160           6 TinyViT blocks (window 14), merge (stride 1) -> 320
layers.3   64 x 64          320           2 TinyViT blocks (window 7)
neck       64 x 64          256           1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d
=========  ===============  ============  ==========================================

Output: ``B x 256 x 64 x 64``.
"""
from __future__ import annotations

import itertools
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from samkit.layers import ConvStem, sam_neck
from samkit.layers.inplace import add_, gelu_
from samkit.layers.reparam import ConvBN, fuse_children


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU after the sum.
    ``B x C x H x W -> B x C x H x W``."""

    def __init__(self, dim: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden, 1)
        self.conv2 = ConvBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = ConvBN(hidden, dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = gelu_(self.conv1(x))
        y = gelu_(self.conv2(y))
        y = self.conv3(y)
        return gelu_(add_(y, x))


class PatchMerging(nn.Module):
    """1x1 ConvBN, GELU, depthwise 3x3 ConvBN (``stride``), GELU, 1x1 ConvBN.
    ``B x C x H x W -> B x out x H/stride x W/stride``."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim, 1)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = gelu_(self.conv1(x))
        x = gelu_(self.conv2(x))
        return self.conv3(x)


class WindowAttention(nn.Module):
    """Attention inside one ``window x window`` window with a learned bias per head and per
    absolute (dy, dx) offset between two tokens (``attention_biases``: heads x offsets).
    LayerNorm is applied first (key ``norm``). ``B' x N x C -> B' x N x C`` with N = window^2."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        n = len(points)
        self.register_buffer("bias_idxs", torch.tensor(idxs, dtype=torch.long).view(n, n), persistent=False)

        self._bias_cache: Optional[Tuple[tuple, torch.Tensor]] = None

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """Attention bias ``1 x heads x N x N``. Gathered once and cached while no gradient is
        needed; the cache key holds the parameter's version counter, so loading new weights (an
        in-place copy) or moving the module invalidates it."""
        p = self.attention_biases
        if (torch.is_grad_enabled() and p.requires_grad) or torch.compiler.is_compiling():
            return p[:, self.bias_idxs].to(dtype)[None]
        key = (p._version, p.data_ptr(), p.device, dtype, torch.is_inference_mode_enabled())
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, p.detach()[:, self.bias_idxs].to(dtype)[None])
        return self._bias_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = self.norm(x)
        # per head the qkv output is laid out as [q (hd), k (hd), v (hd)]
        q, k, v = self.qkv(x).view(b, n, self.num_heads, 3 * self.head_dim).transpose(1, 2).split(self.head_dim, -1)
        # a 4-D mask keeps SDPA on its fused (flash) CPU kernel; a 3-D one falls back to the slow
        # math path. q, k, v stay strided views: the kernel reads them in place.
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """LayerNorm, Linear, GELU, Linear (keys ``norm``, ``fc1``, ``fc2``). ``... x C -> ... x C``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (zero padding to a multiple of the window; padded tokens take part as
    keys, as in the official model), residual; depthwise 3x3 ConvBN ``local_conv`` (no residual);
    MLP with residual. ``B x H x W x C -> B x H x W x C``."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attention_traced(self, x: torch.Tensor) -> torch.Tensor:
        """Pad, partition, attend, unpartition, crop, residual with plain reshapes (for tracers
        such as the ONNX exporter, where shapes are tensors)."""
        b, h, w, c = x.shape
        ws = self.window
        pb, pr = (ws - h % ws) % ws, (ws - w % ws) % ws
        y = F.pad(x, (0, 0, 0, pr, 0, pb))
        ph, pw = h + pb, w + pr
        nh, nw = ph // ws, pw // ws
        y = y.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        y = self.attn(y).view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x + y[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tracers, and autograd (training: ``out=`` below cannot be differentiated), take the
        # plain-reshape formulation
        if torch.jit.is_tracing() or (torch.is_grad_enabled() and (
                x.requires_grad or any(p.requires_grad for p in self.attn.parameters()))):
            return self._after_attention(self._attention_traced(x))
        b, h, w, c = x.shape
        ws = self.window
        nh, nw = -(-h // ws), -(-w // ws)
        # zero padding + window partition in one pass: each piece of the map is copied straight
        # to its place in the B x nh x nw x ws x ws x C window tensor
        pad = nh * ws != h or nw * ws != w
        win = (x.new_zeros if pad else x.new_empty)(b, nh, nw, ws, ws, c)
        pieces = _pieces(h, w, ws)
        for rows, cols in pieces:
            _win_view(win, rows, cols).copy_(_map_view(x, rows, cols, ws))
        win = self.attn(win.view(b * nh * nw, ws * ws, c)).view(b, nh, nw, ws, ws, c)
        # window unpartition, crop and residual in one pass
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        for rows, cols in pieces:
            torch.add(_map_view(x, rows, cols, ws), _win_view(win, rows, cols), out=_map_view(out, rows, cols, ws))
        return self._after_attention(out)

    def _after_attention(self, x: torch.Tensor) -> torch.Tensor:
        # x is a contiguous B x H x W x C map, so its NCHW view is channels-last; the convolution
        # keeps that format and its output permutes back to a contiguous map without a copy
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        y = self.mlp(x)
        return add_(y, x)


def _pieces(h: int, w: int, ws: int) -> list:
    """Split an ``h x w`` map into at most 4 rectangles of whole / partial windows:
    ``[(rows, cols)]`` with ``rows = (first_window, n_windows, rows_per_window)`` (``cols`` alike);
    a partial window is the last one, holding ``n % ws`` rows."""
    def split(n: int) -> list:
        full, rest = divmod(n, ws)
        return ([(0, full, ws)] if full else []) + ([(full, 1, rest)] if rest else [])

    return [(r, c) for r in split(h) for c in split(w)]


def _map_view(x: torch.Tensor, rows: tuple, cols: tuple, ws: int) -> torch.Tensor:
    """``B x H x W x C`` map -> view ``B x nR x sR x nC x sC x C`` of one piece."""
    (i0, nr, sr), (j0, nc, sc) = rows, cols
    return x[:, i0 * ws:i0 * ws + nr * sr, j0 * ws:j0 * ws + nc * sc].unflatten(2, (nc, sc)).unflatten(1, (nr, sr))


def _win_view(win: torch.Tensor, rows: tuple, cols: tuple) -> torch.Tensor:
    """``B x nh x nw x ws x ws x C`` windows -> view ``B x nR x sR x nC x sC x C`` of one piece
    (the first ``sR`` rows / ``sC`` columns of its windows)."""
    (i0, nr, sr), (j0, nc, sc) = rows, cols
    return win[:, i0:i0 + nr, j0:j0 + nc, :sr, :sc].transpose(2, 3)


class ConvLayer(nn.Module):
    """Stage 0: MBConv blocks then an optional PatchMerging. ``B x C x H x W`` in and out."""

    def __init__(self, dim: int, depth: int, out_dim: int, stride: int, expand_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class BasicLayer(nn.Module):
    """Attention stage: TinyViT blocks then an optional PatchMerging.
    ``B x C x H x W -> B x out x H' x W'``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 out_dim: Optional[int], stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            x = blk(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """TinyViT trunk + SAM neck. ``B x 3 x S x S -> B x out_chans x S/16 x S/16``.

    ``merge_strides[i]`` is the stride of the PatchMerging that ends stage ``i`` (MobileSAM keeps
    the last merge at stride 1 so that the output stays at S/16). ``out_chans=None``: no neck, the
    last stage's map is the output (the classification TinyViT's trunk, merge strides 2, 2, 2).
    """

    def __init__(self, embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10), window_sizes: Sequence[int] = (7, 7, 14, 7),
                 merge_strides: Sequence[int] = (2, 2, 1), mlp_ratio: float = 4.0,
                 mbconv_expand_ratio: float = 4.0, out_chans: Optional[int] = 256, in_chans: int = 3) -> None:
        super().__init__()
        n = len(depths)
        # the conv stem under MobileSAM's name: keys patch_embed.seq.{0,2}
        self.patch_embed = nn.ModuleDict({"seq": ConvStem(in_chans, embed_dims[0])})
        layers = [ConvLayer(embed_dims[0], depths[0], embed_dims[1], merge_strides[0], mbconv_expand_ratio)]
        for i in range(1, n):
            last = i == n - 1
            layers.append(BasicLayer(embed_dims[i], depths[i], num_heads[i], window_sizes[i], mlp_ratio,
                                     None if last else embed_dims[i + 1], 1 if last else merge_strides[i]))
        self.layers = nn.ModuleList(layers)
        self.neck = sam_neck(embed_dims[-1], out_chans) if out_chans is not None else nn.Identity()
        self.fused = False

    @classmethod
    def mobile_sam(cls) -> "TinyViT":
        """TinyViT-5M as configured by MobileSAM."""
        return cls()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x 1024 x 1024`` normalised image -> ``B x 256 x 64 x 64`` embedding (contiguous).

        The convolutions run in channels-last memory format (faster on CPU); the attention stages'
        ``B x H x W x C`` maps are then plain views of the conv outputs, so switching between the
        two layouts copies nothing."""
        x = self.patch_embed["seq"](x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        return self.neck(x).contiguous()

    @torch.no_grad()
    def fuse(self) -> "TinyViT":
        """Fold every BatchNorm into its convolution (``ConvBN`` -> one ``nn.Conv2d`` with bias), in
        place, for inference. Outputs are unchanged up to float rounding; the fused encoder no
        longer has the checkpoint's ``.c`` / ``.bn`` keys, so load weights first. Returns ``self``."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm running statistics; call .eval() first")
        if self.fused:
            return self

        fuse_children(self, ConvBN)
        self.fused = True
        return self
