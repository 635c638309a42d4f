"""Video-memory configuration of each SAM 2-family checkpoint and the module builders.

``MemoryConfig`` holds the upstream YAML facts that change the video computation; each
family's builder passes its config to the model (``samkit.models.sam2``, ``edgetam``,
``efficienttam``), so the wiring is visible next to the builder.
``attach_memory(model, cfg)`` adds every memory module/parameter to a model under the
official state-dict names (``memory_attention``, ``memory_encoder``, ``obj_ptr_proj``,
``obj_ptr_tpos_proj``, ``mask_downsample``, ``maskmem_tpos_enc``, ``no_mem_embed``,
``no_mem_pos_enc``, ``no_obj_ptr``, ``no_obj_embed_spatial``, ``spatial_perceiver``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn

from .attention import MemoryAttention, MemoryAttentionLayer, RoPEAttention, RoPEAttentionV2
from .modules import MLP, MemoryEncoder


@dataclass(frozen=True)
class MemoryConfig:
    """Facts of one family's video memory (defaults = SAM 2.1 ``sam2.1_hiera_*.yaml``).

    ``cross_attention``: "rope" (SAM 2.1), "pooled_v1" / "pooled_v2" (EfficientTAM _1/_2),
    "rope_v2" (EdgeTAM, with the spatial perceiver). ``feat_size`` is the memory grid side
    (image_size / backbone_stride).
    """

    family: str = "sam2"
    hidden_dim: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    image_size: int = 1024
    backbone_stride: int = 16
    attention_layers: int = 4
    cross_attention: str = "rope"
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    use_mask_input_as_output_without_sam: bool = True
    directly_add_no_mem_embed: bool = True
    no_obj_embed_spatial: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    use_multimask_token_for_obj_ptr: bool = True
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    pred_obj_scores: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    max_cond_frames_in_attn: int = -1
    memory_temporal_stride_for_eval: int = 1
    non_overlap_masks_for_mem_enc: bool = False
    # SAM 3: masks are resized to this side before the memory encoder's mask downsampler
    mask_interpol_size: Optional[int] = None
    # EdgeTAM perceiver
    perceiver_latents: int = 256
    perceiver_latents_2d: int = 256
    perceiver_depth: int = 2
    # video-predictor semantics: EdgeTAM's older predictor makes every prompted frame a
    # conditioning frame for all objects
    prompted_frames_condition_all: bool = False

    @property
    def feat_size(self) -> int:
        return self.image_size // self.backbone_stride


SAM21 = MemoryConfig()
SAM2 = replace(SAM21, family="sam2.0", no_obj_embed_spatial=False, proj_tpos_enc_in_obj_ptrs=False,
               use_signed_tpos_enc_to_obj_ptrs=False)
EFFICIENTTAM = replace(SAM21, family="efficienttam", no_obj_embed_spatial=False, use_high_res_features_in_sam=False,
                       add_tpos_enc_to_obj_ptrs=False, proj_tpos_enc_in_obj_ptrs=False,
                       use_signed_tpos_enc_to_obj_ptrs=False)
EFFICIENTTAM_1 = replace(EFFICIENTTAM, cross_attention="pooled_v1")
EFFICIENTTAM_2 = replace(EFFICIENTTAM, cross_attention="pooled_v2")
# SAM 3's tracker (official ``build_tracker``): SAM 2.1's memory on the 1008 px / stride-14 grid
# (72 x 72), at most 4 conditioning frames in the memory attention
SAM3 = replace(SAM21, family="sam3", image_size=1008, backbone_stride=14, max_cond_frames_in_attn=4,
               mask_interpol_size=1152)
EDGETAM = replace(SAM21, family="edgetam", attention_layers=2, cross_attention="rope_v2", no_obj_embed_spatial=False,
                  add_tpos_enc_to_obj_ptrs=False, proj_tpos_enc_in_obj_ptrs=False,
                  use_signed_tpos_enc_to_obj_ptrs=False, prompted_frames_condition_all=True)


def build_memory_attention(cfg: MemoryConfig) -> MemoryAttention:
    """Memory attention with the family's cross-attention (official key layout)."""
    fs = cfg.feat_size
    layers = []
    for _ in range(cfg.attention_layers):
        self_attn = RoPEAttention(cfg.hidden_dim, 1)
        if cfg.cross_attention == "rope_v2":
            cross = RoPEAttentionV2(cfg.hidden_dim, 1, kv_in_dim=cfg.mem_dim, q_sizes=(fs, fs),
                                    k_sizes=(int(cfg.perceiver_latents_2d ** 0.5),) * 2)
        else:
            pool = {"rope": None, "pooled_v1": "v1", "pooled_v2": "v2"}[cfg.cross_attention]
            cross = RoPEAttention(cfg.hidden_dim, 1, kv_in_dim=cfg.mem_dim, rope_k_repeat=True, pool=pool)
        layers.append(MemoryAttentionLayer(self_attn, cross, cfg.hidden_dim, 2048))
    return MemoryAttention(nn.ModuleList(layers), cfg.hidden_dim, pos_enc_at_input=True)


def attach_memory(model: nn.Module, cfg: MemoryConfig) -> nn.Module:
    """Add the memory modules and parameters of ``cfg`` to ``model`` (official names); sets
    ``model.memory_config = cfg``. Returns ``model``."""
    c, m = cfg.hidden_dim, cfg.mem_dim
    model.memory_config = cfg
    model.memory_attention = build_memory_attention(cfg)
    model.memory_encoder = MemoryEncoder(c, m, mask_interpol_size=cfg.mask_interpol_size)
    model.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, m))
    model.no_mem_embed = nn.Parameter(torch.zeros(1, 1, c))
    model.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, c))
    if cfg.use_obj_ptrs_in_encoder:
        model.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        model.obj_ptr_proj = MLP(c, c, c, 3) if cfg.use_mlp_for_obj_ptr_proj else nn.Linear(c, c)
        if cfg.pred_obj_scores:
            model.no_obj_ptr = nn.Parameter(torch.zeros(1, c))
    else:
        model.obj_ptr_proj = nn.Identity()
    model.obj_ptr_tpos_proj = nn.Linear(c, m) if cfg.proj_tpos_enc_in_obj_ptrs else nn.Identity()
    if cfg.no_obj_embed_spatial:
        model.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, m))
    else:
        model.no_obj_embed_spatial = None
    if cfg.cross_attention == "rope_v2":
        from .perceiver import PerceiverResampler

        model.spatial_perceiver = PerceiverResampler(dim=m, depth=cfg.perceiver_depth, dim_head=m,
                                                     num_latents=cfg.perceiver_latents,
                                                     num_latents_2d=cfg.perceiver_latents_2d)
    return model
