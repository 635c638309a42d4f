"""Test doubles: reduced configurations of every image family, built from the real encoder and
head classes (random weights), for the ONNX export tests (tests/test_export.py).

``tiny_family(name)`` returns an eval-mode model of the family's class on a small frame
(64 or 128 pixels), with the family's preprocessing, prompt and decoder options:

  sam            ViT (2 blocks, global block 1) + SAM heads           SamModel
  mobile_sam     TinyViT (4 tiny stages) + SAM heads                  MobileSamModel
  edge_sam       RepViT with fusion neck + SAM heads (4 tokens)        EdgeSamModel
  efficient_sam  EfficientSAM ViT (1 block) + EfficientSAM heads       EfficientSamModel
  sam2           Hiera + FPN neck, high-res features, SAM 2 decoder    Sam2Model
  edgetam        timm-layout RepViT trunk + FPN neck                   Sam2Model
  efficienttam   ViT + ViTDet neck, no high-res features               Sam2Model
"""
from __future__ import annotations

import torch
from torch import nn

DIM = 32
FAMILIES = ("sam", "mobile_sam", "edge_sam", "efficient_sam", "sam2", "edgetam", "efficienttam")


def _sam_heads(grid: int, size: int):
    from samkit.heads import MaskDecoder, PromptEncoder, TwoWayTransformer

    pe = PromptEncoder(embed_dim=DIM, image_embedding_size=(grid, grid), input_image_size=(size, size),
                       mask_in_chans=16)
    md = MaskDecoder(transformer_dim=DIM, transformer=TwoWayTransformer(depth=2, embedding_dim=DIM, num_heads=2,
                                                                        mlp_dim=64), iou_head_hidden_dim=DIM)
    return pe, md


def _sam2(encoder: nn.Module, size: int, high_res: bool):
    from samkit.models.sam2 import Sam2Model, sam2_heads

    return Sam2Model(encoder, image_size=size, embed_dim=DIM, use_high_res_features=high_res,
                     heads=sam2_heads(DIM, size, 16, high_res))


def _build(name: str):
    from samkit.backbones.fpn_neck import FpnNeck, ImageEncoder

    if name == "sam":
        from tiny import tiny_sam

        return tiny_sam(seed=0, image_size=128)
    if name == "mobile_sam":
        from samkit.backbones.tiny_vit import TinyViT
        from samkit.models.mobile_sam import MobileSamModel

        enc = TinyViT(embed_dims=(16, 32, 40, 48), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2),
                      window_sizes=(7, 7, 14, 7), out_chans=DIM)
        return MobileSamModel(enc, *_sam_heads(8, 128), image_size=128)
    if name == "edge_sam":
        from samkit.backbones.rep_vit import RepViT
        from samkit.models.edge_sam import EdgeSamModel

        cfgs = ((3, 2, 16, 1, 0, 1), (3, 2, 32, 0, 0, 2), (3, 2, 32, 1, 1, 1), (3, 2, 48, 0, 1, 2),
                (3, 2, 64, 1, 1, 2))
        return EdgeSamModel(RepViT(cfgs, out_chans=DIM), *_sam_heads(8, 128), image_size=128)
    if name == "efficient_sam":
        from samkit.backbones.vit_efficient_sam import EfficientSamViT
        from samkit.heads import MaskDecoder, PromptEncoder, TwoWayTransformer
        from samkit.models.efficient_sam import EfficientSamModel

        enc = EfficientSamViT(dim=32, num_heads=2, depth=1, img_size=64, out_chans=DIM)
        pe = PromptEncoder(embed_dim=DIM, image_embedding_size=(4, 4), input_image_size=(64, 64),
                           with_mask_input=False, pad_keeps_pe=True, pad_points=False)
        tr = TwoWayTransformer(depth=2, embedding_dim=DIM, num_heads=2, mlp_dim=64, activation=nn.GELU,
                               self_attn_mode="efficient_sam")
        md = MaskDecoder(transformer_dim=DIM, transformer=tr, activation=nn.GELU, iou_head_hidden_dim=DIM,
                         hypernet_activation=nn.GELU, upscaling_norm="group")
        return EfficientSamModel(enc, pe, md, image_size=64)
    if name == "sam2":
        from samkit.backbones.hiera import Hiera

        trunk = Hiera(embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
                      window_pos_embed_bkg_spatial_size=(7, 7))
        neck = FpnNeck(DIM, trunk.channel_list, fpn_top_down_levels=(2, 3), fpn_interp_model="nearest")
        return _sam2(ImageEncoder(trunk, neck, scalp=1), 128, True)
    if name == "edgetam":
        from samkit.backbones.rep_vit import RepViTTrunk, timm_layout

        trunk = RepViTTrunk(*timm_layout((8, 16, 24, 32), (1, 1, 2, 1)))
        neck = FpnNeck(DIM, trunk.channel_list, fpn_top_down_levels=(2, 3), fpn_interp_model="nearest")
        return _sam2(ImageEncoder(trunk, neck, scalp=1), 128, True)
    if name == "efficienttam":
        from samkit.backbones.vitdet import ViT, ViTDetNeck

        trunk = ViT(embed_dim=32, depth=2, num_heads=2, window_size=2, window_block_indexes=(0,))
        return _sam2(ImageEncoder(trunk, ViTDetNeck(DIM, (32,), neck_norm="LN"), scalp=0), 64, False)
    raise KeyError(name)


