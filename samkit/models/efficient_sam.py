"""EfficientSAM (Xiong et al., CVPR 2024, arXiv:2312.00863): a plain ViT-Ti / ViT-S encoder
(``backbones/vit_efficient_sam.py``) behind SAM-style heads configured for its differences
(:class:`EfficientSamModel`). ``efficient_sam_vit{t,s}.pt`` wrap the state dict under
``["model"]``; :func:`remap_efficient_sam` maps its prompt-encoder and decoder names to the
shared heads'.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..backbones.vit_efficient_sam import EfficientSamViT
from ..errors import InputError
from ..families import register_builder, register_remap
from ..heads import MaskDecoder, PromptEncoder, TwoWayTransformer
from ..specs import IMAGENET_MEAN, IMAGENET_STD
from .base import (DecoderOutput, ImageFeatures, ImageTransform, PromptableModel, masks_of, postprocess_direct,
                   preprocess_stretch)

StateDict = Dict[str, torch.Tensor]


class EfficientSamModel(PromptableModel):
    """EfficientSAM: ViT encoder + SAM-style heads with EfficientSAM's semantics.

    Differences from SAM, all expressed as configuration of the shared heads or here:

    * preprocessing: [0, 1] float, bilinear resize to 1024 x 1024 without antialiasing and
      without keeping the aspect ratio, ImageNet mean/std; masks: bicubic straight to the
      original size.
    * prompts: a box is two points with labels 2 / 3 appended after the clicks; the prompt list
      is padded to ``max_points`` (6) with points at (-1, -1) and label -1 whose positional
      encoding is kept (``pad_keeps_pe``); negative clicks get no learned embedding (a zero
      ``point_embeddings.0``); coordinates below 0 become -1 as upstream. No mask input, so no
      dense embedding is added to the image embedding. More than ``max_points`` points are all
      used (upstream silently keeps the first 6).
    * decoder: GELU in the transformer MLP, the hypernetworks and the IoU head; GroupNorm(1, 64)
      in the upscaling; EfficientSAM's self-attention residual (``self_attn_mode``).
    """

    supports_mask_input = False
    default_selection = "iou"

    def __init__(self, image_encoder: EfficientSamViT, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 pixel_mean: Sequence[float] = IMAGENET_MEAN, pixel_std: Sequence[float] = IMAGENET_STD,
                 image_size: int = 1024, max_points: int = 6) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = image_size
        self.max_points = max_points
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    def preprocess(self, image: np.ndarray):
        """``H x W x 3`` uint8 -> (``1 x 3 x 1024 x 1024``, transform)."""
        return preprocess_stretch(image, self.image_size, self.pixel_mean.flatten().tolist(),
                                  self.pixel_std.flatten().tolist(), self.device, antialias=False)

    def encode(self, x: torch.Tensor) -> ImageFeatures:
        """``B x 3 x 1024 x 1024`` -> embeddings ``B x 256 x 64 x 64``."""
        return ImageFeatures(self.image_encoder(x))

    def prompt_points(self, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                      boxes: Optional[torch.Tensor]) -> tuple:
        """Upstream's prompt list: clicks, then box corners (labels 2, 3), negative coordinates
        set to -1, padded to ``max_points`` with (-1, -1) / -1. Returns (``B x N x 2``, ``B x N``)."""
        coords, labs = [], []
        if points is not None:
            if labels is None:
                raise InputError("points were given without labels; pass one label per point (1 fg, 0 bg)")
            coords.append(points.float())
            labs.append(labels.to(torch.float32))
        if boxes is not None:
            b = boxes.float().reshape(-1, 2, 2)
            coords.append(b)
            labs.append(torch.tensor([2.0, 3.0], device=b.device).expand(b.shape[0], 2))
        if not coords:
            raise InputError("EfficientSAM needs at least one point or box prompt")
        bs = max(c.shape[0] for c in coords)
        coords = torch.cat([c.expand(bs, -1, -1) for c in coords], dim=1)
        labs = torch.cat([lab.expand(bs, -1) for lab in labs], dim=1)
        coords = torch.where(coords >= 0, coords, torch.full_like(coords, -1.0))
        n = coords.shape[1]
        if n < self.max_points:
            pad = self.max_points - n
            coords = torch.cat([coords, coords.new_full((bs, pad, 2), -1.0)], dim=1)
            labs = torch.cat([labs, labs.new_full((bs, pad), -1.0)], dim=1)
        return coords, labs

    def decode(self, features: ImageFeatures, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
               boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor],
               multimask: Union[bool, str]) -> DecoderOutput:
        """Prompts in model-frame pixels (1024 frame). Returns low-res logits ``B x K x 256 x 256``
        and IoU ``B x K`` (K = 3 with ``multimask``, else 1; 4 with ``"all"``)."""
        if mask_input is not None:
            raise InputError("EfficientSAM has no mask input; drop mask_input (or use a SAM / MobileSAM / "
                             "EdgeSAM / SAM 2 model for mask refinement)")
        coords, labs = self.prompt_points(points, labels, boxes)
        sparse, dense = self.prompt_encoder((coords, labs), None, None)
        masks, iou, tokens, obj = self.mask_decoder(features.embed, self.prompt_encoder.get_dense_pe(), sparse,
                                                    dense, multimask, cache=features.cache)
        return DecoderOutput(masks, iou, None, tokens)

    def postprocess(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        """``B x K x 256 x 256`` -> ``B x K x H x W`` logits (bicubic)."""
        return postprocess_direct(low_res, transform, mode="bicubic")

    def postprocess_masks(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        return masks_of(low_res, transform, self.mask_threshold, mode="bicubic")

    def forward(self, x: torch.Tensor, points: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, multimask: Union[bool, str] = True) -> DecoderOutput:
        """Preprocessed ``B x 3 x 1024 x 1024`` + model-frame prompts -> :class:`DecoderOutput`."""
        return self.decode(self.encode(x), points, labels, boxes, None, multimask)


def efficient_sam_heads(embed_dim: int = 256, grid: int = 64, image_size: int = 1024):
    """Prompt encoder and mask decoder configured as EfficientSAM's."""
    prompt_encoder = PromptEncoder(embed_dim=embed_dim, image_embedding_size=(grid, grid),
                                   input_image_size=(image_size, image_size), with_mask_input=False,
                                   pad_keeps_pe=True, pad_points=False)
    transformer = TwoWayTransformer(depth=2, embedding_dim=embed_dim, num_heads=8, mlp_dim=2048,
                                    activation=nn.GELU, self_attn_mode="efficient_sam")
    mask_decoder = MaskDecoder(transformer_dim=embed_dim, transformer=transformer, num_multimask_outputs=3,
                               activation=nn.GELU, iou_head_depth=3, iou_head_hidden_dim=256,
                               hypernet_activation=nn.GELU, upscaling_norm="group")
    return prompt_encoder, mask_decoder


