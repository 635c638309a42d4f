"""EdgeTAM image path (Zhou et al., arXiv:2501.07256): SAM 2's model with a timm RepViT-M1
trunk (``image_encoder.trunk.body.*``) and the same FPN neck (channels 384/192/96/48,
top-down on levels 2, 3, nearest, ``scalp=1``). Heads, preprocessing and the image predictor
semantics are SAM 2.1's; the video memory differs (2 memory-attention layers with RoPE v2 and
a spatial perceiver) and is attached by ``samkit.memory``.
"""
from __future__ import annotations

from typing import Dict

import torch

from ..backbones.fpn_neck import FpnNeck, ImageEncoder
from ..backbones.rep_vit_timm import build_repvit_m1_timm
from ..families import register_builder, register_remap
from ..memory.config import EDGETAM
from .sam2 import Sam2Model, remap_sam2


def edgetam_image_encoder() -> ImageEncoder:
    """RepViT-M1 (timm layout) + FPN neck: ``B x 3 x S x S`` -> levels ``B x 256 x S/4..S/16``."""
    neck = FpnNeck(256, (384, 192, 96, 48), fpn_top_down_levels=(2, 3), fpn_interp_model="nearest")
    return ImageEncoder(build_repvit_m1_timm(), neck, scalp=1)


@register_builder("edgetam")
def build_edgetam() -> Sam2Model:
    return Sam2Model(edgetam_image_encoder(), image_size=1024, use_high_res_features=True, memory_config=EDGETAM)


@register_remap("edgetam")
def remap_edgetam(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official EdgeTAM keys -> samkit (same renames as SAM 2; the timm trunk keys, including
    BatchNorm ``num_batches_tracked``, and the perceiver keys are kept). Pure."""
    return remap_sam2(state_dict)
