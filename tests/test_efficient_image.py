"""MobileSAM, EdgeSAM and EfficientSAM: parity with the goldens made by the official code,
checkpoint remaps against the official state-dict manifests, EdgeSAM's fuse() and 4-mask output,
EfficientSAM's prompt semantics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import golden, manifest

GOLDEN_MODELS = ["mobile_sam", "edge_sam", "efficient_sam_vitt"]
SETS = "abcde"


@pytest.fixture(scope="module")
def loaded(synth_checkpoint):
    """name -> model loaded through samkit's official-checkpoint path (read, remap, strict)."""
    import warnings

    from samkit.registry import load_model

    cache = {}

    def get(name):
        if name not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # EdgeSAM's non-commercial licence warning
                cache[name] = load_model(name, checkpoint=synth_checkpoint(name))
        return cache[name]

    return get


@pytest.fixture(scope="module")
def gold():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = golden(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def embed1(loaded, gold):
    """name -> (image-1 transform, our image-1 features)."""
    cache = {}

    def get(name):
        if name not in cache:
            model = loaded(name)
            x, t = model.preprocess(gold(name)[0]["image_1"].numpy())
            with torch.no_grad():
                cache[name] = (x, t, model.encode(x))
        return cache[name]

    return get


def _atol(meta, key, floor=0.0):
    return max(meta["tensors"][key]["suggested_atol"], floor)


def _decode(model, feats, t, g, key, mask_input=None, multimask=None):
    """Run one golden prompt set through ``decode`` + ``postprocess``."""
    pts = lab = box = None
    if f"{key}.point_coords" in g:
        pts = t.coords_to_frame(g[f"{key}.point_coords"].float())[None]
        lab = g[f"{key}.point_labels"][None]
    if f"{key}.box" in g:
        box = t.boxes_to_frame(g[f"{key}.box"].float())[None]
    with torch.no_grad():
        out = model.decode(feats, pts, lab, box, mask_input, multimask)
        full = model.postprocess(out.low_res, t)
    return out, full


def _sets(meta, image):
    return [s for s in SETS if f"p{image}{s}.iou" in meta["tensors"]]


# ----------------------------------------------------------------------------- manifests
@pytest.mark.parametrize("name,manifest_name", [
    ("mobile_sam", "mobile_sam"), ("edge_sam", "edge_sam"), ("edge_sam_3x", "edge_sam"),
    ("efficient_sam_vitt", "efficient_sam_vitt"), ("efficient_sam_vits", "efficient_sam_vits"),
])
def test_remapped_manifest_equals_state_dict(synth_checkpoint, name, manifest_name):
    """remap(official state dict) has exactly our keys and shapes and loads strictly."""
    from samkit.checkpoint import load_into, read_state_dict, remap
    from samkit.registry import build_model

    model = build_model(name)
    official = read_state_dict(synth_checkpoint(manifest_name))  # the synthesized official file
    assert [(k, list(v.shape)) for k, v in official.items()] == [(k, s) for k, s, _ in manifest(manifest_name)]
    before = dict(official)
    sd = remap(official, name)
    assert official.keys() == before.keys()  # the remap is pure
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in sd.items()} == ours
    load_into(model, official, name, strict=True)
    for k, v in sd.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_remap_efficient_sam_prompt_embeddings(synth_checkpoint):
    from samkit.checkpoint import read_state_dict
    from samkit.models.efficient_sam import remap_efficient_sam

    sd = read_state_dict(synth_checkpoint("efficient_sam_vitt"))
    out = remap_efficient_sam(sd)
    assert torch.equal(out["prompt_encoder.point_embeddings.0.weight"], torch.zeros(1, 256))
    assert torch.equal(out["prompt_encoder.point_embeddings.1.weight"], sd["prompt_encoder.point_embeddings.weight"])
    assert torch.equal(out["prompt_encoder.not_a_point_embed.weight"], sd["prompt_encoder.invalid_points.weight"])
    assert torch.equal(out["mask_decoder.iou_prediction_head.layers.2.weight"],
                       sd["mask_decoder.iou_prediction_head.fc.weight"])
    assert torch.equal(out["mask_decoder.output_upscaling.3.bias"],
                       sd["mask_decoder.final_output_upscaling_layers.1.0.bias"])


def test_remap_mobile_sam_drops_imagenet_head(synth_checkpoint):
    from samkit.checkpoint import read_state_dict
    from samkit.models.mobile_sam import remap_mobile_sam

    out = remap_mobile_sam(read_state_dict(synth_checkpoint("mobile_sam")))
    assert not [k for k in out if k.startswith(("image_encoder.head.", "image_encoder.norm_head."))]


