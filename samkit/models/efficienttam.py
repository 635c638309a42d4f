"""EfficientTAM image path (Xiong et al., arXiv:2411.18933): SAM 2's model with a plain ViT
trunk (ViT-Ti 192 wide / 3 heads, ViT-S 384 / 6; 12 blocks, windows of 14 except blocks
2, 5, 8, 11) and the single-level ViTDet neck; the mask decoder has no high-resolution skip
features. ``_1`` / ``_2`` differ only in the video memory cross-attention (pooled variants);
``_512`` runs at 512 x 512 (32 x 32 embedding, 128 x 128 low-res masks).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict

import torch

from ..backbones.fpn_neck import ImageEncoder
from ..backbones.vitdet import ViTDetNeck, build_vit
from ..families import register_builder, register_remap
from ..memory.config import EFFICIENTTAM, EFFICIENTTAM_1, EFFICIENTTAM_2, MemoryConfig
from .sam2 import Sam2Model, remap_sam2

_WIDTH = {"ti": 192, "s": 384}


def efficienttam_image_encoder(size: str) -> ImageEncoder:
    """ViT trunk + ViTDet neck (LayerNorm): ``B x 3 x S x S`` -> one level ``B x 256 x S/16 x S/16``."""
    return ImageEncoder(build_vit(size), ViTDetNeck(256, (_WIDTH[size],), neck_norm="LN"), scalp=0)


def _build(size: str, memory: MemoryConfig, image_size: int = 1024) -> Sam2Model:
    return Sam2Model(efficienttam_image_encoder(size), image_size=image_size, use_high_res_features=False,
                     memory_config=replace(memory, image_size=image_size))


@register_builder("efficienttam_ti")
def build_efficienttam_ti() -> Sam2Model:
    return _build("ti", EFFICIENTTAM)


@register_builder("efficienttam_ti_1")
def build_efficienttam_ti_1() -> Sam2Model:
    return _build("ti", EFFICIENTTAM_1)


@register_builder("efficienttam_ti_2")
def build_efficienttam_ti_2() -> Sam2Model:
    return _build("ti", EFFICIENTTAM_2)


@register_builder("efficienttam_ti_512")
def build_efficienttam_ti_512() -> Sam2Model:
    return _build("ti", EFFICIENTTAM, image_size=512)


@register_builder("efficienttam_s")
def build_efficienttam_s() -> Sam2Model:
    return _build("s", EFFICIENTTAM)


@register_builder("efficienttam_s_1")
def build_efficienttam_s_1() -> Sam2Model:
    return _build("s", EFFICIENTTAM_1)


@register_builder("efficienttam_s_2")
def build_efficienttam_s_2() -> Sam2Model:
    return _build("s", EFFICIENTTAM_2)


@register_builder("efficienttam_s_512")
def build_efficienttam_s_512() -> Sam2Model:
    return _build("s", EFFICIENTTAM, image_size=512)


@register_remap("efficienttam")
def remap_efficienttam(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official EfficientTAM keys -> samkit (same renames as SAM 2). Pure."""
    return remap_sam2(state_dict)
