"""Test double: a tiny random SAM 2-style video model (no weights needed), used by
tests/test_video_tracker.py and the streaming benchmark of benchmarks/bench_video.py.

``build_tiny_video_model(image_size=64, dim=32)``: a ``Sam2Model`` with a 3-level conv
"backbone" (strides 4, 8, 16, ``dim`` channels, sine positions), reduced prompt encoder /
mask decoder configured like SAM 2 (object scores, high-res features, dynamic multimask) and
the family's memory at ``dim`` / ``dim // 2`` channels. Frames are ``image_size`` x
``image_size`` in the model; any video size works.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from samkit.heads.mask_decoder import MaskDecoder
from samkit.heads.prompt_encoder import PromptEncoder
from samkit.heads.transformer import TwoWayTransformer
from samkit.memory.config import SAM21
from samkit.layers.position import sine_encoding_2d
from samkit.models.sam2 import Sam2Model


class TinyBackbone(nn.Module):
    """``B x 3 x S x S`` -> upstream ImageEncoder dict with levels at strides 4, 8, 16."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.dim = dim
        self.stem = nn.Conv2d(3, dim, kernel_size=4, stride=4)
        self.down1 = nn.Conv2d(dim, dim, kernel_size=2, stride=2)
        self.down2 = nn.Conv2d(dim, dim, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> dict:
        a = torch.tanh(self.stem(x))
        b = torch.tanh(self.down1(a))
        c = torch.tanh(self.down2(b))
        feats = [a, b, c]
        pos = [sine_encoding_2d(f.shape[-2], f.shape[-1], self.dim, f.device).expand(f.shape[0], -1, -1, -1)
               for f in feats]
        return {"backbone_fpn": feats, "vision_pos_enc": pos, "vision_features": c}


def tiny_video_model(image_size: int = 64, dim: int = 32, family_cfg=SAM21) -> Sam2Model:
    """Image encoder + heads + memory, attribute names as the real SAM 2 models."""
    grid = image_size // 16
    high_res = family_cfg.use_high_res_features_in_sam
    backbone = TinyBackbone(dim)
    prompt_encoder = PromptEncoder(dim, (grid, grid), (image_size, image_size), mask_in_chans=16)
    mask_decoder = MaskDecoder(
        transformer_dim=dim, transformer=TwoWayTransformer(depth=1, embedding_dim=dim, num_heads=2, mlp_dim=64),
        num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=dim, use_high_res_features=high_res,
        pred_obj_scores=True, pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
        iou_prediction_use_sigmoid=True, dynamic_multimask_via_stability=True)
    cfg = replace(family_cfg, hidden_dim=dim, mem_dim=dim // 2, image_size=image_size,
                  attention_layers=min(family_cfg.attention_layers, 2),
                  perceiver_latents=4, perceiver_latents_2d=4)  # 2x2 windows on the 4x4 grid
    return Sam2Model(backbone, image_size=image_size, embed_dim=dim, use_high_res_features=high_res,
                     memory_config=cfg, heads=(prompt_encoder, mask_decoder))


def build_tiny_video_model(image_size: int = 64, dim: int = 32, seed: int = 0, family_cfg=SAM21) -> Sam2Model:
    """Deterministic random tiny model in eval mode; the object-score head is biased so that
    objects count as present (as the parity weights do)."""
    torch.manual_seed(seed)
    model = tiny_video_model(image_size, dim, family_cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                nn.init.normal_(p, 0.0, 1.0 / max(1, p[0].numel()) ** 0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)
            else:
                p.normal_(1.0 if name.endswith("weight") or name.endswith("gamma") else 0.0, 0.1 if name.endswith("weight") else 0.02)
        model.mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    return model.eval()
