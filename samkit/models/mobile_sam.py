"""MobileSAM (Zhang et al., arXiv:2306.14289): the TinyViT-5M encoder (``backbones/tiny_vit.py``)
behind SAM's prompt encoder and mask decoder, unchanged, with SAM's pre/post-processing:
:class:`MobileSamModel` is a :class:`SamModel` whose ``fuse()`` folds the encoder's BatchNorms
for inference. ``mobile_sam.pt`` is a flat state dict in SAM's layout plus TinyViT's unused
ImageNet head, which the remap drops.
"""
from __future__ import annotations

from typing import Dict

import torch

from ..backbones.tiny_vit import TinyViT
from ..families import register_builder, register_remap
from .sam import SamModel, sam_heads

StateDict = Dict[str, torch.Tensor]


class MobileSamModel(SamModel):
    """SamModel with MobileSAM's TinyViT encoder; ``fuse()`` folds the encoder's BatchNorms."""

    @torch.no_grad()
    def fuse(self) -> "MobileSamModel":
        """Fold every BatchNorm of the TinyViT encoder into its convolution (in place; the model
        must be in eval mode and loaded: the fused encoder no longer has the checkpoint's keys).
        Outputs are unchanged up to float rounding. Returns self."""
        self.image_encoder.fuse()
        return self


@register_builder("mobile_sam")
def build_mobile_sam() -> MobileSamModel:
    """MobileSAM: TinyViT-5M (1024 -> 256 x 64 x 64) + SAM's prompt encoder and mask decoder."""
    return MobileSamModel(TinyViT.mobile_sam(), *sam_heads(256, 64, 1024), image_size=1024).eval()


@register_remap("mobile_sam")
def remap_mobile_sam(state_dict: StateDict) -> StateDict:
    """``mobile_sam.pt`` -> samkit. Keys are SAM's except TinyViT's unused ImageNet head
    (``image_encoder.norm_head.*``, ``image_encoder.head.*``), which is dropped."""
    drop = ("image_encoder.norm_head.", "image_encoder.head.")
    return {k: v for k, v in state_dict.items()
            if not k.startswith(drop) and k not in ("pixel_mean", "pixel_std")}
