"""SAM 2.1 (Hiera-T) image path against the goldens of the official sam2 1.1.0 code, and
against the live official package on new random prompts.

The ``check_*`` helpers are shared with tests/test_edgetam_image.py and
tests/test_efficienttam_image.py (same predictor semantics, same golden layout).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import golden

SETS = "abcde"
NAME = "sam2.1_hiera_t"


# ----------------------------------------------------------------------------- shared helpers
def load_family_model(name: str, synth_checkpoint):
    """samkit model loaded through the registry from an official-layout synthesized file."""
    from samkit.registry import load_model

    return load_model(name, checkpoint=synth_checkpoint(name))


def atol(meta, key: str, floor: float = 1e-5) -> float:
    return max(meta["tensors"][key]["suggested_atol"], floor)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def prompts_np(g, key: str):
    pc, pl, box = g.get(f"{key}.point_coords"), g.get(f"{key}.point_labels"), g.get(f"{key}.box")
    return (None if pc is None else pc.numpy(), None if pl is None else pl.numpy(),
            None if box is None else box.numpy().reshape(4))


def mask_input_np(g, image: int, s: str):
    """Set e's mask input: stored for image 1; for image 0 the best low-res mask of set a."""
    if s != "e":
        return None
    if image == 1:
        return g["p1e.mask_input"].numpy().reshape(1, 256, 256)
    best = int(torch.argmax(g["p0a.iou"]))
    return g["p0a.lowres_logits"][best : best + 1].numpy()


def frame_prompts(g, key: str, hw, frame: int = 1024):
    """Official SAM2Transforms: float32 ``x / W * frame``; boxes the same. B = 1."""
    h, w = hw
    scale = torch.tensor([w, h], dtype=torch.float32)
    pc, pl, box = g.get(f"{key}.point_coords"), g.get(f"{key}.point_labels"), g.get(f"{key}.box")
    pts = None if pc is None else (pc.float() / scale * frame)[None]
    labels = None if pl is None else pl.to(torch.int64)[None]
    boxes = None if box is None else (box.float().reshape(2, 2) / scale * frame).reshape(1, 4)
    return pts, labels, boxes


def check_preprocess(model, g, meta):
    for i in (0, 1):
        x, t = model.preprocess(g[f"image_{i}"].numpy())
        assert x.shape == (1, 3, 1024, 1024)
        assert t.input_size == (1024, 1024) and t.original_size == tuple(g[f"image_{i}"].shape[:2])
        assert maxdiff(x[..., ::8, ::8], g[f"input_{i}_s8"]) <= atol(meta, f"input_{i}_s8")
        stats = meta["tensors"][f"input_{i}_s8"]["full_tensor_stats"]
        assert abs(x.double().sum().item() - stats["sum"]) < 1.0


