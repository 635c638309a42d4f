"""RepViT image encoder as used by EdgeSAM (RepViT-M1 with the multi-scale fusion neck).

References: Wang et al., RepViT: Revisiting Mobile CNN From ViT Perspective (CVPR 2024);
Zhou et al., EdgeSAM (arXiv:2312.06660). Module names follow EdgeSAM's checkpoint
(``features.{i}.token_mixer``, ``features.{i}.channel_mixer.m``, ``fuse_stage2``,
``fuse_stage3.op_list.0``, ``neck``), so the key remap is the identity.

Input ``B x 3 x 1024 x 1024``. ``features.0`` (stem, two stride-2 3x3 ConvBN with GELU) gives
``B x 48 x 256 x 256``; 26 RepViT blocks follow (M1 widths 48 / 96 / 192 / 384 at strides 4 / 8 /
16 / 32). With EdgeSAM's fusion neck the last block of the 192 stage (``B x 192 x 64 x 64``) and of
the 384 stage (``B x 384 x 32 x 32``) are projected to 256 channels by 1x1 convolutions, the
latter upsampled 2x (bicubic, align_corners=False), summed, and passed through the SAM neck
(1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d). Output ``B x 256 x 64 x 64``.

``RepViT.fuse()`` re-parameterises for inference: every Conv+BN pair becomes one convolution
with bias, and each ``RepVGGDW`` (3x3 depthwise + 1x1 depthwise + identity, all with BN) becomes
a single 3x3 depthwise convolution. Outputs are unchanged up to float rounding; the fused model
no longer has the checkpoint's keys, so load weights before fusing.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from samkit.layers import LayerNorm2d
from samkit.layers.inplace import add_, gelu_
from samkit.layers.reparam import ConvBN, depthwise_1x1, fuse_children, merge_repvgg_dw

# (kernel, expansion, channels, squeeze-excite, hard-swish flag (EdgeSAM uses GELU either way), stride)
M1_CFGS: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (3, 2, 48, 1, 0, 1), (3, 2, 48, 0, 0, 1), (3, 2, 48, 0, 0, 1),
    (3, 2, 96, 0, 0, 2), (3, 2, 96, 1, 0, 1), (3, 2, 96, 0, 0, 1), (3, 2, 96, 0, 0, 1),
    (3, 2, 192, 0, 1, 2),
    *(((3, 2, 192, 1, 1, 1), (3, 2, 192, 0, 1, 1)) * 7),
    (3, 2, 192, 0, 1, 1),
    (3, 2, 384, 0, 1, 2), (3, 2, 384, 1, 1, 1), (3, 2, 384, 0, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without dropping below ``round_limit * v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with 1x1 convolutions ``fc1`` / ``fc2`` (bias), ReLU and a sigmoid
    gate; reduced width ``make_divisible(C / 4, 8, round_limit=0)``. ``B x C x H x W`` in and out."""

    def __init__(self, channels: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd = make_divisible(channels * rd_ratio, 8, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class RepVGGDW(nn.Module):
    """``conv`` (3x3 depthwise + BN) + ``conv1`` (1x1 depthwise + BN) + identity.
    ``B x C x H x W`` in and out."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, 0, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(add_(self.conv(x), depthwise_1x1(self.conv1, x)), x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        return merge_repvgg_dw(self.conv, self.conv1)


class ConvGeluConv(nn.Sequential):
    """``[conv, GELU, conv]`` (keys ``0``, ``2``) with the GELU applied in place to the temporary."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[2](gelu_(self[0](x)))


class Residual(nn.Module):
    """``x + m(x)`` (key ``m``)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(self.m(x), x)  # == x + m(x)


class RepViTBlock(nn.Module):
    """Token mixer then residual channel mixer (1x1 expand x2, GELU, 1x1 project).

    Stride 1: token mixer = RepVGGDW (+ SE). Stride 2: depthwise 3x3 stride-2 ConvBN (+ SE) and a
    1x1 ConvBN to the new width. ``B x inp x H x W -> B x oup x H/s x W/s``.
    """

    def __init__(self, inp: int, hidden: int, oup: int, kernel: int, stride: int, use_se: bool) -> None:
        super().__init__()
        se = SqueezeExcite(inp) if use_se else nn.Identity()
        if stride == 2:
            self.token_mixer = nn.Sequential(ConvBN(inp, inp, kernel, stride, (kernel - 1) // 2, groups=inp), se,
                                             ConvBN(inp, oup, 1))
            hidden = 2 * oup
        else:
            if inp != oup:
                raise ValueError("a stride-1 RepViT block keeps its width")
            self.token_mixer = nn.Sequential(RepVGGDW(inp), se)
        self.channel_mixer = Residual(ConvGeluConv(ConvBN(oup, hidden, 1), nn.GELU(), ConvBN(hidden, oup, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class UpsampleConv(nn.Module):
    """1x1 conv (``op_list.0``, no bias) then ``factor`` x interpolation (EdgeSAM's fuse_stage3)."""

    def __init__(self, cin: int, cout: int, factor: int = 2, mode: str = "bicubic") -> None:
        super().__init__()
        self.op_list = nn.ModuleList([nn.Conv2d(cin, cout, kernel_size=1, bias=False)])
        self.factor = factor
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.op_list[0](x), scale_factor=self.factor, mode=self.mode, align_corners=False)


class RepViT(nn.Module):
    """RepViT trunk with EdgeSAM's two-level fusion neck. ``B x 3 x S x S -> B x 256 x S/16 x S/16``."""

    def __init__(self, cfgs: Sequence[Tuple[int, int, int, int, int, int]] = M1_CFGS, out_chans: int = 256,
                 upsample_mode: str = "bicubic") -> None:
        super().__init__()
        c0 = cfgs[0][2]
        layers: List[nn.Module] = [ConvGeluConv(ConvBN(3, c0 // 2, 3, 2, 1), nn.GELU(), ConvBN(c0 // 2, c0, 3, 2, 1))]
        self.stage_ends: List[int] = []  # block indices (into cfgs) that end a stage
        cin, prev_c = c0, c0
        for idx, (k, t, c, se, _hs, s) in enumerate(cfgs):
            if c != prev_c:
                self.stage_ends.append(idx - 1)
                prev_c = c
            cout = make_divisible(c, 8)
            layers.append(RepViTBlock(cin, make_divisible(cin * t, 8), cout, k, s, bool(se)))
            cin = cout
        self.stage_ends.append(len(cfgs) - 1)
        self.features = nn.ModuleList(layers)
        c2, c3 = make_divisible(cfgs[self.stage_ends[2]][2], 8), make_divisible(cfgs[self.stage_ends[3]][2], 8)
        self.fuse_stage2 = nn.Conv2d(c2, out_chans, kernel_size=1, bias=False)
        self.fuse_stage3 = UpsampleConv(c3, out_chans, 2, upsample_mode)
        self.neck = nn.Sequential(
            nn.Conv2d(out_chans, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.fused = False

    @classmethod
    def edge_sam(cls) -> "RepViT":
        """RepViT-M1 as configured by EdgeSAM (fusion neck, bicubic upsampling)."""
        return cls(M1_CFGS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x 1024 x 1024`` normalised image -> ``B x 256 x 64 x 64`` embedding (contiguous).
        The convolutions run in channels-last memory format (faster on CPU)."""
        x = self.features[0](x.contiguous(memory_format=torch.channels_last))
        stage2 = None
        s2_end, s3_end = self.stage_ends[2] + 1, self.stage_ends[3] + 1
        for i in range(1, len(self.features)):
            x = self.features[i](x)
            if i == s2_end:
                stage2 = x
        if s3_end != len(self.features) - 1:
            raise RuntimeError("the last stage must end the network")
        x = add_(self.fuse_stage2(stage2), self.fuse_stage3(x))
        return self.neck(x).contiguous()

    @torch.no_grad()
    def fuse(self) -> "RepViT":
        """Fold every BatchNorm into its convolution and every RepVGGDW into one depthwise 3x3
        convolution, in place (inference only). Returns ``self``."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm running statistics; call .eval() first")
        if self.fused:
            return self

        fuse_children(self.features, (ConvBN, RepVGGDW))
        self.fused = True
        return self
