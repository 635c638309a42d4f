"""RepViT-M1 trunk in timm's layout, as wrapped by EdgeTAM (Wang et al., arXiv:2307.09283).

EdgeTAM builds ``timm.create_model("repvit_m1.dist_in1k", features_only=True,
out_indices=(0, 1, 2, 3))`` and stores it as ``image_encoder.trunk.body``; timm flattens the
stages into ``stem`` and ``stages_{i}``. Facts (timm RepViT, ``legacy=True`` for M1):

* ``ConvNorm`` = conv without bias (``c``) + BatchNorm (``bn``).
* stem: ConvNorm 3x3/2 (3 -> 24), GELU, ConvNorm 3x3/2 (24 -> 48): stride 4.
* block: token mixer ``conv(x) + conv1(x) + x`` (depth-wise 3x3 and 1x1 ConvNorms), then a
  squeeze-excite on every other block (first block of each stage has one), then
  ``x + channel_mixer(x)`` with ``channel_mixer`` = ConvNorm 1x1 (x2 width), GELU, ConvNorm 1x1.
* stages 1-3 start with a downsample: ``pre_block`` (a block without SE), depth-wise ConvNorm
  3x3/2, ConvNorm 1x1 to the new width, then ``x + ffn(x)``.
* widths (48, 96, 192, 384), depths (2, 2, 14, 2); outputs at strides 4, 8, 16, 32.

``forward(x: B x 3 x S x S)`` -> list of 4 maps ``B x C_i x S/2^(i+2) x S/2^(i+2)``, finest first.
"""
from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from samkit.layers.inplace import add_, gelu_
from samkit.layers.reparam import ConvBN, depthwise_1x1, fuse_children, merge_repvgg_dw


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """timm's rule with ``round_limit=0``: round to the nearest multiple of ``divisor``, at least ``divisor``."""
    min_value = min_value or divisor
    return max(min_value, int(v + divisor / 2) // divisor * divisor)


ConvNorm = ConvBN  # timm's name for the same conv (``c``) + BatchNorm (``bn``) pair


class SqueezeExcite(nn.Module):
    """timm SE: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with 1x1 convs (keys ``fc1``, ``fc2``)."""

    def __init__(self, channels: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd = _make_divisible(channels * rd_ratio, 8)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


class RepVggDw(nn.Module):
    """Legacy RepVGG depth-wise mixer: ``conv(x) + conv1(x) + x`` (3x3 and 1x1 depth-wise ConvNorms)."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel, 1, (kernel - 1) // 2, groups=dim)
        self.conv1 = ConvNorm(dim, dim, 1, 1, 0, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(add_(self.conv(x), depthwise_1x1(self.conv1, x)), x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One depth-wise ``k x k`` convolution equal to ``conv + conv1 + identity`` in eval mode."""
        return merge_repvgg_dw(self.conv, self.conv1)


class RepVitMlp(nn.Module):
    """ConvNorm 1x1 (dim -> hidden), GELU, ConvNorm 1x1 (hidden -> dim). Keys ``conv1``, ``conv2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.GELU()
        self.conv2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(gelu_(self.conv1(x)))


class RepViTBlock(nn.Module):
    """``B x C x H x W`` -> same shape. Keys ``token_mixer``, ``se`` (optional), ``channel_mixer``."""

    def __init__(self, dim: int, mlp_ratio: int, kernel: int, use_se: bool) -> None:
        super().__init__()
        self.token_mixer = RepVggDw(dim, kernel)
        self.se = SqueezeExcite(dim) if use_se else nn.Identity()
        self.channel_mixer = RepVitMlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return add_(self.channel_mixer(x), x)  # == x + channel_mixer(x)


class RepVitStem(nn.Module):
    """Two stride-2 ConvNorms with GELU between: ``B x 3 x H x W`` -> ``B x C x H/4 x W/4``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(cin, cout // 2, 3, 2, 1)
        self.act1 = nn.GELU()
        self.conv2 = ConvNorm(cout // 2, cout, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(gelu_(self.conv1(x)))


class RepVitDownsample(nn.Module):
    """``B x Cin x H x W`` -> ``B x Cout x H/2 x W/2``."""

    def __init__(self, cin: int, mlp_ratio: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.pre_block = RepViTBlock(cin, mlp_ratio, kernel, use_se=False)
        self.spatial_downsample = ConvNorm(cin, cin, kernel, 2, (kernel - 1) // 2, groups=cin)
        self.channel_downsample = ConvNorm(cin, cout, 1, 1)
        self.ffn = RepVitMlp(cout, cout * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return add_(self.ffn(x), x)  # == x + ffn(x)


class RepVitStage(nn.Module):
    """Optional downsample then ``depth`` blocks, SE on blocks 0, 2, 4, ..."""

    def __init__(self, cin: int, cout: int, depth: int, mlp_ratio: int, kernel: int, downsample: bool) -> None:
        super().__init__()
        if downsample:
            self.downsample = RepVitDownsample(cin, mlp_ratio, cout, kernel)
        elif cin != cout:
            raise ValueError("a stage without downsample keeps the width")
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[RepViTBlock(cout, mlp_ratio, kernel, use_se=(j % 2 == 0)) for j in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class RepVitFeatures(nn.Module):
    """timm ``features_only`` view of RepViT: modules ``stem``, ``stages_0`` .. ``stages_3``."""

    def __init__(self, embed_dim: Sequence[int], depth: Sequence[int], mlp_ratio: int = 2, kernel: int = 3) -> None:
        super().__init__()
        self.stem = RepVitStem(3, embed_dim[0])
        cin = embed_dim[0]
        for i, (c, d) in enumerate(zip(embed_dim, depth)):
            self.add_module(f"stages_{i}", RepVitStage(cin, c, d, mlp_ratio, kernel, downsample=i > 0))
            cin = c
        self.num_stages = len(embed_dim)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for i in range(self.num_stages):
            x = getattr(self, f"stages_{i}")(x)
            outs.append(x)
        return outs


class RepVitTimmTrunk(nn.Module):
    """EdgeTAM's ``TimmBackbone``: ``body`` = :class:`RepVitFeatures`; ``channel_list`` is
    coarsest first, matching the FPN neck. ``forward`` returns the 4 stage maps, finest first."""

    def __init__(self, embed_dim: Sequence[int] = (48, 96, 192, 384), depth: Sequence[int] = (2, 2, 14, 2)) -> None:
        super().__init__()
        self.body = RepVitFeatures(embed_dim, depth)
        self.channel_list = list(embed_dim)[::-1]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        # the convolutions run in channels-last memory format (faster on CPU); the four maps are
        # handed on contiguous, as callers expect
        outs = self.body(x.contiguous(memory_format=torch.channels_last))
        return [o.contiguous() for o in outs]

    @torch.no_grad()
    def fuse(self) -> "RepVitTimmTrunk":
        """Re-parameterise for inference, in place: every ConvNorm becomes one convolution with
        bias and every RepVggDw one depth-wise convolution (BN folded, 1x1 and identity branches
        merged into the centre tap). Outputs are unchanged up to float rounding; the fused trunk
        no longer has the checkpoint's keys, so load weights first. Returns ``self``."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm running statistics; call .eval() first")
        if getattr(self, "fused", False):
            return self

        fuse_children(self.body, (ConvNorm, RepVggDw))
        self.fused = True
        return self


def build_repvit_m1_timm() -> RepVitTimmTrunk:
    """RepViT-M1 (widths 48/96/192/384, depths 2/2/14/2) in timm's key layout."""
    return RepVitTimmTrunk((48, 96, 192, 384), (2, 2, 14, 2))
