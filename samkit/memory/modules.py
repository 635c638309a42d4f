"""Memory encoder of the SAM 2 family and its small building blocks.

The memory encoder turns one frame's image features (B x 256 x 64 x 64) and that frame's
predicted mask (B x 1 x 1024 x 1024, already squashed by the caller: binarised or
sigmoid, then ``* 20 - 10``) into memory features B x 64 x 64 x 64 plus their sine position
encoding. Module names follow the official checkpoints (``memory_encoder.mask_downsampler
.encoder.N``, ``pix_feat_proj``, ``fuser.layers.N``, ``out_proj``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP, LayerNorm2d  # noqa: F401  (re-exported for the memory modules)
from ..layers.conv import conv1x1
# the sine encodings live in layers.position; re-exported here for the video engine
from ..layers.position import sine_encoding_2d


class MaskDownSampler(nn.Module):
    """Mask B x 1 x S x S -> B x ``embed_dim`` x S/16 x S/16.

    ``log_stride(total_stride)`` stages of conv(k, stride, pad) + LayerNorm2d + GELU, each
    multiplying channels by stride^2 (1 -> 4 -> 16 -> 64 -> 256), then a 1x1 conv.
    Sequential indices match upstream (``encoder.0`` conv, ``.1`` norm, ``.2`` GELU, ...).
    ``interpol_size``: the mask is first resized to ``interpol_size`` x ``interpol_size``
    (bilinear, antialiased; SAM 3: 1152, so that its 1008 px masks reach the 72 x 72 grid).
    """

    def __init__(self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2, padding: int = 1,
                 total_stride: int = 16, interpol_size: Optional[int] = None) -> None:
        super().__init__()
        self.interpol_size = interpol_size
        n = int(round(math.log(total_stride) / math.log(stride)))
        if stride ** n != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        layers: List[nn.Module] = []
        cin = 1
        for _ in range(n):
            cout = cin * stride * stride
            layers += [nn.Conv2d(cin, cout, kernel_size, stride, padding), LayerNorm2d(cout), nn.GELU()]
            cin = cout
        layers.append(nn.Conv2d(cin, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.interpol_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        *stages, last = self.encoder
        for m in stages:
            x = m(x)
        return conv1x1(x, last)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm2d, Linear 4x, GELU, Linear, layer scale, residual."""

    def __init__(self, dim: int = 256, kernel_size: int = 7, padding: int = 3, use_dwconv: bool = True) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(y)))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + y


class Fuser(nn.Module):
    """``num_layers`` CXBlocks (``fuser.layers.N``)."""

    def __init__(self, dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Fuse image features with a mask into memory features.

    ``forward(pix_feat B x in_dim x h x w, mask B x 1 x 16h x 16w)`` ->
    ``(features B x out_dim x h x w, pos B x out_dim x h x w)``. The mask must already be
    prepared by the caller (binary or sigmoid, times scale plus bias).
    """

    def __init__(self, in_dim: int = 256, out_dim: int = 64, fuser_layers: int = 2,
                 mask_interpol_size: Optional[int] = None) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim, interpol_size=mask_interpol_size)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, fuser_layers)
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()
        self.out_dim = out_dim

    def project(self, pix_feat: torch.Tensor) -> torch.Tensor:
        """The mask-independent part: ``pix_feat_proj`` of B x in_dim x h x w (the same for every
        object of a frame)."""
        return conv1x1(pix_feat, self.pix_feat_proj)

    def forward(self, pix_feat: torch.Tensor, mask: torch.Tensor,
                projected: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``projected``: ``project(pix_feat)`` when the caller computed it once for several masks."""
        x = (self.project(pix_feat) if projected is None else projected) + self.mask_downsampler(mask)
        x = self.fuser(x)
        x = conv1x1(x, self.out_proj) if isinstance(self.out_proj, nn.Conv2d) else self.out_proj(x)
        pos = sine_encoding_2d(x.shape[-2], x.shape[-1], self.out_dim, x.device).to(x.dtype)
        return x, pos.expand(x.shape[0], -1, -1, -1)

