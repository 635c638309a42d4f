"""Structural re-parameterisation helpers shared by the CNN encoders' ``fuse()``."""
from __future__ import annotations

from typing import Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import nn


def fuse_children(parent: nn.Module, types: Union[Type[nn.Module], Tuple[Type[nn.Module], ...]]) -> None:
    """Replace, in place, every descendant of ``parent`` that is an instance of ``types`` by the
    module its ``fuse()`` returns (e.g. conv + BatchNorm -> one conv)."""
    for name, child in parent.named_children():
        if isinstance(child, types):
            setattr(parent, name, child.fuse())
        else:
            fuse_children(child, types)


def depthwise_1x1(cbn: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``cbn(x)`` for a bias-free depth-wise 1x1 conv + BN (children ``c``, ``bn``) as a per-channel
    product (the same single multiply per element: on channels-last input the convolution
    would run one tiny kernel per channel)."""
    return cbn.bn(x * cbn.c.weight.view(1, -1, 1, 1))


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the single convolution equal to ``bn(conv(x))`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale[:, None, None, None]
    b = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        b = b + conv.bias * scale
    return w, b


def conv_like(conv: nn.Conv2d, w: torch.Tensor, b: torch.Tensor) -> nn.Conv2d:
    """A new ``nn.Conv2d`` with ``conv``'s geometry, weight ``w`` and bias ``b``."""
    m = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, bias=True, device=w.device, dtype=w.dtype)
    m.weight.data.copy_(w)
    m.bias.data.copy_(b)
    return m


class ConvBN(nn.Sequential):
    """Bias-free convolution + BatchNorm (children ``c``, ``bn``; timm calls it ConvNorm, TinyViT and
    EdgeSAM Conv2d_BN). ``B x a x H x W -> B x b x H' x W'``. ``fuse()`` returns the single
    equivalent convolution (eval mode)."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return conv_like(self.c, *fold_bn(self.c, self.bn))


@torch.no_grad()
def merge_repvgg_dw(conv: nn.Module, conv1: nn.Module) -> nn.Conv2d:
    """One depth-wise ``k x k`` convolution equal, in eval mode, to ``conv(x) + conv1(x) + x`` for a
    depth-wise ``k x k`` conv + BN ``conv`` and a depth-wise 1x1 conv + BN ``conv1`` (children ``c``,
    ``bn``): BN folded, the 1x1 and identity branches merged into the centre tap."""
    wk, bk = fold_bn(conv.c, conv.bn)
    w1, b1 = fold_bn(conv1.c, conv1.bn)
    p = (wk.shape[-1] - 1) // 2
    w = wk + F.pad(w1, [p, p, p, p])
    w[:, 0, p, p] += 1.0  # identity as a centred depth-wise tap
    return conv_like(conv.c, w, bk + b1)
