"""EdgeTAM image path (timm RepViT-M1 trunk + FPN neck + SAM 2.1 heads) against the goldens
of the official EdgeTAM code (its code is not on PyPI, so the goldens are the only numeric
reference)."""
from __future__ import annotations

import pytest
import torch

from parity import golden
from test_sam2_image import (SETS, check_decoder_image0, check_embedding, check_end_to_end_image1,
                             check_preprocess, load_family_model)

NAME = "edgetam"


@pytest.fixture(scope="module")
def gold():
    return golden(NAME)


@pytest.fixture(scope="module")
def model(synth_checkpoint):
    return load_family_model(NAME, synth_checkpoint)


@pytest.fixture(scope="module")
def features0(model, gold):
    x, _ = model.preprocess(gold[0]["image_0"].numpy())
    with torch.inference_mode():
        return model.encode(x)


@pytest.fixture(scope="module")
def report():
    r: dict = {}
    yield r
    print(f"\n{NAME} max-abs differences:", {k: f"{v:.2e}" if isinstance(v, float) else v for k, v in r.items()})


def test_model_layout(model):
    from samkit.backbones.rep_vit import RepViTBlock, RepViTTrunk
    from samkit.models.sam2 import Sam2Model

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


def test_trunk_strides(model):
    x = torch.zeros(1, 3, 128, 128)
    with torch.inference_mode():
        feats = model.image_encoder.trunk(x)
    assert [tuple(f.shape) for f in feats] == [(1, 48, 32, 32), (1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4)]


def test_preprocessing_matches(model, gold):
    check_preprocess(model, *gold)


def test_embedding_and_high_res_match(features0, gold, report):
    check_embedding(features0, *gold, report)


@pytest.mark.parametrize("s", SETS)
def test_decoder_matches_image0(model, features0, gold, s, report):
    check_decoder_image0(model, features0, *gold, s, report)


def test_end_to_end_image1(model, gold, report):
    check_end_to_end_image1(model, *gold, report)
