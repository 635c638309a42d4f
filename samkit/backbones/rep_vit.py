"""RepViT (Wang et al., RepViT: Revisiting Mobile CNN From ViT Perspective, CVPR 2024): one
implementation for EdgeSAM's encoder (Zhou et al., arXiv:2312.06660) and EdgeTAM's trunk
(Zhou et al., arXiv:2501.07256).

The network is a flat list ``features``: ``features.0`` is the stem (two stride-2 3x3 ConvBN
with GELU, :class:`samkit.layers.ConvStem`), then one :class:`RepViTBlock` per entry of
``cfgs`` = ``(kernel, expansion, channels, squeeze-excite, hard-swish flag, stride)`` (the
hard-swish flag is unused: both models use GELU). A stride-1 block is token mixer (RepVGG
depth-wise ``conv + conv1 + identity``, then SE when flagged) and residual channel mixer (1x1
ConvBN x2 width, GELU, 1x1 ConvBN); a stride-2 block mixes tokens with a depth-wise stride-2
ConvBN and a 1x1 ConvBN to the new width. RepViT-M1 (``M1_CFGS``): widths 48 / 96 / 192 / 384
at strides 4 / 8 / 16 / 32, 26 blocks.

Two official key layouts, one module tree:

* EdgeSAM keeps this layout (``features.{i}.token_mixer.0.conv``, ``...channel_mixer.m.0``,
  ``fuse_stage2``, ``fuse_stage3.op_list.0``, ``neck``): its remap is the identity.
* EdgeTAM stores timm's ``features_only`` RepViT (``stem.conv1``, ``stages_{s}.downsample.
  {pre_block, spatial_downsample, channel_downsample, ffn}``, ``stages_{s}.blocks.{j}``, legacy
  M1). It is the same flat sequence: a timm downsample is the block before a stride-2 block
  (``pre_block``) plus that stride-2 block; :func:`remap_timm_repvit` renames the keys and
  :func:`timm_layout` gives the flat ``cfgs`` and timm's stage outputs.

Weights: :class:`RepViT` (EdgeSAM, ``B x 3 x 1024 x 1024 -> B x 256 x 64 x 64``): the outputs of
the last 192 block (``B x 192 x 64 x 64``) and of the last block (``B x 384 x 32 x 32``) are
projected to 256 channels by bias-free 1x1 convolutions, the latter upsampled 2x (bicubic,
align_corners=False), summed and passed through the SAM neck. :class:`RepViTTrunk` (EdgeTAM)
returns timm's four stage outputs, finest first.

``fuse()`` re-parameterises for inference: every ConvBN becomes one convolution with bias and
every :class:`RepVGGDW` a single depth-wise 3x3 convolution. Outputs are unchanged up to float
rounding; the fused model no longer has the checkpoint's keys, so load weights before fusing.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from samkit.layers import ConvGeluConv, ConvStem, sam_neck
from samkit.layers.inplace import add_
from samkit.layers.reparam import ConvBN, conv_like, depthwise_1x1, fold_bn, fuse_children, merge_repvgg_dw

Cfg = Tuple[int, int, int, int, int, int]

# (kernel, expansion, channels, squeeze-excite, hard-swish flag (unused), stride): EdgeSAM's
# RepViT-M1, which is also timm's legacy repvit_m1 flattened (see timm_layout)
M1_CFGS: Tuple[Cfg, ...] = (
    (3, 2, 48, 1, 0, 1), (3, 2, 48, 0, 0, 1), (3, 2, 48, 0, 0, 1),
    (3, 2, 96, 0, 0, 2), (3, 2, 96, 1, 0, 1), (3, 2, 96, 0, 0, 1), (3, 2, 96, 0, 0, 1),
    (3, 2, 192, 0, 1, 2),
    *(((3, 2, 192, 1, 1, 1), (3, 2, 192, 0, 1, 1)) * 7),
    (3, 2, 192, 0, 1, 1),
    (3, 2, 384, 0, 1, 2), (3, 2, 384, 1, 1, 1), (3, 2, 384, 0, 1, 1),
)
# RepViT-M1.1 (``repvit_m1_1`` of the RepViT repository; EfficientSAM3's RV-M student): widths
# 64 / 128 / 256 / 512, 24 blocks
M1_1_CFGS: Tuple[Cfg, ...] = (
    (3, 2, 64, 1, 0, 1), (3, 2, 64, 0, 0, 1), (3, 2, 64, 0, 0, 1),
    (3, 2, 128, 0, 0, 2), (3, 2, 128, 1, 0, 1), (3, 2, 128, 0, 0, 1), (3, 2, 128, 0, 0, 1),
    (3, 2, 256, 0, 1, 2),
    *(((3, 2, 256, 1, 1, 1), (3, 2, 256, 0, 1, 1)) * 6),
    (3, 2, 256, 0, 1, 1),
    (3, 2, 512, 0, 1, 2), (3, 2, 512, 1, 1, 1), (3, 2, 512, 0, 1, 1),
)

# RepViT-M2.3 (``repvit_m2_3`` of the RepViT repository; EfficientSAM3's ES-RV-L stage-1 student):
# widths 80 / 160 / 320 / 640, 54 blocks
M2_3_CFGS: Tuple[Cfg, ...] = (
    *(((3, 2, 80, 1, 0, 1), (3, 2, 80, 0, 0, 1)) * 3), (3, 2, 80, 0, 0, 1),
    (3, 2, 160, 0, 0, 2), *(((3, 2, 160, 1, 0, 1), (3, 2, 160, 0, 0, 1)) * 3), (3, 2, 160, 0, 0, 1),
    (3, 2, 320, 0, 1, 2), *(((3, 2, 320, 1, 1, 1), (3, 2, 320, 0, 1, 1)) * 17), (3, 2, 320, 0, 1, 1),
    (3, 2, 640, 0, 1, 2), (3, 2, 640, 1, 1, 1), (3, 2, 640, 0, 1, 1),
)


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None, round_limit: float = 0.9) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without dropping below ``round_limit * v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def timm_layout(embed_dim: Sequence[int], depth: Sequence[int], mlp_ratio: int = 2,
                kernel: int = 3) -> Tuple[Tuple[Cfg, ...], Tuple[int, ...]]:
    """timm's legacy RepViT (``embed_dim``, ``depth`` per stage) as (flat ``cfgs``, indices into
    ``features`` of the stage outputs). Stage ``s > 0`` starts with timm's downsample: its
    ``pre_block`` (a block without SE at the previous width) and a stride-2 block; then ``depth[s]``
    blocks with SE on blocks 0, 2, 4, ... ``mlp_ratio`` must be 2 (EdgeSAM's stride-2 blocks
    use twice the width)."""
    if mlp_ratio != 2:
        raise ValueError(f"only mlp_ratio 2 is supported, got {mlp_ratio}")
    cfgs: List[Cfg] = []
    outs: List[int] = []
    for s, (c, d) in enumerate(zip(embed_dim, depth)):
        if s > 0:
            cfgs.append((kernel, mlp_ratio, embed_dim[s - 1], 0, 0, 1))  # pre_block
            cfgs.append((kernel, mlp_ratio, c, 0, 0, 2))  # spatial + channel downsample, ffn
        cfgs.extend((kernel, mlp_ratio, c, int(j % 2 == 0), 0, 1) for j in range(d))
        outs.append(len(cfgs))  # features.0 is the stem, so block i is features.{i + 1}
    return tuple(cfgs), tuple(outs)


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
    """``conv`` (k x k depthwise + BN) + ``conv1`` (1x1 depthwise + BN) + identity.
    ``B x C x H x W`` in and out."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, kernel, 1, (kernel - 1) // 2, groups=dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, 0, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(add_(self.conv(x), depthwise_1x1(self.conv1, x)), x)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One depth-wise ``k x k`` convolution equal to ``conv + conv1 + identity`` in eval mode."""
        return merge_repvgg_dw(self.conv, self.conv1)


