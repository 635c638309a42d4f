"""EdgeTAM image path specifics (timm RepViT-M1 trunk + FPN neck + SAM 2.1 heads): layout and
trunk strides. Its golden checks are in test_sam2_family_image.py."""
from __future__ import annotations

import torch

NAME = "edgetam"  # the sam2_family fixture (conftest.py) loads this model


def test_model_layout(sam2_family):
    from samkit.backbones.rep_vit import RepViTBlock, RepViTTrunk
    from samkit.models.sam2 import Sam2Model

    model = sam2_family.model

    trunk = model.image_encoder.trunk
    assert isinstance(model, Sam2Model) and isinstance(trunk, RepViTTrunk)
    assert trunk.channel_list == [384, 192, 96, 48]
    assert model.use_high_res_features and model.image_encoder.scalp == 1
    assert model.memory_config is not None and model.memory_config.family == "edgetam"
    # timm's stage outputs: stem + 2 blocks, + downsample (pre_block, stride-2 block) + 2, ...
    assert trunk.out_indices == (2, 6, 22, 26) and len(trunk.features) == 27
    # timm RepViT: squeeze-excite on every other block, starting with the first of each stage
    # (stages_2.blocks.0..3 are features.9..12)
    stage2 = trunk.features[9:13]
    assert all(isinstance(b, RepViTBlock) for b in stage2)
    assert [not isinstance(b.token_mixer[1], torch.nn.Identity) for b in stage2] == [True, False, True, False]


def test_trunk_strides(sam2_family):
    model = sam2_family.model
    x = torch.zeros(1, 3, 128, 128)
    with torch.inference_mode():
        feats = model.image_encoder.trunk(x)
    assert [tuple(f.shape) for f in feats] == [(1, 48, 32, 32), (1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4)]
