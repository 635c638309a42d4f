"""SAM 3's mask head (official ``UniversalSegmentationHead`` with its ``PixelDecoder``; keys
``segmentation_head.*``).

Facts: the encoded image tokens first cross-attend to the prompt (pre-norm, ``cross_attn_norm``,
``cross_attend_prompt``, residual); they replace the coarsest of the three detector-neck levels
(72 x 72 at 1008 px), and the pixel decoder walks up to the finest level (288 x 288): nearest
upsampling, add the level, 3x3 conv, GroupNorm(8), ReLU, three times. Instance masks are the
dot product of ``mask_predictor.mask_embed`` (3-layer ReLU MLP) of each query with
``instance_seg_head`` (1x1 conv) of the pixel embedding; ``semantic_seg_head`` (1x1 conv to one
channel) gives the semantic map.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP, PackedAttention


class PixelDecoder(nn.Module):
    """Top-down FPN on ``levels`` (finest first) -> ``B x C x H0 x W0`` at the finest level."""

    def __init__(self, d_model: int = 256, stages: int = 3) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(nn.Conv2d(d_model, d_model, 3, padding=1) for _ in range(stages))
        self.norms = nn.ModuleList(nn.GroupNorm(8, d_model) for _ in range(stages))

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        x = levels[-1]
        for i, feat in enumerate(reversed(list(levels[:-1]))):
            x = F.interpolate(x, size=feat.shape[-2:], mode="nearest") + feat
            x = F.relu(self.norms[i](self.conv_layers[i](x)))
        return x


class _MaskPredictor(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.mask_embed = MLP(d_model, d_model, d_model, 3)


class SegmentationHead(nn.Module):
    """``forward(queries B x Q x C, levels [B x C x h_i x w_i] finest first, memory B x HW x C
    (the encoder output on the coarsest level), prompt B x P x C, prompt_pad B x P)`` ->
    (mask logits ``B x Q x h0 x w0``, semantic logits ``B x 1 x h0 x w0`` or None)."""

    def __init__(self, d_model: int = 256, heads: int = 8, stages: int = 3) -> None:
        super().__init__()
        self.pixel_decoder = PixelDecoder(d_model, stages)
        self.mask_predictor = _MaskPredictor(d_model)
        self.instance_seg_head = nn.Conv2d(d_model, d_model, 1)
        self.semantic_seg_head = nn.Conv2d(d_model, 1, 1)
        self.cross_attend_prompt = PackedAttention(d_model, heads)
        self.cross_attn_norm = nn.LayerNorm(d_model)

    def pixel_embed(self, levels: Sequence[torch.Tensor], memory: torch.Tensor, prompt: torch.Tensor,
                    prompt_pad: torch.Tensor) -> torch.Tensor:
        """The pixel decoder's output ``B x C x h0 x w0``."""
        t = self.cross_attn_norm(memory)
        memory = memory + self.cross_attend_prompt(t, prompt, prompt, key_padding_mask=prompt_pad)
        b = memory.shape[0]
        _, c, h, w = levels[-1].shape
        # image levels of one image are shared by the B prompts
        feats: List[torch.Tensor] = [f.expand(b, -1, -1, -1) for f in levels[:-1]]
        feats.append(memory[:, :h * w].transpose(1, 2).reshape(b, c, h, w))
        return self.pixel_decoder(feats)

    def forward(self, queries: torch.Tensor, levels: Sequence[torch.Tensor], memory: torch.Tensor,
                prompt: torch.Tensor, prompt_pad: torch.Tensor,
                semantic: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        pix = self.pixel_embed(levels, memory, prompt, prompt_pad)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_predictor.mask_embed(queries), self.instance_seg_head(pix))
        return masks, (self.semantic_seg_head(pix) if semantic else None)