@register_builder("efficient_sam_vitt")
def build_efficient_sam_vitt() -> EfficientSamModel:
    """EfficientSAM ViT-Ti (width 192, 3 heads)."""
    return EfficientSamModel(EfficientSamViT.vit_t(), *efficient_sam_heads()).eval()


@register_builder("efficient_sam_vits")
def build_efficient_sam_vits() -> EfficientSamModel:
    """EfficientSAM ViT-S (width 384, 6 heads)."""
    return EfficientSamModel(EfficientSamViT.vit_s(), *efficient_sam_heads()).eval()


_ESAM_RENAMES = (
    (re.compile(r"^prompt_encoder\.invalid_points\."), "prompt_encoder.not_a_point_embed."),
    (re.compile(r"^prompt_encoder\.point_embeddings\.weight$"), "prompt_encoder.point_embeddings.1.weight"),
    (re.compile(r"^prompt_encoder\.bbox_top_left_embeddings\."), "prompt_encoder.point_embeddings.2."),
    (re.compile(r"^prompt_encoder\.bbox_bottom_right_embeddings\."), "prompt_encoder.point_embeddings.3."),
    (re.compile(r"\.mlp\.layers\.0\.0\."), ".mlp.lin1."),
    (re.compile(r"\.mlp\.fc\."), ".mlp.lin2."),
    (re.compile(r"^mask_decoder\.final_output_upscaling_layers\.0\.0\."), "mask_decoder.output_upscaling.0."),
    (re.compile(r"^mask_decoder\.final_output_upscaling_layers\.0\.1\."), "mask_decoder.output_upscaling.1."),
    (re.compile(r"^mask_decoder\.final_output_upscaling_layers\.1\.0\."), "mask_decoder.output_upscaling.3."),
)
_ESAM_MLP = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(layers\.(\d+)\.0|fc)\.")


@register_remap("efficient_sam")
def remap_efficient_sam(state_dict: StateDict) -> StateDict:
    """``efficient_sam_vit{t,s}.pt`` (``["model"]`` already unwrapped) -> samkit.

    Prompt encoder: ``invalid_points`` -> ``not_a_point_embed``; ``point_embeddings`` (positive)
    -> ``point_embeddings.1``; box corners -> ``point_embeddings.2/3``; ``point_embeddings.0``
    (negative clicks) is a zero vector because EfficientSAM adds nothing to them. Decoder MLPs:
    ``layers.{j}.0`` -> ``layers.{j}``, ``fc`` -> ``layers.{last}``; transformer MLP
    ``layers.0.0`` / ``fc`` -> ``lin1`` / ``lin2``; upscaling ``final_output_upscaling_layers.0.{0,1}``
    / ``.1.0`` -> ``output_upscaling.0/1/3``.
    """
    hidden_layers: Dict[str, int] = {}
    for k in state_dict:
        m = _ESAM_MLP.match(k)
        if m and m.group(3) is not None:
            hidden_layers[m.group(1)] = max(hidden_layers.get(m.group(1), 0), int(m.group(3)) + 1)
    out: StateDict = {}
    for k, v in state_dict.items():
        if k in ("pixel_mean", "pixel_std"):
            continue
        m = _ESAM_MLP.match(k)
        if m:
            j = m.group(3) if m.group(3) is not None else str(hidden_layers.get(m.group(1), 0))
            k = f"{m.group(1)}.layers.{j}.{k[m.end():]}"
        else:
            for pattern, repl in _ESAM_RENAMES:
                k = pattern.sub(repl, k)
        out[k] = v
    pos = out.get("prompt_encoder.point_embeddings.1.weight")
    if pos is not None and "prompt_encoder.point_embeddings.0.weight" not in out:
        out["prompt_encoder.point_embeddings.0.weight"] = torch.zeros_like(pos)
    return out
