"""SAM (ViT-B/L/H) assembly and builders.

``build_sam_vit_b()`` and friends call one ``_build`` that spells every number of the
released configurations (Kirillov et al., 2023). The model is a :class:`SamModel`, whose
image encoder is injected, so MobileSAM and EdgeSAM reuse it with another encoder.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..heads import MaskDecoder, PromptEncoder, TwoWayTransformer
from ..backbones.vit_sam import ImageEncoderViT
from ..families import register_builder, register_remap
from ..specs import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from .base import (DecoderOutput, ImageFeatures, ImageTransform, PromptableModel, masks_of, postprocess_crop_upscale,
                   preprocess_longest_side)


class SamModel(PromptableModel):
    """Image encoder + prompt encoder + mask decoder with SAM's pre/post-processing
    (longest side to ``image_size``, 0..255 normalisation, zero padding; masks upsampled to the
    frame, cropped, upsampled to the original size)."""

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 pixel_mean: Sequence[float] = SAM_PIXEL_MEAN, pixel_std: Sequence[float] = SAM_PIXEL_STD,
                 image_size: int = 1024) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = image_size
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    def preprocess(self, image: np.ndarray):
        return preprocess_longest_side(image, self.image_size, self.pixel_mean.flatten().tolist(),
                                       self.pixel_std.flatten().tolist(), self.device)

    def encode(self, x: torch.Tensor) -> ImageFeatures:
        """``B x 3 x S x S`` normalised -> embeddings ``B x 256 x S/16 x S/16``."""
        return ImageFeatures(self.image_encoder(x))

    def decode(self, features: ImageFeatures, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
               boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor],
               multimask: Union[bool, str]) -> DecoderOutput:
        pts = (points, labels) if points is not None else None
        sparse, dense = self.prompt_encoder(pts, boxes, mask_input)
        masks, iou, tokens, obj = self.mask_decoder(features.embed, self.prompt_encoder.get_dense_pe(), sparse,
                                                    dense, multimask, high_res_features=features.high_res,
                                                    cache=features.cache)
        return DecoderOutput(masks, iou, obj, tokens)

    def postprocess(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        return postprocess_crop_upscale(low_res, transform)

    def postprocess_masks(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        return masks_of(low_res, transform, self.mask_threshold, crop=True)

    def forward(self, x: torch.Tensor, points: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, mask_input: Optional[torch.Tensor] = None,
                multimask: Union[bool, str] = True) -> DecoderOutput:
        """Torch-level batch API: ``x`` B x 3 x S x S (already preprocessed), one prompt set per
        image (points B x N x 2 and labels B x N, boxes B x 4, mask_input B x 1 x 256 x 256, all in
        model-frame coordinates) -> low-res logits B x K x 256 x 256 and IoU B x K."""
        return self.decode(self.encode(x), points, labels, boxes, mask_input, multimask)


def sam_heads(embed_dim: int = 256, grid: int = 64, image_size: int = 1024, num_multimask_outputs: int = 3):
    """The prompt encoder and mask decoder of SAM (and of MobileSAM / EdgeSAM)."""
    prompt_encoder = PromptEncoder(embed_dim=embed_dim, image_embedding_size=(grid, grid),
                                   input_image_size=(image_size, image_size), mask_in_chans=16)
    mask_decoder = MaskDecoder(
        transformer_dim=embed_dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, num_heads=8, mlp_dim=2048),
        num_multimask_outputs=num_multimask_outputs, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def _build(embed_dim: int, depth: int, num_heads: int, global_attn_indexes: Sequence[int]) -> SamModel:
    image_size, patch_size, prompt_dim = 1024, 16, 256
    encoder = ImageEncoderViT(
        img_size=image_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_ratio=4.0, out_chans=prompt_dim, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_abs_pos=True, use_rel_pos=True, window_size=14, global_attn_indexes=tuple(global_attn_indexes),
    )
    return SamModel(encoder, *sam_heads(prompt_dim, image_size // patch_size, image_size), image_size=image_size)


@register_builder("sam_vit_b")
def build_sam_vit_b() -> SamModel:
    return _build(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11))


@register_builder("sam_vit_l")
def build_sam_vit_l() -> SamModel:
    return _build(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23))


@register_builder("sam_vit_h")
def build_sam_vit_h() -> SamModel:
    return _build(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31))


@register_remap("sam")
def remap_sam(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official segment-anything files use our names already; drop the non-persistent pixel
    statistics that some re-saved copies carry."""
    return {k: v for k, v in state_dict.items() if k not in ("pixel_mean", "pixel_std")}
