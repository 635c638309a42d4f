"""EdgeTAM image path (Zhou et al., arXiv:2501.07256): SAM 2's model with a RepViT-M1 trunk
(samkit's one RepViT, ``image_encoder.trunk.features.*``; the official file stores timm's layout
``image_encoder.trunk.body.*``, renamed by ``remap_timm_repvit``) and the same FPN neck (channels
384/192/96/48, top-down on levels 2, 3, nearest, ``scalp=1``). Heads, preprocessing and the image
predictor semantics are SAM 2.1's; the video memory differs (2 memory-attention layers with RoPE
v2 and a spatial perceiver) and is attached by ``samkit.memory``.
"""
from __future__ import annotations

from typing import Dict

import torch

from ..backbones.fpn_neck import FpnNeck, ImageEncoder
from ..backbones.rep_vit import RepViTTrunk, remap_timm_repvit
from ..families import register_builder, register_remap
from ..memory.config import EDGETAM
from .sam2 import Sam2Model, remap_sam2


def edgetam_image_encoder() -> ImageEncoder:
    """RepViT-M1 (timm's stage outputs) + FPN neck: ``B x 3 x S x S`` -> levels ``B x 256 x S/4..S/16``."""
    neck = FpnNeck(256, (384, 192, 96, 48), fpn_top_down_levels=(2, 3), fpn_interp_model="nearest")
    return ImageEncoder(RepViTTrunk.timm_m1(), neck, scalp=1)


@register_builder("edgetam")
def build_edgetam() -> Sam2Model:
    return Sam2Model(edgetam_image_encoder(), image_size=1024, use_high_res_features=True, memory_config=EDGETAM)


_TIMM_TRUNK = "image_encoder.trunk.body."


@register_remap("edgetam")
def remap_edgetam(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official EdgeTAM keys -> samkit: SAM 2's renames (``remap_sam2``), then the timm trunk
    ``image_encoder.trunk.body.*`` -> ``image_encoder.trunk.*`` through ``remap_timm_repvit``
    (BatchNorm ``num_batches_tracked`` included); the perceiver keys are kept. Pure."""
    sd = remap_sam2(state_dict)
    n = len(_TIMM_TRUNK)
    trunk = remap_timm_repvit({k[n:]: v for k, v in sd.items() if k.startswith(_TIMM_TRUNK)})
    out = {k: v for k, v in sd.items() if not k.startswith(_TIMM_TRUNK)}
    out.update(("image_encoder.trunk." + k, v) for k, v in trunk.items())
    return out
