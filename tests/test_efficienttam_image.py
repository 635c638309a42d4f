"""EfficientTAM image path specifics (ViT trunk + ViTDet neck + SAM 2-style heads without
high-res features): layout and the 512 x 512 variant's geometry. Its golden checks are in
test_sam2_family_image.py."""
from __future__ import annotations

import torch

NAME = "efficienttam_ti"  # the sam2_family fixture (conftest.py) loads this model


def test_model_layout(sam2_family):
    from samkit.backbones.vitdet import ViT
    from samkit.models.sam2 import Sam2Model

    model = sam2_family.model
    assert isinstance(model, Sam2Model) and isinstance(model.image_encoder.trunk, ViT)
    assert not model.use_high_res_features and model.num_feature_levels == 1
    assert not hasattr(model.mask_decoder, "conv_s0")
    windows = [b.window_size for b in model.image_encoder.trunk.blocks]
    assert windows == [14, 14, 0, 14, 14, 0, 14, 14, 0, 14, 14, 0]


def test_512_variant_geometry():
    """efficienttam_*_512: 512 frame, 32 x 32 embedding (pos embed resized from 14 x 14),
    128 x 128 low-res masks; same weights layout as the 1024 model."""
    from samkit.models.efficienttam import build_efficienttam_ti_512

    torch.manual_seed(0)
    m = build_efficienttam_ti_512().eval()
    assert m.image_size == 512 and m.prompt_encoder.image_embedding_size == (32, 32)
    assert m.memory_config is None or m.memory_config.image_size == 512
    img = (torch.rand(100, 140, 3) * 255).to(torch.uint8).numpy()
    x, t = m.preprocess(img)
    assert x.shape == (1, 3, 512, 512)
    with torch.inference_mode():
        f = m.encode(x)
        out = m.decode(f, torch.tensor([[[256.0, 200.0]]]), torch.tensor([[1]]), None, None, True)
        full = m.postprocess(out.low_res, t)
    assert f.embed.shape == (1, 256, 32, 32) and f.high_res is None
    assert out.low_res.shape == (1, 3, 128, 128) and out.iou.shape == (1, 3)
    assert full.shape == (1, 3, 100, 140)