# ----------------------------------------------------------------------------- goldens, image 0
@pytest.mark.parametrize("name", GOLDEN_MODELS)
@pytest.mark.parametrize("image", [0, 1])
def test_preprocessing_matches(loaded, gold, name, image):
    g, meta = gold(name)
    x, t = loaded(name).preprocess(g[f"image_{image}"].numpy())
    assert x.shape == (1, 3, 1024, 1024)
    key = f"input_{image}_s8"
    assert (x[..., ::8, ::8] - g[key]).abs().max().item() <= meta["tensors"][key]["suggested_atol"]


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_embedding_matches(loaded, gold, name):
    g, meta = gold(name)
    model = loaded(name)
    x, _ = model.preprocess(g["image_0"].numpy())
    with torch.no_grad():
        emb = model.encode(x).embed
    assert emb.shape == (1, 256, 64, 64)
    diff = (emb - g["embed_0"]).abs().max().item()
    assert diff <= _atol(meta, "embed_0"), diff


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_decoder_matches_image0(loaded, gold, name):
    """Decoder-only on the golden embedding, every prompt set: IoU, low-res and full-res logits."""
    from samkit.models.base import ImageFeatures

    g, meta = gold(name)
    model = loaded(name)
    _, t = model.preprocess(g["image_0"].numpy())
    feats = ImageFeatures(g["embed_0"])
    for s in _sets(meta, 0):
        key = f"p0{s}"
        mi = None
        if s == "e":
            mi = g["p0a.lowres_logits"][int(g["p0a.iou"].argmax())][None, None]
        out, full = _decode(model, feats, t, g, key, mi, meta["tensors"][key]["multimask_output"])
        assert (out.iou[0] - g[f"{key}.iou"]).abs().max().item() <= _atol(meta, f"{key}.iou"), key
        low_ref = g[f"{key}.lowres_logits"].float()
        assert out.low_res.shape[1:] == low_ref.shape
        assert (out.low_res[0] - low_ref).abs().max().item() <= _atol(meta, f"{key}.lowres_logits"), key
        ref = g[f"{key}.masks_logits"].float()
        atol = _atol(meta, f"{key}.masks_logits")
        assert (full[0] - ref).abs().max().item() <= atol, key
        confident = ref.abs() > atol
        assert torch.equal((full[0] > 0)[confident], (ref > 0)[confident]), key


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_end_to_end_image1(loaded, gold, embed1, name):
    g, meta = gold(name)
    model = loaded(name)
    _, t, feats = embed1(name)
    stats = meta["tensors"]["embed_1_stats"]
    assert abs(feats.embed.double().abs().sum().item() - stats["sum_abs"]) / stats["sum_abs"] < 1e-5
    assert abs(feats.embed.abs().max().item() - stats["absmax"]) < 1e-4
    best_a = None
    for s in _sets(meta, 1):
        key = f"p1{s}"
        mi = None
        if s == "e":  # our own best low-res mask of set a, as the official predictor was fed
            mi = best_a[None, None]
            assert (best_a - g["p1e.mask_input"][0]).abs().max().item() <= _atol(meta, "p1e.mask_input")
        out, full = _decode(model, feats, t, g, key, mi, meta["tensors"][key]["multimask_output"])
        if s == "a":
            best_a = out.low_res[0, int(out.iou[0].argmax())]
        assert (out.iou[0] - g[f"{key}.iou"]).abs().max().item() <= _atol(meta, f"{key}.iou", 1e-5), key
        ref_low = g[f"{key}.lowres_logits"].float()
        assert (out.low_res[0] - ref_low).abs().max().item() <= _atol(meta, f"{key}.lowres_logits"), key
        c, h, w = full.shape[1:]
        assert (h, w) == (320, 240)
        ref = np.unpackbits(g[f"{key}.masks_packed"].numpy())[: c * h * w].reshape(c, h, w).astype(bool)
        ours = (full[0] > 0).numpy()
        uncertain = (full[0].abs() < 2e-3).numpy()
        assert np.array_equal(ours[~uncertain], ref[~uncertain]), key


