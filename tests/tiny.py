"""Tiny randomly initialised models for fast tests of code paths (not of numbers)."""
from __future__ import annotations

import torch


def tiny_sam(seed: int = 0, image_size: int = 128):
    """A SamModel with a 1-block ViT on a ``image_size`` frame (embedding grid image_size/16)."""
    from samkit.backbones.vit_sam import ImageEncoderViT
    from samkit.heads import MaskDecoder, PromptEncoder, TwoWayTransformer
    from samkit.models.sam import SamModel

    torch.manual_seed(seed)
    grid = image_size // 16
    enc = ImageEncoderViT(img_size=image_size, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_chans=32,
                          window_size=4, global_attn_indexes=(1,))
    pe = PromptEncoder(embed_dim=32, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size),
                       mask_in_chans=16)
    md = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=2, embedding_dim=32, num_heads=2,
                                                                       mlp_dim=64), iou_head_hidden_dim=32)
    return SamModel(enc, pe, md, image_size=image_size).eval()
