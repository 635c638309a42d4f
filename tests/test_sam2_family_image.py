"""The image path of every SAM 2-family model with goldens (SAM 2.1 Hiera-T, EdgeTAM,
EfficientTAM-Ti) against the goldens of its official code: preprocessing, the embedding and
high-resolution features, the decoder on the golden embedding for every prompt set, and the
ImagePredictor end to end. One set of checks, run for each family through the ``sam2_family``
fixture of conftest.py; family-specific tests stay in test_sam2_image.py, test_edgetam_image.py
and test_efficienttam_image.py. EdgeTAM's and EfficientTAM's code is not on PyPI, so for them
the goldens are the only numeric reference; SAM 2.1 also has a live oracle test.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

SETS = "abcde"
FAMILIES = ("sam2.1_hiera_t", "edgetam", "efficienttam_ti")

pytestmark = pytest.mark.parametrize("sam2_family", FAMILIES, indirect=True, scope="module")


# ----------------------------------------------------------------------------- checks
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


# ----------------------------------------------------------------------------- tests
def test_preprocessing_matches(sam2_family):
    check_preprocess(sam2_family.model, sam2_family.g, sam2_family.meta)


def test_embedding_and_high_res_match(sam2_family):
    c = sam2_family
    check_embedding(c.features0, c.g, c.meta, c.report)


@pytest.mark.parametrize("s", SETS)
def test_decoder_matches_image0(sam2_family, s):
    c = sam2_family
    check_decoder_image0(c.model, c.features0, c.g, c.meta, s, c.report)


def test_end_to_end_image1(sam2_family):
    c = sam2_family
    check_end_to_end_image1(c.model, c.g, c.meta, c.report)
