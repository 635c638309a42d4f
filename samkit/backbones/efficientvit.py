"""EfficientViT (Cai et al., "EfficientViT: Multi-Scale Linear Attention for High-Resolution Dense
Prediction", ICCV 2023), the B-series backbone, as EfficientSAM3's EV students use it
(Zeng et al., EfficientSAM3; only the last stage's output is used).

Structure (module names follow the official ``EfficientViTBackbone``, so checkpoint keys load as
they are: ``input_stem.op_list.*``, ``stages.{s}.op_list.{i}.*``):

* ``input_stem``: 3x3 stride-2 ConvBN + Hardswish to ``widths[0]``, then ``depths[0]`` residual
  depth-wise-separable blocks (``DSConv``: depth-wise 3x3 ConvBN + Hardswish, 1x1 ConvBN).
* stages 1-2: ``depths[s]`` residual MBConv blocks (1x1 expand x4 ConvBN + Hardswish, depth-wise
  3x3 ConvBN + Hardswish, 1x1 ConvBN); the first has stride 2 and no shortcut.
* stages 3-4: one stride-2 MBConv without shortcut whose first two convolutions have a bias and
  no BatchNorm ("fewer norm"), then ``depths[s]`` EfficientViT blocks: residual multi-scale ReLU
  linear attention (:class:`LiteMLA`: 1x1 qkv conv, a 5x5 depth-wise + grouped 1x1 aggregation
  of qkv, per-head ``relu(q) (relu(k)^T v) / (relu(q) sum relu(k))`` with eps 1e-15, 1x1
  projection ConvBN) and a residual fewer-norm MBConv.

Convolutions use "same" padding ``k // 2``; BatchNorm eps 1e-5. B1: widths 16/32/64/128/256,
depths 1/2/3/3/4, head dimension 16; ``B x 3 x S x S -> B x 256 x S/32 x S/32`` (each stride-2
convolution rounds up: 1008 px gives 32 x 32).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.reparam import conv_like, fold_bn

# (widths, depths, head dim) of the official b0 / b1 / b2 builders
EFFICIENTVIT_B = {
    "b0": ((8, 16, 32, 64, 128), (1, 2, 2, 2, 2), 16),
    "b1": ((16, 32, 64, 128, 256), (1, 2, 3, 3, 4), 16),
    "b2": ((24, 48, 96, 192, 384), (1, 3, 4, 4, 6), 32),
}


class ConvLayer(nn.Module):
    """Convolution (key ``conv``), optional BatchNorm (``norm``) and Hardswish / ReLU (``act``).
    ``B x a x H x W -> B x b x H/stride x W/stride``."""

    def __init__(self, a: int, b: int, kernel: int = 3, stride: int = 1, groups: int = 1, bias: bool = False,
                 norm: bool = True, act: Optional[str] = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(a, b, kernel, stride, kernel // 2, groups=groups, bias=bias)
        self.norm = nn.BatchNorm2d(b) if norm else None
        self.act = {"hswish": nn.Hardswish(), "relu": nn.ReLU(), None: None}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x

    @torch.no_grad()
    def fuse(self) -> "ConvLayer":
        """Fold the BatchNorm into the convolution, in place (eval mode). Returns ``self``."""
        if self.norm is not None:
            self.conv = conv_like(self.conv, *fold_bn(self.conv, self.norm))
            self.norm = None
        return self


class DSConv(nn.Module):
    """Depth-wise k x k ConvBN + act, then 1x1 ConvBN (keys ``depth_conv``, ``point_conv``)."""

    def __init__(self, a: int, b: int, stride: int = 1, act: str = "hswish") -> None:
        super().__init__()
        self.depth_conv = ConvLayer(a, a, 3, stride, groups=a, act=act)
        self.point_conv = ConvLayer(a, b, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    """1x1 expand + act, depth-wise 3x3 (``stride``) + act, 1x1 project (keys ``inverted_conv``,
    ``depth_conv``, ``point_conv``). ``fewer_norm``: the first two convolutions have a bias and no
    BatchNorm. ``B x a x H x W -> B x b x H/stride x W/stride``."""

    def __init__(self, a: int, b: int, stride: int = 1, expand: float = 4, fewer_norm: bool = False,
                 act: str = "hswish") -> None:
        super().__init__()
        mid = round(a * expand)
        self.inverted_conv = ConvLayer(a, mid, 1, bias=fewer_norm, norm=not fewer_norm, act=act)
        self.depth_conv = ConvLayer(mid, mid, 3, stride, groups=mid, bias=fewer_norm, norm=not fewer_norm, act=act)
        self.point_conv = ConvLayer(mid, b, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class IdentityLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ResidualBlock(nn.Module):
    """``main(x) + x`` when ``shortcut``, else ``main(x)`` (key ``main``)."""

    def __init__(self, main: nn.Module, shortcut: bool) -> None:
        super().__init__()
        self.main = main
        self.shortcut = IdentityLayer() if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        return y + x if self.shortcut is not None else y


class OpSequential(nn.Module):
    """Modules run in order (key ``op_list``)."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention, ``B x C x H x W`` in and out. ``heads = C // dim``;
    the 1x1 ``qkv`` conv gives per head ``[q, k, v]`` of ``dim`` channels each; ``aggreg`` adds one
    more scale (5x5 depth-wise then 1x1 grouped per q/k/v of each head), so attention runs over
    ``2 * heads`` heads, whose outputs are concatenated and projected by ``proj`` (1x1 ConvBN)."""

    def __init__(self, channels: int, dim: int = 8, scales: Sequence[int] = (5,), eps: float = 1e-15) -> None:
        super().__init__()
        heads = channels // dim
        total = heads * dim
        self.dim, self.eps = dim, eps
        self.qkv = ConvLayer(channels, 3 * total, 1, norm=False)
        self.aggreg = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=False),
                          nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=False))
            for s in scales)
        self.proj = ConvLayer(total * (1 + len(scales)), channels, 1)

    def attention(self, qkv: torch.Tensor) -> torch.Tensor:
        """``B x (heads * 3 * dim) x H x W`` -> ``B x (heads * dim) x H x W`` (float32 inside)."""
        b, _, h, w = qkv.shape
        dtype = qkv.dtype
        qkv = qkv.float().reshape(b, -1, 3 * self.dim, h * w)
        q, k, v = qkv.split(self.dim, dim=2)  # each B x heads x dim x N
        q, k = F.relu(q), F.relu(k)
        if h * w > self.dim:  # linear: (v|1) k^T, then times q
            v1 = F.pad(v, (0, 0, 0, 1), value=1.0)
            out = (v1 @ k.transpose(-1, -2)) @ q
            out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        else:  # tiny maps: the explicit N x N attention (as upstream)
            att = k.transpose(-1, -2) @ q
            att = att / (att.sum(dim=2, keepdim=True) + self.eps)
            out = v @ att
        return out.reshape(b, -1, h, w).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        return self.proj(self.attention(qkv))


class EfficientViTBlock(nn.Module):
    """Residual :class:`LiteMLA` (``context_module``) then residual fewer-norm MBConv
    (``local_module``). ``B x C x H x W`` in and out."""

    def __init__(self, channels: int, dim: int, expand: float = 4) -> None:
        super().__init__()
        self.context_module = ResidualBlock(LiteMLA(channels, dim), True)
        self.local_module = ResidualBlock(MBConv(channels, channels, 1, expand, fewer_norm=True), True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


class EfficientViTBackbone(nn.Module):
    """EfficientViT B-series: ``B x 3 x S x S -> B x widths[-1] x S/32 x S/32`` (the last stage;
    :meth:`stages_out` gives all five). ``width_list``: the five stage widths."""

    def __init__(self, widths: Sequence[int], depths: Sequence[int], dim: int, expand: float = 4) -> None:
        super().__init__()
        stem: List[nn.Module] = [ConvLayer(3, widths[0], 3, 2, act="hswish")]
        stem += [ResidualBlock(DSConv(widths[0], widths[0]), True) for _ in range(depths[0])]
        self.input_stem = OpSequential(stem)
        stages: List[nn.Module] = []
        cin = widths[0]
        for w, d in zip(widths[1:3], depths[1:3]):
            blocks = [ResidualBlock(MBConv(cin if i == 0 else w, w, 2 if i == 0 else 1, expand), i > 0)
                      for i in range(d)]
            stages.append(OpSequential(blocks))
            cin = w
        for w, d in zip(widths[3:], depths[3:]):
            blocks = [ResidualBlock(MBConv(cin, w, 2, expand, fewer_norm=True), False)]
            blocks += [EfficientViTBlock(w, dim, expand) for _ in range(d)]
            stages.append(OpSequential(blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.width_list = list(widths)

    @classmethod
    def variant(cls, name: str) -> "EfficientViTBackbone":
        """``"b0"``, ``"b1"`` or ``"b2"`` as the official builders configure them."""
        widths, depths, dim = EFFICIENTVIT_B[name]
        return cls(widths, depths, dim)

    def stages_out(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The outputs of the stem and of each stage (strides 2, 4, 8, 16, 32)."""
        outs = [self.input_stem(x)]
        for stage in self.stages:
            outs.append(stage(outs[-1]))
        return tuple(outs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    @torch.no_grad()
    def fuse(self) -> "EfficientViTBackbone":
        """Fold every BatchNorm into its convolution, in place, for inference (eval mode, after
        loading: the fused network no longer has the checkpoint's ``norm`` keys). Returns ``self``."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm running statistics; call .eval() first")
        for m in self.modules():
            if isinstance(m, ConvLayer):
                m.fuse()
        return self
