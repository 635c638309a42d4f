"""OpenAI CLIP's ``ModifiedResNet`` (RN50, RN101, RN50x4, RN50x16, RN50x64), keys as in OpenAI's and
open_clip's files.

Differences from a torchvision ResNet (facts of the CLIP paper / release): a 3-convolution stem
(``conv1`` stride 2 to width/2, ``conv2``, ``conv3`` to width, each with BatchNorm and ReLU) and a
2x2 average pool instead of max pooling; anti-aliased strided bottlenecks (stride 1 convolutions,
a ``stride x stride`` average pool after ``conv2``, and ``downsample`` = ``-1`` average pool,
``0`` 1x1 conv, ``1`` BatchNorm); and an attention pool (``attnpool``) in place of global average
pooling: the mean of the final map, prepended to the map's locations, plus
``positional_embedding``, is the only query of one multi-head attention whose output goes through
``c_proj``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.position import resize_abs_pos


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> (avg pool when strided) -> 1x1 (x4 channels) with a residual; BatchNorm and
    ReLU after each convolution. ``B x inplanes x H x W -> B x 4*planes x H/stride x W/stride``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: Optional[nn.Sequential] = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)), ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                ("1", nn.BatchNorm2d(out))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.avgpool(F.relu(self.bn2(self.conv2(y))))
        y = self.bn3(self.conv3(y))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity)


class AttentionPool2d(nn.Module):
    """``B x C x h x w -> B x output_dim``: one query (the spatial mean) attends over the mean and
    every location, position embeddings added (``spacial_dim^2 + 1`` rows; resized bicubically
    for another grid). Keys ``positional_embedding``, ``k_proj``, ``q_proj``, ``v_proj``, ``c_proj``."""

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: Optional[int] = None) -> None:
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def _positions(self, h: int, w: int) -> torch.Tensor:
        pos = self.positional_embedding
        grid = resize_abs_pos(pos[None], True, (h, w)).reshape(h * w, -1)
        return torch.cat([pos[:1], grid], dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # B x hw x C
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        tokens = tokens + self._positions(h, w).to(tokens.dtype)
        heads = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], heads, c // heads).transpose(1, 2)

        q = split(self.q_proj(tokens[:, :1]))
        out = F.scaled_dot_product_attention(q, split(self.k_proj(tokens)), split(self.v_proj(tokens)))
        return self.c_proj(out.transpose(1, 2).reshape(b, c))


class ModifiedResNet(nn.Module):
    """``B x 3 x S x S`` (normalised pixels) -> ``B x output_dim``. ``layers``: bottlenecks per stage;
    ``width``: stem width (stage widths ``width .. 8*width``, outputs ``4*width .. 32*width``)."""

    def __init__(self, layers: Sequence[int], output_dim: int, heads: int, input_resolution: int = 224,
                 width: int = 64) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes = width
        for i, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2))):
            planes = width * 2 ** i
            stage = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W -> B x width x H/4 x W/4``."""
        x = x.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.avgpool(x)

    def stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """``[stem, layer1, layer2, layer3, layer4]`` maps of strides 4, 4, 8, 16, 32 and channels
        ``width, 4w, 8w, 16w, 32w`` (RN50x16: 96, 384, 768, 1536, 3072)."""
        outs = [self.stem(x)]
        for name in ("layer1", "layer2", "layer3", "layer4"):
            outs.append(getattr(self, name)(outs[-1]))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attnpool(self.stages(x)[-1])
