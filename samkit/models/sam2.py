"""SAM 2 / SAM 2.1 image path (Ravi et al., arXiv:2408.00714) and the model class shared by
the SAM 2 family (EdgeTAM and EfficientTAM reuse :class:`Sam2Model` with another encoder).

Image path (as the official ``SAM2ImagePredictor``):
  preprocess: [0, 1], bilinear antialiased resize to ``image_size`` x ``image_size`` (aspect
  ratio not kept), ImageNet mean/std; encoder: trunk + FPN neck (``scalp`` drops the coarsest
  level); the two finest levels are projected by the decoder's ``conv_s0`` / ``conv_s1`` once
  per image; the image embedding is the coarsest kept level **plus** ``no_mem_embed``;
  prompts: a box becomes two points labelled 2 and 3 placed before the clicks, and a padding
  point is always appended; decoder: the shared mask decoder with high-res skip features,
  object-score MLP head, sigmoid IoU, multimask token for object pointers and the dynamic
  multimask fallback (stability delta 0.05, thresh 0.98); masks: bilinear straight to the
  original size.

Video hooks (used by ``samkit.video.memory_tracker``): :meth:`Sam2Model.forward_image`,
:meth:`Sam2Model.forward_sam_heads` and :meth:`Sam2Model.use_mask_as_output` mirror the
official ``forward_image`` / ``_forward_sam_heads`` / ``_use_mask_as_output``.
:meth:`Sam2Model.prepare_backbone_features` mirrors ``_prepare_backbone_features`` (the
flattened ``HW x B x C`` layout; samkit.video does not use it, only tests do). The memory
modules are attached under their official names by ``samkit.memory``.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.fpn_neck import FpnNeck, ImageEncoder
from ..backbones.hiera import build_hiera
from ..families import register_builder, register_remap
from ..heads import MaskDecoder, PromptEncoder, TwoWayTransformer
from ..memory.config import SAM2, SAM21, MemoryConfig
from ..specs import IMAGENET_MEAN, IMAGENET_STD
from .base import (DecoderOutput, ImageFeatures, ImageTransform, PromptableModel, masks_of, postprocess_direct,
                   preprocess_stretch)

NO_OBJ_SCORE = -1024.0  # mask logits of frames where the object is judged absent (official value)


def sam2_heads(embed_dim: int = 256, image_size: int = 1024, backbone_stride: int = 16,
               use_high_res_features: bool = True) -> Tuple[PromptEncoder, MaskDecoder]:
    """Prompt encoder and mask decoder configured as in ``SAM2Base._build_sam_heads`` plus the
    image-builder post-processing overrides (dynamic multimask via stability)."""
    grid = image_size // backbone_stride
    prompt_encoder = PromptEncoder(embed_dim=embed_dim, image_embedding_size=(grid, grid),
                                   input_image_size=(image_size, image_size), mask_in_chans=16)
    mask_decoder = MaskDecoder(
        transformer_dim=embed_dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=embed_dim, num_heads=8, mlp_dim=2048),
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256,
        use_high_res_features=use_high_res_features, pred_obj_scores=True, pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True, iou_prediction_use_sigmoid=True,
        dynamic_multimask_via_stability=True, dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    )
    return prompt_encoder, mask_decoder


class Sam2Model(PromptableModel):
    """Image encoder + prompt encoder + mask decoder (+ video memory) of the SAM 2 family.

    ``image_encoder(x: B x 3 x S x S)`` must return the dict of :class:`ImageEncoder`
    (levels finest first, ``B x 256 x S/4 ..``). ``use_high_res_features``: the decoder adds
    the two finest levels (SAM 2, EdgeTAM) or uses the embedding only (EfficientTAM).
    ``memory_config``: a ``samkit.memory.config.MemoryConfig``; its modules are attached under
    the official names (``memory_attention``, ``memory_encoder``, ``no_mem_embed``, ...). Without
    it only ``no_mem_embed`` (needed by the image path) is created.
    """

    default_selection = "native"  # the official predictor returns the decoder's own single mask
    supports_mask_input = True
    mask_threshold = 0.0

    def __init__(self, image_encoder: nn.Module, *, image_size: int = 1024, backbone_stride: int = 16,
                 embed_dim: int = 256, use_high_res_features: bool = True, memory_config=None,
                 pixel_mean: Sequence[float] = IMAGENET_MEAN, pixel_std: Sequence[float] = IMAGENET_STD,
                 heads: Optional[Tuple[PromptEncoder, MaskDecoder]] = None) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        if heads is None:  # ``heads``: another (prompt encoder, mask decoder), e.g. reduced ones in tests
            heads = sam2_heads(embed_dim, image_size, backbone_stride, use_high_res_features)
        self.prompt_encoder, self.mask_decoder = heads
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.hidden_dim = embed_dim
        self.use_high_res_features = use_high_res_features
        self.num_feature_levels = 3 if use_high_res_features else 1
        self.pixel_mean = tuple(pixel_mean)
        self.pixel_std = tuple(pixel_std)
        self.memory_config = None
        if memory_config is not None:
            from ..memory import attach_memory

            attach_memory(self, memory_config)
        else:
            self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))

    # ------------------------------------------------------------------ image contract
    @torch.no_grad()
    def fuse(self) -> "Sam2Model":
        """Re-parameterise the image encoder for inference (EdgeTAM's RepViT: BN folding and
        RepVGG merging; a no-op for Hiera / ViT trunks). In place, eval mode, after loading.
        Returns ``self``."""
        fuse = getattr(self.image_encoder, "fuse", None)
        if fuse is not None:
            fuse()
        return self

    def preprocess(self, image: np.ndarray) -> Tuple[torch.Tensor, ImageTransform]:
        """H x W x 3 uint8 -> (1 x 3 x S x S normalised, transform)."""
        return preprocess_stretch(image, self.image_size, self.pixel_mean, self.pixel_std, self.device,
                                  antialias=True)

    def forward_image(self, x: torch.Tensor) -> dict:
        """``B x 3 x S x S`` -> official ``backbone_out`` dict: ``backbone_fpn`` (finest first;
        with high-res features levels 0 / 1 already projected by ``conv_s0`` / ``conv_s1`` to
        ``B x 32 x S/4 x S/4`` and ``B x 64 x S/8 x S/8``), ``vision_pos_enc`` (matching sine
        encodings, ``B x 256 x h x w``) and ``vision_features`` (``B x 256 x S/16 x S/16``,
        without ``no_mem_embed``)."""
        out = self.image_encoder(x)
        fpn = list(out["backbone_fpn"])
        if self.use_high_res_features:
            fpn[0], fpn[1] = self.mask_decoder.project_high_res(fpn[0], fpn[1])
        return {"vision_features": out["vision_features"], "vision_pos_enc": list(out["vision_pos_enc"]),
                "backbone_fpn": fpn}

    def prepare_backbone_features(self, backbone_out: dict):
        """Official ``_prepare_backbone_features``: the last ``num_feature_levels`` levels
        flattened to ``HW x B x C``. Returns (backbone_out, vision_feats, vision_pos_embeds,
        feat_sizes) with ``feat_sizes`` a list of (h, w), finest first."""
        levels = self.num_feature_levels
        maps = backbone_out["backbone_fpn"][-levels:]
        pos = backbone_out["vision_pos_enc"][-levels:]
        sizes = [(p.shape[-2], p.shape[-1]) for p in pos]
        feats = [m.flatten(2).permute(2, 0, 1) for m in maps]
        pos = [p.flatten(2).permute(2, 0, 1) for p in pos]
        return backbone_out, feats, pos, sizes

    def encode(self, x: torch.Tensor) -> ImageFeatures:
        """``B x 3 x S x S`` -> embed ``B x 256 x S/16 x S/16`` (with ``no_mem_embed`` added, as
        the official image predictor does) and high_res (``B x 32 x S/4``, ``B x 64 x S/8``) or None."""
        out = self.forward_image(x)
        embed = out["vision_features"] + self.no_mem_embed.reshape(1, -1, 1, 1)
        high_res = tuple(out["backbone_fpn"][:2]) if self.use_high_res_features else None
        return ImageFeatures(embed, high_res)

    @staticmethod
    def merge_prompts(points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                      boxes: Optional[torch.Tensor]) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """SAM 2 prompt layout: box corners (labels 2, 3) first, then the clicks. ``B x N x 2``,
        ``B x N`` or None."""
        if points is not None and labels is None:
            raise ValueError("points need labels")
        if boxes is None:
            return None if points is None else (points, labels)
        corners = boxes.reshape(-1, 2, 2)
        corner_labels = torch.tensor([[2, 3]], dtype=torch.int64, device=boxes.device).expand(corners.shape[0], 2)
        if points is None:
            return corners, corner_labels
        return (torch.cat([corners, points.to(corners.dtype)], dim=1),
                torch.cat([corner_labels, labels.to(corner_labels.dtype)], dim=1))

    def decode(self, features: ImageFeatures, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
               boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor],
               multimask: Union[bool, str]) -> DecoderOutput:
        """Prompts in model-frame pixels (points B x N x 2, labels B x N, boxes B x 4, mask_input
        B x 1 x 4h x 4w) -> low_res B x K x 4h x 4w, iou B x K, object_score B x 1, tokens."""
        prompts = self.merge_prompts(points, labels, boxes)
        sparse, dense = self.prompt_encoder(prompts, None, mask_input)
        masks, iou, tokens, obj = self.mask_decoder(
            features.embed, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask,
            repeat_image=features.embed.shape[0] != sparse.shape[0],
            high_res_features=features.high_res if self.use_high_res_features else None,
            cache=features.cache,
        )
        return DecoderOutput(masks, iou, obj, tokens)

    def postprocess(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        """``B x K x 4h x 4w`` -> ``B x K x H x W`` logits (bilinear, straight to the original size)."""
        return postprocess_direct(low_res, transform, mode="bilinear")

    def postprocess_masks(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        return masks_of(low_res, transform, self.mask_threshold, mode="bilinear")

    def forward(self, x: torch.Tensor, points: Optional[torch.Tensor] = None, labels: Optional[torch.Tensor] = None,
                boxes: Optional[torch.Tensor] = None, mask_input: Optional[torch.Tensor] = None,
                multimask: Union[bool, str] = True) -> DecoderOutput:
        """Preprocessed batch ``B x 3 x S x S`` and one prompt set per image -> DecoderOutput."""
        return self.decode(self.encode(x), points, labels, boxes, mask_input, multimask)

    # ------------------------------------------------------------------ video hooks
    def forward_sam_heads(self, backbone_features: torch.Tensor, point_inputs: Optional[dict] = None,
                          mask_inputs: Optional[torch.Tensor] = None,
                          high_res_features: Optional[Sequence[torch.Tensor]] = None,
                          multimask_output: bool = False):
        """Official ``_forward_sam_heads`` on (memory-conditioned) features ``B x 256 x h x w``.

        ``point_inputs``: {"point_coords": B x P x 2 model-frame pixels, "point_labels": B x P}
        or None (one padding point); ``mask_inputs``: B x 1 x H x W (resized with antialiased
        bilinear to 4h x 4w when needed). Returns (low_res_multimasks B x M x 4h x 4w,
        high_res_multimasks B x M x S x S, ious B x M, low_res_masks B x 1 x 4h x 4w,
        high_res_masks B x 1 x S x S, obj_ptr B x 256, object_score_logits B x 1); masks are
        set to -1024 where the object score is <= 0."""
        b = backbone_features.shape[0]
        device = backbone_features.device
        if point_inputs is not None:
            coords, labels = point_inputs["point_coords"], point_inputs["point_labels"]
        else:
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        dense_in = None
        if mask_inputs is not None:
            size = self.prompt_encoder.mask_input_size
            dense_in = mask_inputs
            if tuple(mask_inputs.shape[-2:]) != tuple(size):
                dense_in = F.interpolate(mask_inputs.float(), size=size, mode="bilinear", align_corners=False,
                                         antialias=True)
        sparse, dense = self.prompt_encoder((coords, labels), None, dense_in)
        low_multi, ious, tokens, obj = self.mask_decoder(
            backbone_features, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output,
            repeat_image=False, high_res_features=high_res_features if self.use_high_res_features else None,
        )
        present = obj > 0
        low_multi = torch.where(present[:, None, None], low_multi, torch.full_like(low_multi, NO_OBJ_SCORE))
        low_multi = low_multi.float()
        high_multi = F.interpolate(low_multi, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        token = tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_masks = low_multi[rows, best].unsqueeze(1)
            high_masks = high_multi[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        else:
            low_masks, high_masks = low_multi, high_multi
        obj_ptr = self._object_pointer(token, obj)
        return low_multi, high_multi, ious, low_masks, high_masks, obj_ptr, obj

    def use_mask_as_output(self, backbone_features: torch.Tensor,
                           high_res_features: Optional[Sequence[torch.Tensor]], mask_inputs: torch.Tensor):
        """Official ``_use_mask_as_output`` (``use_mask_input_as_output_without_sam``): a binary
        mask prompt ``B x 1 x S x S`` is the output itself, as logits ``20 * mask - 10``; the
        object pointer comes from the heads run on the downsampled mask (on the raw features
        ``B x 256 x h x w``, without memory), the object score is +10 where the mask has a
        pixel and -10 where it is empty. Returns the 7-tuple of :meth:`forward_sam_heads`
        (ious all 1; the multimask entries are the single mask)."""
        cfg = self._video_config()
        mask = mask_inputs.float()
        high = mask * 20.0 - 10.0
        # the decoder's low-res size, image_size / backbone_stride * 4 (256 for SAM 2, 288 for SAM 3)
        low = F.interpolate(high, size=tuple(self.prompt_encoder.mask_input_size), mode="bilinear",
                            align_corners=False, antialias=True)
        ious = mask.new_ones(mask.shape[0], 1)
        if cfg.use_obj_ptrs_in_encoder:
            obj_ptr = self.forward_sam_heads(backbone_features, None, self.mask_downsample(mask),
                                             high_res_features)[5]
        else:
            obj_ptr = torch.zeros(mask.shape[0], self.hidden_dim, device=mask.device)
        appearing = (mask.flatten(1) > 0).any(dim=1, keepdim=True).float()
        score = 20.0 * appearing - 10.0
        if cfg.pred_obj_scores:
            if cfg.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * self.no_obj_ptr
        return low, high, ious, low, high, obj_ptr, score

    def _video_config(self):
        cfg = self.memory_config
        if cfg is None:
            raise RuntimeError("this model was built without its video memory (samkit.memory is missing)")
        return cfg

    def _object_pointer(self, token: torch.Tensor, object_score_logits: torch.Tensor) -> torch.Tensor:
        """``obj_ptr_proj(token)`` blended with ``no_obj_ptr`` by the object presence: B x 256."""
        cfg = self._video_config()
        ptr = self.obj_ptr_proj(token)
        if cfg.pred_obj_scores:
            lam = object_score_logits.sigmoid() if cfg.soft_no_obj_ptr else (object_score_logits > 0).float()
            if cfg.fixed_no_obj_ptr:
                ptr = lam * ptr
            ptr = ptr + (1 - lam) * self.no_obj_ptr
        return ptr


# ----------------------------------------------------------------------------- builders
_FPN_CHANNELS = {"tiny": (768, 384, 192, 96), "small": (768, 384, 192, 96),
                 "base_plus": (896, 448, 224, 112), "large": (1152, 576, 288, 144)}


def hiera_image_encoder(size: str) -> ImageEncoder:
    """Hiera trunk + FPN neck (top-down on levels 2, 3; nearest) with ``scalp=1``."""
    neck = FpnNeck(256, _FPN_CHANNELS[size], fpn_top_down_levels=(2, 3), fpn_interp_model="nearest")
    return ImageEncoder(build_hiera(size), neck, scalp=1)


def _build(size: str, memory: MemoryConfig) -> Sam2Model:
    return Sam2Model(hiera_image_encoder(size), image_size=1024, use_high_res_features=True, memory_config=memory)


@register_builder("sam2.1_hiera_t")
def build_sam21_hiera_tiny() -> Sam2Model:
    return _build("tiny", SAM21)


@register_builder("sam2.1_hiera_s")
def build_sam21_hiera_small() -> Sam2Model:
    return _build("small", SAM21)


@register_builder("sam2.1_hiera_b+")
def build_sam21_hiera_base_plus() -> Sam2Model:
    return _build("base_plus", SAM21)


@register_builder("sam2.1_hiera_l")
def build_sam21_hiera_large() -> Sam2Model:
    return _build("large", SAM21)


@register_builder("sam2_hiera_t")
def build_sam2_hiera_tiny() -> Sam2Model:
    return _build("tiny", SAM2)


@register_builder("sam2_hiera_s")
def build_sam2_hiera_small() -> Sam2Model:
    return _build("small", SAM2)


@register_builder("sam2_hiera_b+")
def build_sam2_hiera_base_plus() -> Sam2Model:
    return _build("base_plus", SAM2)


@register_builder("sam2_hiera_l")
def build_sam2_hiera_large() -> Sam2Model:
    return _build("large", SAM2)


# ----------------------------------------------------------------------------- key remap
_DECODER_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)layers\.([01])\.")


@register_remap("sam2")
def remap_sam2(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official SAM 2-family keys -> samkit: ``sam_prompt_encoder.`` -> ``prompt_encoder.``,
    ``sam_mask_decoder.`` -> ``mask_decoder.``, the decoder transformer's ``mlp.layers.0/1`` ->
    ``mlp.lin1/lin2``. Image-encoder and memory keys keep their official names. Pure."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("sam_prompt_encoder."):
            key = "prompt_encoder." + key[len("sam_prompt_encoder."):]
        elif key.startswith("sam_mask_decoder."):
            key = "mask_decoder." + key[len("sam_mask_decoder."):]
            key = _DECODER_MLP.sub(lambda m: m.group(1) + ("lin1." if m.group(2) == "0" else "lin2."), key)
        out[key] = value
    return out
