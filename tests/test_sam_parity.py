"""SAM ViT-B parity with the goldens made by the official segment-anything code, and
key/shape equality with the official ViT-L/H state dicts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import golden, manifest

SETS = "abcde"


@pytest.fixture(scope="module")
def gold():
    return golden("sam_vit_b")


@pytest.fixture(scope="module")
def predictor0(sam_vit_b, gold):
    from samkit import ImagePredictor

    return ImagePredictor(sam_vit_b).set_image(gold[0]["image_0"].numpy())


def _atol(meta, key, floor=1e-4):
    return max(meta["tensors"][key]["suggested_atol"], floor)


def _prompts(g, key, image_key="p0a"):
    pc, pl, box = g.get(f"{key}.point_coords"), g.get(f"{key}.point_labels"), g.get(f"{key}.box")
    return (None if pc is None else pc.numpy(), None if pl is None else pl.numpy(),
            None if box is None else box.numpy().reshape(4))


def _mask_input(g, image: int, s: str):
    if s != "e":
        return None
    if image == 1:
        return g["p1e.mask_input"].numpy()
    best = int(torch.argmax(g["p0a.iou"]))
    return g["p0a.lowres_logits"][best : best + 1].numpy()


def test_preprocessing_matches(sam_vit_b, gold):
    g, meta = gold
    x, t = sam_vit_b.preprocess(g["image_0"].numpy())
    assert x.shape == (1, 3, 1024, 1024)
    assert t.input_size == (684, 1024)  # int(267 * 1024 / 400 + 0.5)
    diff = (x[..., ::8, ::8] - g["input_0_s8"]).abs().max().item()
    assert diff <= meta["tensors"]["input_0_s8"]["suggested_atol"]
    assert abs(x.double().sum().item() - meta["tensors"]["input_0_s8"]["full_tensor_stats"]["sum"]) < 1.0


def test_embedding_matches(predictor0, gold):
    g, meta = gold
    diff = (predictor0.features.embed - g["embed_0"]).abs().max().item()
    assert diff <= _atol(meta, "embed_0"), diff


@pytest.mark.parametrize("s", SETS)
def test_decoder_matches_image0(predictor0, sam_vit_b, gold, s):
    g, meta = gold
    key = f"p0{s}"
    pts, labels, box = _prompts(g, key)
    mm = meta["tensors"][key]["multimask_output"]
    out = predictor0.predict(points=pts, labels=labels, box=box, mask_input=_mask_input(g, 0, s), multimask=mm)
    assert np.abs(out.scores - g[f"{key}.iou"].numpy()).max() <= _atol(meta, f"{key}.iou", 1e-5)
    low = torch.from_numpy(out.low_res_logits)
    assert (low - g[f"{key}.lowres_logits"].float()).abs().max().item() <= _atol(meta, f"{key}.lowres_logits")
    full = sam_vit_b.postprocess(low[None], predictor0._state.transform)[0]
    ref = g[f"{key}.masks_logits"].float()
    atol = _atol(meta, f"{key}.masks_logits")
    assert (full - ref).abs().max().item() <= atol
    confident = ref.abs() > atol
    assert torch.equal(torch.from_numpy(out.masks)[confident], (ref > 0)[confident])
    assert out.masks.shape == (ref.shape[0], 267, 400) and out.masks.dtype == bool


def test_end_to_end_image1(sam_vit_b, gold):
    from samkit import ImagePredictor

    g, meta = gold
    pred = ImagePredictor(sam_vit_b).set_image(g["image_1"].numpy())
    for s in SETS:
        key = f"p1{s}"
        pts, labels, box = _prompts(g, key)
        mm = meta["tensors"][key]["multimask_output"]
        out = pred.predict(points=pts, labels=labels, box=box, mask_input=_mask_input(g, 1, s), multimask=mm)
        ref_low = g[f"{key}.lowres_logits"].float()
        assert (torch.from_numpy(out.low_res_logits) - ref_low).abs().max().item() <= 2e-3, key
        assert np.abs(out.scores - g[f"{key}.iou"].numpy()).max() <= 1e-4, key
        c, h, w = out.masks.shape
        ref = np.unpackbits(g[f"{key}.masks_packed"].numpy())[: c * h * w].reshape(c, h, w).astype(bool)
        assert (h, w) == (320, 240)
        agree = (out.masks == ref).mean()
        assert agree >= 0.9999, (key, agree)


def test_predict_batch_equals_single(predictor0, gold):
    g, _ = gold
    boxes = np.array([[10, 20, 200, 180], [150, 60, 390, 250], [0, 0, 400, 267]], np.float32)
    pts = np.array([[[60, 90]], [[250, 139]], [[111, 83]]], np.float32)
    labels = np.ones((3, 1), np.int32)
    batch = predictor0.predict_batch(boxes=boxes, points=pts, labels=labels, multimask=False)
    assert len(batch) == 3
    for i, got in enumerate(batch):
        single = predictor0.predict(points=pts[i], labels=labels[i], box=boxes[i], multimask=False)
        assert np.allclose(got.low_res_logits, single.low_res_logits, atol=1e-4)
        assert np.allclose(got.scores, single.scores, atol=1e-5)


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_l", "sam_vit_h"])
def test_state_dict_equals_manifest(name):
    from samkit.checkpoint import remap
    from samkit.registry import build_model

    with torch.device("meta"):
        model = build_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = {k: shape for k, shape, _ in manifest(name)}
    meta_sd = {k: torch.empty(shape, device="meta") for k, shape in official.items()}
    assert list(remap(meta_sd, name)) == list(official)  # identity for SAM files
    assert ours == official
