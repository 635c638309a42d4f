"""EdgeSAM (Zhou et al., arXiv:2312.06660): RepViT-M1 with a two-level fusion neck
(``backbones/rep_vit.py``) behind SAM's heads. The decoder has 4 mask tokens and EdgeSAM
exposes all of them: ``decode(..., multimask="all")`` returns the 4 masks (token 0 = single-mask
output, tokens 1..3 = the usual 3 multimask outputs). The IoU head was not distilled, so single
masks are chosen by stability score (``default_selection = "stability"``, as the authors
advise). ``model.fuse()`` re-parameterises the encoder for inference (BN folding, RepVGG
merging). Licence: S-Lab License 1.0, non-commercial use only (the registry warns when loading).
"""
from __future__ import annotations

from typing import Dict

import torch

from ..backbones.rep_vit import RepViT
from ..families import register_builder, register_remap
from .sam import SamModel, sam_heads

StateDict = Dict[str, torch.Tensor]


class EdgeSamModel(SamModel):
    """SamModel with EdgeSAM's RepViT encoder. ``default_selection = "stability"`` because the
    IoU head of EdgeSAM was not distilled; ``decode(..., multimask="all")`` returns 4 masks."""

    default_selection = "stability"

    @torch.no_grad()
    def fuse(self) -> "EdgeSamModel":
        """Re-parameterise the RepViT encoder for inference (in place; the model must be in eval
        mode and loaded: the fused encoder no longer has the checkpoint's keys). Returns self."""
        self.image_encoder.fuse()
        return self


@register_builder("edge_sam", "edge_sam_3x")
def build_edge_sam() -> EdgeSamModel:
    """EdgeSAM (and EdgeSAM-3x, same architecture): RepViT-M1 with fusion neck + SAM's heads."""
    return EdgeSamModel(RepViT.edge_sam(), *sam_heads(256, 64, 1024, num_multimask_outputs=3),
                        image_size=1024).eval()


_EDGE_SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")


@register_remap("edge_sam")
def remap_edge_sam(state_dict: StateDict) -> StateDict:
    """``edge_sam*.pth`` -> samkit. The module names are kept, so keys are unchanged; the official
    loader is non-strict, so anything outside the three modules (e.g. training-only heads) is
    dropped here and the rest is loaded strictly."""
    return {k: v for k, v in state_dict.items() if k.startswith(_EDGE_SAM_PREFIXES)}