# ----------------------------------------------------------------------------- EdgeSAM specifics
def test_edge_sam_fuse_parity(loaded, gold):
    """fuse() folds every BatchNorm and RepVGG branch; the embedding still matches the golden
    (the unfused encoder is checked against the same golden in test_embedding_matches)."""
    from samkit.models.edge_sam import build_edge_sam

    g, meta = gold("edge_sam")
    model = build_edge_sam()
    model.load_state_dict(loaded("edge_sam").state_dict())
    x, _ = model.preprocess(g["image_0"].numpy())
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    n_conv_before = sum(isinstance(m, torch.nn.Conv2d) for m in model.image_encoder.features.modules())
    with torch.no_grad():
        assert model.fuse() is model
        assert model.fuse() is model  # idempotent
        after = model.encode(x).embed
    assert n_bn > 100
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    n_conv_after = sum(isinstance(m, torch.nn.Conv2d) for m in model.image_encoder.features.modules())
    assert n_conv_after == n_conv_before - 23  # each stride-1 block's two RepVGG convs became one
    diff = (after - g["embed_0"]).abs().max().item()
    assert diff <= _atol(meta, "embed_0"), diff


def test_edge_sam_fuse_requires_eval():
    from samkit.models.edge_sam import build_edge_sam

    model = build_edge_sam().train()
    with pytest.raises(RuntimeError, match="eval"):
        model.fuse()


def test_edge_sam_four_masks_and_selection(loaded, gold):
    from samkit.models.base import ImageFeatures

    g, meta = gold("edge_sam")
    model = loaded("edge_sam")
    assert model.default_selection == "stability"
    _, t = model.preprocess(g["image_0"].numpy())
    feats = ImageFeatures(g["embed_0"])
    all4, _ = _decode(model, feats, t, g, "p0a", multimask="all")
    three, _ = _decode(model, feats, t, g, "p0a", multimask=True)
    one, _ = _decode(model, feats, t, g, "p0a", multimask=False)
    assert all4.low_res.shape == (1, 4, 256, 256) and all4.iou.shape == (1, 4)
    assert torch.allclose(all4.low_res[:, 1:], three.low_res, atol=1e-5)
    assert torch.allclose(all4.low_res[:, :1], one.low_res, atol=1e-5)
    assert (three.low_res[0] - g["p0a.lowres_logits"]).abs().max().item() <= _atol(meta, "p0a.lowres_logits")


# ----------------------------------------------------------------------------- EfficientSAM specifics
def test_efficient_sam_prompt_list(loaded):
    model = loaded("efficient_sam_vitt")
    pts = torch.tensor([[[10.0, 20.0], [-5.0, 30.0]]])
    lab = torch.tensor([[1, 0]])
    box = torch.tensor([[1.0, 2.0, 300.0, 400.0]])
    coords, labels = model.prompt_points(pts, lab, box)
    assert coords.shape == (1, 6, 2) and labels.shape == (1, 6)
    assert labels[0].tolist() == [1, 0, 2, 3, -1, -1]
    assert coords[0, 1].tolist() == [-1.0, 30.0]  # negative coordinates become -1 as upstream
    assert coords[0, 2:4].flatten().tolist() == [1.0, 2.0, 300.0, 400.0]
    assert (coords[0, 4:] == -1).all()
    many = torch.rand(1, 8, 2) * 1000
    coords, labels = model.prompt_points(many, torch.ones(1, 8), None)
    assert coords.shape == (1, 8, 2)  # all points are used (upstream truncates to 6)


def test_efficient_sam_rejects_mask_input(loaded, gold):
    from samkit.errors import InputError
    from samkit.models.base import ImageFeatures

    model = loaded("efficient_sam_vitt")
    assert model.supports_mask_input is False
    feats = ImageFeatures(gold("efficient_sam_vitt")[0]["embed_0"])
    with pytest.raises(InputError, match="mask input"):
        model.decode(feats, torch.zeros(1, 1, 2), torch.ones(1, 1), None, torch.zeros(1, 1, 256, 256), True)
    with pytest.raises(InputError, match="at least one"):
        model.decode(feats, None, None, None, None, True)


def test_efficient_sam_batched_prompts_match_single(loaded, gold):
    from samkit.models.base import ImageFeatures

    model = loaded("efficient_sam_vitt")
    feats = ImageFeatures(gold("efficient_sam_vitt")[0]["embed_0"])
    boxes = torch.tensor([[100.0, 200.0, 500.0, 700.0], [10.0, 10.0, 900.0, 1000.0]])
    with torch.no_grad():
        batch = model.decode(feats, None, None, boxes, None, False)
        for i in range(2):
            single = model.decode(feats, None, None, boxes[i : i + 1], None, False)
            assert torch.allclose(batch.low_res[i], single.low_res[0], atol=1e-4)
            assert torch.allclose(batch.iou[i], single.iou[0], atol=1e-5)
