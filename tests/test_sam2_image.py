"""SAM 2.1 (Hiera-T) specifics: the model layout, the hooks the video path uses, the SAM 2.0
checkpoint, and the live official sam2 package on new random prompts. The golden checks of
the image path, shared with EdgeTAM and EfficientTAM, are in test_sam2_family_image.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from test_sam2_family_image import frame_prompts, maxdiff

NAME = "sam2.1_hiera_t"  # the sam2_family fixture (conftest.py) loads this model


def test_model_layout(sam2_family):
    from samkit.models.sam2 import Sam2Model

    model = sam2_family.model
    assert isinstance(model, Sam2Model) and not model.training
    assert model.image_size == 1024 and model.use_high_res_features
    assert model.default_selection == "native"
    assert model.image_encoder.trunk.channel_list == [768, 384, 192, 96]
    assert model.mask_decoder.dynamic_multimask_via_stability
    assert model.no_mem_embed.shape == (1, 1, 256)


def test_backbone_hooks_for_video(sam2_family):
    """forward_image / prepare_backbone_features give what the memory path needs (small input,
    a batch of two checked against the second image alone)."""
    model = sam2_family.model
    x2 = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = model.forward_image(x2)
        _, feats, pos, sizes = model.prepare_backbone_features(out)
        single = model.image_encoder(x2[1:])
        s0 = model.mask_decoder.conv_s0(single["backbone_fpn"][0])
        s1 = model.mask_decoder.conv_s1(single["backbone_fpn"][1])
    assert [tuple(f.shape) for f in out["backbone_fpn"]] == [(2, 32, 64, 64), (2, 64, 32, 32), (2, 256, 16, 16)]
    assert sizes == [(64, 64), (32, 32), (16, 16)]
    assert [tuple(f.shape) for f in feats] == [(4096, 2, 32), (1024, 2, 64), (256, 2, 256)]
    assert [tuple(p.shape) for p in pos] == [(4096, 2, 256), (1024, 2, 256), (256, 2, 256)]
    assert torch.equal(out["vision_features"], out["backbone_fpn"][-1])
    ours = [s0, s1, single["backbone_fpn"][2]] + list(single["vision_pos_enc"])
    for a, b in zip(out["backbone_fpn"] + out["vision_pos_enc"], ours):
        assert torch.allclose(a[1:], b, atol=1e-4)  # batched encoding = one image at a time


def test_forward_sam_heads_matches_decode(sam2_family):
    """The video-side head call on the embedding equals the image-side decode (object present)."""
    model, features0 = sam2_family.model, sam2_family.features0
    pts = torch.tensor([[[300.0, 400.0]]])
    lab = torch.tensor([[1]], dtype=torch.int32)
    with torch.inference_mode():
        dec = model.decode(features0, pts, lab, None, None, True)
        low_multi, high_multi, ious, low, high, ptr, obj = model.forward_sam_heads(
            features0.embed, {"point_coords": pts, "point_labels": lab}, None, list(features0.high_res), True)
    assert torch.allclose(obj, dec.object_score)
    assert obj.item() > 0
    assert torch.allclose(low_multi, dec.low_res, atol=1e-5) and torch.allclose(ious, dec.iou)
    assert high_multi.shape == (1, 3, 1024, 1024) and low.shape == (1, 1, 256, 256)
    assert torch.equal(low[0, 0], low_multi[0, int(ious.argmax())])
    assert ptr.shape == (1, 256)


# ----------------------------------------------------------------------------- live oracle
@pytest.fixture(scope="module")
def official():
    """The official sam2 1.1.0 SAM2ImagePredictor with the same synthesized weights."""
    from oracle_shims import import_oracle

    from parity import synth_state_dict

    build_sam = import_oracle("sam2.build_sam")
    predictor_mod = import_oracle("sam2.sam2_image_predictor")
    torch.manual_seed(0)
    base = build_sam.build_sam2(f"configs/sam2.1/{NAME}.yaml", ckpt_path=None, device="cpu", mode="eval")
    base.load_state_dict(synth_state_dict(NAME), strict=True)
    base.eval()
    return predictor_mod.SAM2ImagePredictor(base)


@pytest.mark.oracle
@pytest.mark.slow
def test_random_prompts_match_official(sam2_family, official):
    """New image and prompts: embedding, high-res features, every output of predict() and a
    batch of boxes in one call."""
    from samkit import ImagePredictor

    model = sam2_family.model

    rng = np.random.default_rng(7)
    h, w = 150, 210
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) * 3) % 256], -1).astype(np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    ours = ImagePredictor(model).set_image(img)
    with torch.inference_mode():
        official.set_image(img)
    assert maxdiff(ours.features.embed, official._features["image_embed"]) <= 4e-4
    for a, b in zip(ours.features.high_res, official._features["high_res_feats"]):
        assert maxdiff(a, b) <= 1e-4
    for trial in range(8):
        n = int(rng.integers(1, 4))
        pts = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], -1).astype(np.float32)
        labels = rng.integers(0, 2, n).astype(np.int32)
        x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
        box = np.array([x0, y0, x0 + rng.uniform(10, w / 2), y0 + rng.uniform(10, h / 2)], np.float32)
        use_pts, use_box = trial % 3 != 1, trial % 3 != 0
        mm = bool(trial % 2)
        kw = dict(point_coords=pts if use_pts else None, point_labels=labels if use_pts else None,
                  box=box if use_box else None)
        with torch.inference_mode():
            ref_masks, ref_iou, ref_low = official.predict(**kw, multimask_output=mm, return_logits=True)
        out = ours.predict(points=kw["point_coords"], labels=kw["point_labels"], box=kw["box"], multimask=mm)
        assert out.low_res_logits.shape == ref_low.shape
        assert np.abs(out.low_res_logits - ref_low).max() <= 2e-4, trial
        assert np.abs(out.scores - ref_iou).max() <= 1e-5, trial
        confident = np.abs(ref_masks) > 1e-3
        assert np.array_equal(out.masks[confident], (ref_masks > 0)[confident]), trial
    # several boxes in one call (the official repeat_image path)
    boxes = np.array([[10, 10, 60, 50], [30, 20, 200, 140], [0, 0, 209, 149]], np.float32)
    with torch.inference_mode():
        _, ref_iou, ref_low = official.predict(box=boxes, multimask_output=False, return_logits=True)
    got = ours.predict_batch(boxes=boxes, multimask=False)
    assert len(got) == 3
    for i, m in enumerate(got):
        assert np.abs(m.low_res_logits - ref_low[i]).max() <= 2e-4, i
        assert np.abs(m.scores - ref_iou[i]).max() <= 1e-5, i


def test_sam2_0_checkpoint_loads_and_decodes_like_2_1(sam2_family, tmp_path):
    """sam2_hiera_t (2024-07 release): same image path; its file lacks the two SAM 2.1-only
    memory entries. Loaded through the registry from such a file, it decodes identically."""
    from samkit.registry import load_model

    from parity import synth_state_dict

    model, features0 = sam2_family.model, sam2_family.features0

    sd = {k: v for k, v in synth_state_dict(NAME).items()
          if not k.startswith(("no_obj_embed_spatial", "obj_ptr_tpos_proj."))}
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    old = load_model("sam2_hiera_t", checkpoint=path)
    assert old.memory_config.family == "sam2.0" and old.no_obj_embed_spatial is None
    g = sam2_family.g
    pts, labels, boxes = frame_prompts(g, "p0d", tuple(g["image_0"].shape[:2]))
    with torch.inference_mode():
        a = old.decode(features0, pts, labels, boxes, None, False)
        b = model.decode(features0, pts, labels, boxes, None, False)
    assert torch.equal(a.low_res, b.low_res) and torch.equal(a.iou, b.iou)