class RepVGGDWBN(nn.Module):
    """The RepViT repository's RepVGGDW: ``bn(conv(x) + conv1(x) + x)`` with ``conv`` a depth-wise
    k x k ConvBN, ``conv1`` a depth-wise 1x1 convolution with bias and ``bn`` a BatchNorm after the
    sum (EfficientSAM3's RepViT students). ``B x C x H x W`` in and out."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, kernel, 1, (kernel - 1) // 2, groups=dim)
        self.conv1 = nn.Conv2d(dim, dim, 1, 1, 0, groups=dim)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(add_(add_(self.conv(x), self.conv1(x)), x))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """One depth-wise ``k x k`` convolution equal to the block in eval mode."""
        wk, bk = fold_bn(self.conv.c, self.conv.bn)
        p = (wk.shape[-1] - 1) // 2
        w = wk + F.pad(self.conv1.weight, [p, p, p, p])
        w[:, 0, p, p] += 1.0  # identity as a centred depth-wise tap
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        b = (bk + self.conv1.bias - self.bn.running_mean) * scale + self.bn.bias
        return conv_like(self.conv.c, w * scale[:, None, None, None], b)


class Residual(nn.Module):
    """``x + m(x)`` (key ``m``)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return add_(self.m(x), x)  # == x + m(x)