def tiny_family(name: str, seed: int = 0) -> nn.Module:
    """A reduced, deterministic random model of family ``name`` (see the module docstring), eval mode."""
    torch.manual_seed(seed)
    model = _build(name)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # visible random values for the zero-initialised tokens and embeddings
        for pname, p in model.named_parameters():
            if "no_mem_embed" in pname or "pos_embed" in pname or "not_a_point" in pname:
                p.normal_(0.0, 0.02)
    return model.eval()


# ----------------------------------------------------------------------------- video
VIDEO_FAMILIES = ("sam2", "edgetam", "efficienttam", "efficienttam_1", "efficienttam_2")
_MEMORY = ("memory_attention", "memory_encoder", "maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "obj_ptr_proj",
           "obj_ptr_tpos_proj", "mask_downsample", "no_obj_ptr", "no_obj_embed_spatial", "spatial_perceiver")


def _memory_config(family: str, size: int):
    from dataclasses import replace

    from samkit.memory import config

    base = {"sam2": config.SAM21, "edgetam": config.EDGETAM, "efficienttam": config.EFFICIENTTAM,
            "efficienttam_1": config.EFFICIENTTAM_1, "efficienttam_2": config.EFFICIENTTAM_2}[family]
    return replace(base, hidden_dim=DIM, mem_dim=DIM // 2, image_size=size, attention_layers=2,
                   perceiver_latents=8, perceiver_latents_2d=16)  # EdgeTAM: 4 x 4 windows of 2 x 2 tokens


def tiny_video_family(name: str, seed: int = 0, score_bias: float = 2.0) -> nn.Module:
    """A reduced video model of family ``name`` (``VIDEO_FAMILIES``): the image family's reduced
    encoder and heads (``tiny_family``) plus its video memory at 32 / 16 channels (2 attention
    layers; EdgeTAM's perceiver with 8 + 16 latents). Memory weights are drawn visibly (no zero
    tokens, no identity fuser); ``score_bias`` is the object-score head's output bias (> 0:
    objects mostly present). Eval mode."""
    from samkit.memory import attach_memory

    model = tiny_family(name.split("_")[0] if name.startswith("efficienttam") else name, seed)
    cfg = _memory_config(name, int(model.image_size))
    del model.no_mem_embed  # attach_memory adds it again, with the memory modules
    torch.manual_seed(seed + 2)
    attach_memory(model, cfg)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if not pname.startswith(_MEMORY):
                continue
            if p.ndim >= 2:
                nn.init.normal_(p, 0.0, 1.0 / max(1, p[0].numel()) ** 0.5)
            elif pname.endswith("bias"):
                p.normal_(0.0, 0.02)
            elif pname.endswith(("weight", "gamma")):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.5)
        model.mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(score_bias)
    return model.eval()
