"""Convolution helpers."""
from __future__ import annotations

import torch
from torch import nn


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