class RepViTBlock(nn.Module):
    """Token mixer then residual channel mixer (1x1 expand, GELU, 1x1 project).

    Stride 1: token mixer = RepVGGDW (+ SE). Stride 2: depthwise k x k stride-2 ConvBN (+ SE) and
    a 1x1 ConvBN to the new width; the channel mixer then expands to ``2 * oup``.
    ``B x inp x H x W -> B x oup x H/s x W/s``."""

    def __init__(self, inp: int, hidden: int, oup: int, kernel: int, stride: int, use_se: bool,
                 dw_bn: bool = False) -> None:
        super().__init__()
        se = SqueezeExcite(inp) if use_se else nn.Identity()
        if stride == 2:
            self.token_mixer = nn.Sequential(ConvBN(inp, inp, kernel, stride, (kernel - 1) // 2, groups=inp), se,
                                             ConvBN(inp, oup, 1))
            hidden = 2 * oup
        else:
            if inp != oup:
                raise ValueError("a stride-1 RepViT block keeps its width")
            self.token_mixer = nn.Sequential((RepVGGDWBN if dw_bn else RepVGGDW)(inp, kernel), se)
        self.channel_mixer = Residual(ConvGeluConv(ConvBN(oup, hidden, 1), nn.GELU(), ConvBN(hidden, oup, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.channel_mixer(self.token_mixer(x))


class RepViTTrunk(nn.Module):
    """RepViT without a neck: ``B x 3 x S x S`` -> the outputs of ``features[i]`` for ``i`` in
    ``out_indices`` (finest first, contiguous), default timm's four stage outputs (EdgeTAM's
    trunk). ``channel_list``: their widths, coarsest first (FPN order). ``dw_bn``: stride-1 blocks
    use :class:`RepVGGDWBN` (the RepViT repository's blocks) instead of EdgeSAM's :class:`RepVGGDW`."""

    def __init__(self, cfgs: Sequence[Cfg] = M1_CFGS, out_indices: Optional[Sequence[int]] = None,
                 dw_bn: bool = False) -> None:
        super().__init__()
        c0 = cfgs[0][2]
        layers: List[nn.Module] = [ConvStem(3, c0)]
        widths = [c0]
        cin = c0
        for k, t, c, se, _hs, s in cfgs:
            cout = make_divisible(c, 8)
            layers.append(RepViTBlock(cin, make_divisible(cin * t, 8), cout, k, s, bool(se), dw_bn))
            widths.append(cout)
            cin = cout
        self.features = nn.ModuleList(layers)
        if out_indices is None:
            out_indices = _stage_outputs(cfgs)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not 0 <= out_indices[0] \
                or out_indices[-1] >= len(layers):
            raise ValueError(f"out_indices {list(out_indices)} must be increasing indices of the {len(layers)} features")
        self.out_indices = tuple(out_indices)
        self.channel_list = [widths[i] for i in self.out_indices][::-1]
        self.fused = False

    @classmethod
    def timm_m1(cls) -> "RepViTTrunk":
        """EdgeTAM's trunk: timm ``repvit_m1`` features_only (widths 48/96/192/384, depths 2/2/14/2);
        load the official keys through :func:`remap_timm_repvit`."""
        cfgs, outs = timm_layout((48, 96, 192, 384), (2, 2, 14, 2))
        return cls(cfgs, outs)

    def taps(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Outputs of ``features[out_indices]`` in channels-last memory format (the convolutions
        run faster on CPU that way); the network stops after the last tap."""
        x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for i in range(self.out_indices[-1] + 1):
            x = self.features[i](x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [o.contiguous() for o in self.taps(x)]

    @torch.no_grad()
    def fuse(self) -> "RepViTTrunk":
        """Fold every BatchNorm into its convolution and every RepVGGDW into one depthwise
        convolution, in place (inference only). Returns ``self``."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm running statistics; call .eval() first")
        if not self.fused:
            fuse_children(self.features, (ConvBN, RepVGGDW, RepVGGDWBN))
            self.fused = True
        return self


def _stage_outputs(cfgs: Sequence[Cfg]) -> Tuple[int, ...]:
    """timm's stage outputs: the block two before each stride-2 block (before the pre_block), and
    the last block (indices into ``features``)."""
    strided = [i + 1 for i, c in enumerate(cfgs) if c[5] == 2]
    return tuple(i - 2 for i in strided) + (len(cfgs),)


def _width_ends(cfgs: Sequence[Cfg]) -> List[int]:
    """Indices into ``features`` of the last block of each width (EdgeSAM's stages)."""
    ends = [i for i in range(1, len(cfgs)) if cfgs[i][2] != cfgs[i - 1][2]]
    return ends + [len(cfgs)]


class UpsampleConv(nn.Module):
    """1x1 conv (``op_list.0``, no bias) then ``factor`` x interpolation (EdgeSAM's fuse_stage3)."""

    def __init__(self, cin: int, cout: int, factor: int = 2, mode: str = "bicubic") -> None:
        super().__init__()
        self.op_list = nn.ModuleList([nn.Conv2d(cin, cout, kernel_size=1, bias=False)])
        self.factor = factor
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.op_list[0](x), scale_factor=self.factor, mode=self.mode, align_corners=False)


class RepViT(RepViTTrunk):
    """EdgeSAM's encoder: RepViT with the two-level fusion neck and the SAM neck.
    ``B x 3 x S x S -> B x out_chans x S/16 x S/16``. ``cfgs`` must have four widths."""

    def __init__(self, cfgs: Sequence[Cfg] = M1_CFGS, out_chans: int = 256, upsample_mode: str = "bicubic") -> None:
        ends = _width_ends(cfgs)
        if len(ends) != 4:
            raise ValueError(f"EdgeSAM's fusion neck needs 4 widths, cfgs have {len(ends)}")
        super().__init__(cfgs, out_indices=ends[2:])
        c2, c3 = reversed(self.channel_list)
        self.fuse_stage2 = nn.Conv2d(c2, out_chans, kernel_size=1, bias=False)
        self.fuse_stage3 = UpsampleConv(c3, out_chans, 2, upsample_mode)
        self.neck = sam_neck(out_chans, out_chans)

    @classmethod
    def edge_sam(cls) -> "RepViT":
        """RepViT-M1 as configured by EdgeSAM (fusion neck, bicubic upsampling)."""
        return cls(M1_CFGS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x 1024 x 1024`` normalised image -> ``B x 256 x 64 x 64`` embedding (contiguous)."""
        stage2, stage3 = self.taps(x)
        x = add_(self.fuse_stage2(stage2), self.fuse_stage3(stage3))
        return self.neck(x).contiguous()


# --------------------------------------------------------------------------- timm key layout
_TIMM_KEY = re.compile(r"^(?:stem\.conv(?P<stem>[12])|stages_(?P<s>\d+)\.(?:blocks\.(?P<j>\d+)|downsample\.(?P<d>"
                       r"pre_block|spatial_downsample|channel_downsample|ffn\.conv[12])))\.(?P<rest>.+)$")
# parts of a timm block -> this module's names
_TIMM_BLOCK = (("token_mixer.conv.", "token_mixer.0.conv."), ("token_mixer.conv1.", "token_mixer.0.conv1."),
               ("se.", "token_mixer.1."), ("channel_mixer.conv1.", "channel_mixer.m.0."),
               ("channel_mixer.conv2.", "channel_mixer.m.2."))
_TIMM_DOWNSAMPLE = {"spatial_downsample": "token_mixer.0.", "channel_downsample": "token_mixer.2.",
                    "ffn.conv1": "channel_mixer.m.0.", "ffn.conv2": "channel_mixer.m.2."}


def remap_timm_repvit(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm legacy RepViT ``features_only`` keys (``stem.conv1.c.weight``,
    ``stages_1.downsample.pre_block.token_mixer.conv.bn.bias``, ``stages_2.blocks.3.se.fc1.weight``,
    ...) -> :class:`RepViTTrunk` keys (``features.{i}...``). Stage depths are read from the keys;
    keys of any other form are passed through unchanged (a strict load then names them). Pure."""
    stages: Dict[int, List[int]] = {}  # stage -> [has downsample, number of blocks]
    for key in state_dict:
        m = _TIMM_KEY.match(key)
        if m and m["s"] is not None:
            st = stages.setdefault(int(m["s"]), [0, 0])
            if m["d"] is not None:
                st[0] = 1
            else:
                st[1] = max(st[1], int(m["j"]) + 1)
    first: Dict[int, int] = {}  # stage -> features index of its first module (pre_block or block 0)
    idx = 1
    for s in sorted(stages):
        first[s] = idx
        idx += 2 * stages[s][0] + stages[s][1]
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        out[_timm_key(key, stages, first)] = value
    return out


def _timm_key(key: str, stages: Dict[int, List[int]], first: Dict[int, int]) -> str:
    """One timm key -> this layout (unchanged when it is not a timm RepViT key)."""
    m = _TIMM_KEY.match(key)
    if m is None:
        return key
    rest = m["rest"]
    if m["stem"] is not None:
        return f"features.0.{0 if m['stem'] == '1' else 2}.{rest}"
    s = int(m["s"])
    base = first[s]
    d = m["d"]
    if d is None:  # a block: after the stage's downsample (pre_block + stride-2 block)
        i, part = base + 2 * stages[s][0] + int(m["j"]), rest
    elif d == "pre_block":
        i, part = base, rest
    else:
        return f"features.{base + 1}.{_TIMM_DOWNSAMPLE[d]}{rest}"
    for old, new in _TIMM_BLOCK:
        if part.startswith(old):
            return f"features.{i}.{new}{part[len(old):]}"
    return key
