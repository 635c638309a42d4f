"""EfficientSAM3's image-encoder students (Zeng et al., EfficientSAM3, SimonZeng7108/efficientsam3):
a small CNN / hybrid backbone in place of SAM 3's Perception Encoder ViT, with a projection head
to SAM 3's trunk width, so SAM 3's necks, detector and tracker run on it unchanged.

Facts (official ``model_builder._create_student_vision_backbone``):

* backbones: EfficientViT B0 / B1 / B2 (last stage), RepViT M0.9 / M1.1 (the classification
  network's ``features``, classifier removed; the RepViT repository's blocks, see
  :class:`samkit.backbones.rep_vit.RepVGGDWBN`), TinyViT 5M / 11M / 21M (the classification network
  built for 1008 px with its 224 px window sizes 7 / 7 / 14 / 7, every patch merging at stride 2,
  the ImageNet head removed; the last stage's tokens as a map).
  All run at stride 32: 1008 px gives a 32 x 32 map.
* head (``ImageStudentEncoder.head``): 1x1 convolution without bias to 1024, BatchNorm, GELU,
  3x3 convolution with bias; then, when the map is not ``embed_size`` (72) square, a bilinear
  resize (align_corners=False) to it. Output ``B x 1024 x 72 x 72`` at 1008 px like SAM 3's ViT.
* module tree (checkpoint keys under ``detector.backbone.vision_backbone.trunk.``):
  ``model.backbone.model.<backbone keys>``, ``model.head.{0,1,3}.*`` (``ListWrapper`` ->
  ``ImageStudentEncoder`` -> the per-backbone wrapper -> the network). Some files insert
  ``student_trunk.`` in the names; the official loader deletes it (so does samkit's remap).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.reparam import conv_like, fold_bn
from .efficientvit import EfficientViTBackbone
from .rep_vit import M1_1_CFGS, M1_CFGS, M2_3_CFGS, RepViTTrunk
from .tiny_vit import TinyViT

_TINYVIT = {  # embed_dims, num_heads (depths 2 / 2 / 6 / 2, windows 7 / 7 / 14 / 7)
    "5m": ((64, 128, 160, 320), (2, 4, 5, 10)),
    "11m": ((64, 128, 256, 448), (2, 4, 8, 14)),
    "21m": ((96, 192, 384, 576), (3, 6, 12, 18)),
}


def _efficientvit(name: str) -> Callable[[], nn.Module]:
    return lambda: EfficientViTBackbone.variant(name)


def _repvit(cfgs) -> Callable[[], nn.Module]:
    return lambda: RepViTTrunk(cfgs, out_indices=(len(cfgs),), dw_bn=True)


def _tinyvit(name: str) -> Callable[[], nn.Module]:
    dims, heads = _TINYVIT[name]
    return lambda: TinyViT(dims, (2, 2, 6, 2), heads, (7, 7, 14, 7), merge_strides=(2, 2, 2), out_chans=None)


# trunk kind -> (backbone family, network builder); the released stage-3 models use
# efficientvit_b1 (EV-M), repvit_m1_1 (RV-M) and tinyvit_11m (TV-M)
STUDENT_BACKBONES: Dict[str, Tuple[str, Callable[[], nn.Module]]] = {
    "efficientvit_b0": ("efficientvit", _efficientvit("b0")),
    "efficientvit_b1": ("efficientvit", _efficientvit("b1")),
    "efficientvit_b2": ("efficientvit", _efficientvit("b2")),
    "repvit_m0_9": ("repvit", _repvit(M1_CFGS)),
    "repvit_m1_1": ("repvit", _repvit(M1_1_CFGS)),
    "repvit_m2_3": ("repvit", _repvit(M2_3_CFGS)),
    "tinyvit_5m": ("tinyvit", _tinyvit("5m")),
    "tinyvit_11m": ("tinyvit", _tinyvit("11m")),
    "tinyvit_21m": ("tinyvit", _tinyvit("21m")),
}


def backbone_width(net: nn.Module) -> int:
    """Channels of the network's output map."""
    if isinstance(net, EfficientViTBackbone):
        return net.width_list[-1]
    if isinstance(net, RepViTTrunk):
        return net.channel_list[0]
    return net.layers[-1].blocks[0].mlp.fc2.out_features


class StudentBackbone(nn.Module):
    """The official per-backbone wrapper (key ``model``): ``B x 3 x S x S -> B x C x S/32 x S/32``
    (a contiguous map in every case)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in STUDENT_BACKBONES:
            raise ValueError(f"unknown EfficientSAM3 trunk {kind!r}; known: {', '.join(STUDENT_BACKBONES)}")
        self.family, build = STUDENT_BACKBONES[kind]
        self.model = build()
        self.channel_list = [backbone_width(self.model)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, list):  # RepViTTrunk returns its taps
            out = out[-1]
        return out.contiguous()


class StudentEncoder(nn.Module):
    """``ImageStudentEncoder``: backbone, projection head (keys ``head.0`` conv 1x1 without bias,
    ``head.1`` BatchNorm, ``head.3`` conv 3x3), bilinear resize to ``embed_size``.
    ``B x 3 x S x S -> B x embed_dim x embed_size x embed_size``."""

    def __init__(self, kind: str, embed_dim: int = 1024, embed_size: int = 72) -> None:
        super().__init__()
        self.backbone = StudentBackbone(kind)
        cin = self.backbone.channel_list[0]
        self.head = nn.Sequential(nn.Conv2d(cin, embed_dim, 1, bias=False), nn.BatchNorm2d(embed_dim), nn.GELU(),
                                  nn.Conv2d(embed_dim, embed_dim, 3, padding=1))
        self.embed_size = embed_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.backbone(x))
        s = self.embed_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x


class StudentTrunk(nn.Module):
    """An EfficientSAM3 image-encoder student as SAM 3's trunk (``ListWrapper``, key ``model``):
    ``B x 3 x S x S -> B x embed_dim x embed_size x embed_size`` (SAM 3: 1024 x 72 x 72 at 1008 px;
    ``embed_size`` is normally ``S / 14`` like the ViT's token grid). ``kind``: a key of
    :data:`STUDENT_BACKBONES`."""

    def __init__(self, kind: str, embed_dim: int = 1024, embed_size: int = 72) -> None:
        super().__init__()
        self.kind = kind
        self.model = StudentEncoder(kind, embed_dim, embed_size)
        self.channel_list = [embed_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @torch.no_grad()
    def fuse(self) -> "StudentTrunk":
        """Fold the BatchNorms of the backbone (and RepViT's RepVGG branches) and of the head into
        their convolutions, in place, for inference (eval mode, after loading). Returns ``self``."""
        if self.training:
            raise RuntimeError("fuse() folds BatchNorm running statistics; call .eval() first")
        self.model.backbone.model.fuse()
        head = self.model.head
        if isinstance(head[1], nn.BatchNorm2d):
            head[0] = conv_like(head[0], *fold_bn(head[0], head[1]))
            head[1] = nn.Identity()
        return self
