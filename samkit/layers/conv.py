"""Convolution pieces shared by the encoders: a GEMM 1x1 convolution, the ViT patch embedding,
the conv-GELU-conv pair and the two stride-2 ConvBN stem of the CNN / hybrid encoders."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .inplace import gelu_
from .reparam import ConvBN


def conv1x1(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 ``nn.Conv2d`` (stride 1, no groups) as one matrix product per image:
    ``B x Ci x H x W`` -> ``B x Co x H x W``. Same sums as the convolution (PyTorch sends
    batch-1 1x1 convolutions to its slow im2col path on CPU)."""
    b, ci, h, w = x.shape
    weight = conv.weight.reshape(conv.weight.shape[0], ci)
    xf = x.reshape(b, ci, h * w)
    if conv.bias is None:
        out = torch.matmul(weight, xf)
    elif b == 1:
        out = torch.addmm(conv.bias[:, None], weight, xf[0])[None]
    else:
        out = torch.baddbmm(conv.bias[None, :, None], weight.expand(b, -1, -1), xf)
    return out.reshape(b, -1, h, w)


class PatchEmbed(nn.Module):
    """Convolutional patchifier of the ViT / Hiera trunks: ``B x in_chans x H x W`` ->
    ``B x H/stride x W/stride x embed_dim`` (channels last; a permuted view of the conv output).
    Key ``proj`` (``patch_embed.proj.*`` in every official checkpoint). ``stride`` defaults to
    ``kernel`` (non-overlapping patches: SAM, EfficientSAM, ViTDet); Hiera uses 7 / 4 / 3."""

    def __init__(self, in_chans: int, embed_dim: int, kernel: int, stride: Optional[int] = None,
                 padding: int = 0) -> None:
        super().__init__()
        stride = kernel if stride is None else stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ConvGeluConv(nn.Sequential):
    """``[conv, GELU, conv]`` (keys ``0``, ``2``; ``1`` is the parameter-free GELU) with the exact
    GELU applied in place to the temporary. The children may be ``ConvBN`` or, after
    ``fuse()``, plain convolutions. ``B x a x H x W -> B x c x H' x W'``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](gelu_(self[0](x)))


class ConvStem(ConvGeluConv):
    """Two stride-2 3x3 ConvBN with GELU between (the stem of TinyViT and RepViT):
    ``B x in_chans x H x W -> B x dim x H/4 x W/4``, hidden width ``dim // 2``. Keys
    ``0.{c,bn}``, ``2.{c,bn}`` (MobileSAM ``patch_embed.seq.*``, EdgeSAM ``features.0.*``)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__(ConvBN(in_chans, dim // 2, 3, 2, 1), nn.GELU(), ConvBN(dim // 2, dim, 3, 2, 1))