def check_embedding(features, g, meta, report: dict):
    d = maxdiff(features.embed, g["embed_0"])
    report["embed_0"] = d
    assert d <= atol(meta, "embed_0"), d
    if "high_res_feat0_0_s2" in g:
        assert features.high_res is not None and len(features.high_res) == 2
        for j, ours in enumerate(features.high_res):
            key = f"high_res_feat{j}_0_s2"
            assert tuple(ours.shape[-2:]) == (256 // 2 ** j, 256 // 2 ** j)
            d = maxdiff(ours[..., ::2, ::2], g[key])
            report[key] = d
            assert d <= atol(meta, key), (key, d)
    else:
        assert features.high_res is None


def check_decoder_image0(model, features, g, meta, s: str, report: dict):
    """Decoder-only on the golden embedding (+ our high-res features) for prompt set ``s``."""
    from samkit.models.base import ImageFeatures, ImageTransform

    key = f"p0{s}"
    hw = tuple(g["image_0"].shape[:2])
    pts, labels, boxes = frame_prompts(g, key, hw)
    mi = mask_input_np(g, 0, s)
    mi = None if mi is None else torch.from_numpy(mi)[None]
    feats = ImageFeatures(g["embed_0"], features.high_res)
    mm = meta["tensors"][key]["multimask_output"]
    with torch.inference_mode():
        out = model.decode(feats, pts, labels, boxes, mi, mm)
        full = model.postprocess(out.low_res, ImageTransform(hw, (1024, 1024), 1024))[0]
    low = out.low_res[0].clamp(-32, 32)
    for field, ours in (("iou", out.iou[0]), ("lowres_logits", low), ("masks_logits", full)):
        ref = g[f"{key}.{field}"]
        assert ours.shape == ref.shape, (field, ours.shape, ref.shape)
        d = maxdiff(ours, ref)
        report[f"{key}.{field}"] = d
        assert d <= atol(meta, f"{key}.{field}"), (key, field, d)
    ref = g[f"{key}.masks_logits"].float()
    confident = ref.abs() > atol(meta, f"{key}.masks_logits")
    assert torch.equal((full > 0)[confident], (ref > 0)[confident])
    assert out.object_score is not None and out.object_score.shape == (1, 1)


def check_end_to_end_image1(model, g, meta, report: dict):
    """ImagePredictor on image 1: low-res logits, IoU and the packed binary masks."""
    from samkit import ImagePredictor

    pred = ImagePredictor(model).set_image(g["image_1"].numpy())
    for s in SETS:
        key = f"p1{s}"
        pts, labels, box = prompts_np(g, key)
        mm = meta["tensors"][key]["multimask_output"]
        out = pred.predict(points=pts, labels=labels, box=box, mask_input=mask_input_np(g, 1, s), multimask=mm)
        low = torch.from_numpy(out.low_res_logits)
        d_low = maxdiff(low.clamp(-32, 32), g[f"{key}.lowres_logits"])
        d_iou = float(np.abs(out.scores - g[f"{key}.iou"].numpy()).max())
        report[f"{key}.lowres_logits"], report[f"{key}.iou"] = d_low, d_iou
        assert d_low <= atol(meta, f"{key}.lowres_logits", 2e-3), (key, d_low)
        assert d_iou <= atol(meta, f"{key}.iou", 1e-5), (key, d_iou)
        c, h, w = out.masks.shape
        assert (h, w) == tuple(g["image_1"].shape[:2])
        ref = np.unpackbits(g[f"{key}.masks_packed"].numpy())[: c * h * w].reshape(c, h, w).astype(bool)
        logits = model.postprocess(low[None], pred._require().transform)[0].numpy()
        confident = np.abs(logits) > 1e-2
        assert np.array_equal(out.masks[confident], ref[confident]), key
        report[f"{key}.masks_disagree"] = int((out.masks != ref).sum())


# ----------------------------------------------------------------------------- SAM 2.1 tiny
@pytest.fixture(scope="module")
def gold():
    return golden(NAME)


@pytest.fixture(scope="module")
def model(synth_checkpoint):
    torch.manual_seed(0)
    return load_family_model(NAME, synth_checkpoint)


@pytest.fixture(scope="module")
def features0(model, gold):
    x, _ = model.preprocess(gold[0]["image_0"].numpy())
    with torch.inference_mode():
        return model.encode(x)


@pytest.fixture(scope="module")
def report():
    """Max-abs differences per golden tensor (printed with -s for the parity summary)."""
    r: dict = {}
    yield r
    print(f"\n{NAME} max-abs differences:", {k: f"{v:.2e}" if isinstance(v, float) else v for k, v in r.items()})


def test_model_layout(model):
    from samkit.models.sam2 import Sam2Model

    assert isinstance(model, Sam2Model) and not model.training
    assert model.image_size == 1024 and model.use_high_res_features
    assert model.default_selection == "native"
    assert model.image_encoder.trunk.channel_list == [768, 384, 192, 96]
    assert model.mask_decoder.dynamic_multimask_via_stability
    assert model.no_mem_embed.shape == (1, 1, 256)


def test_preprocessing_matches(model, gold):
    check_preprocess(model, *gold)


def test_embedding_and_high_res_match(features0, gold, report):
    check_embedding(features0, *gold, report)


@pytest.mark.parametrize("s", SETS)
def test_decoder_matches_image0(model, features0, gold, s, report):
    check_decoder_image0(model, features0, *gold, s, report)


def test_end_to_end_image1(model, gold, report):
    check_end_to_end_image1(model, *gold, report)


def test_backbone_hooks_for_video(model):
    """forward_image / prepare_backbone_features give what the memory path needs (small input,
    a batch of two checked against the second image alone)."""
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


def test_forward_sam_heads_matches_decode(model, features0):
    """The video-side head call on the embedding equals the image-side decode (object present)."""
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
def official(gold):
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
def test_random_prompts_match_official(model, official):
    """New image and prompts: embedding, high-res features, every output of predict() and a
    batch of boxes in one call."""
    from samkit import ImagePredictor

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


def test_sam2_0_checkpoint_loads_and_decodes_like_2_1(model, features0, gold, tmp_path):
    """sam2_hiera_t (2024-07 release): same image path; its file lacks the two SAM 2.1-only
    memory entries. Loaded through the registry from such a file, it decodes identically."""
    from samkit.registry import load_model

    from parity import synth_state_dict

    sd = {k: v for k, v in synth_state_dict(NAME).items()
          if not k.startswith(("no_obj_embed_spatial", "obj_ptr_tpos_proj."))}
    path = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    old = load_model("sam2_hiera_t", checkpoint=path)
    assert old.memory_config.family == "sam2.0" and old.no_obj_embed_spatial is None
    g, meta = gold
    pts, labels, boxes = frame_prompts(g, "p0d", tuple(g["image_0"].shape[:2]))
    with torch.inference_mode():
        a = old.decode(features0, pts, labels, boxes, None, False)
        b = model.decode(features0, pts, labels, boxes, None, False)
    assert torch.equal(a.low_res, b.low_res) and torch.equal(a.iou, b.iou)
