"""SAM 3 against Hugging Face transformers (test-only oracle, installed ``--no-deps``) on weights
synthesized in the released ``sam3.pt`` layout (tests/sam3/oracle.py), loaded through samkit's
loader; the same weights in the ``facebook/sam3`` safetensors layout load to the same model.

The released key lists are checked in tests/test_sam3.py. Reduced configuration in the default suite (every code path of the released model: windowed and
global RoPE blocks, tiled position embedding, both necks, text tower, geometry encoder, DETR
encoder / decoder with box RPB and presence token, mask head, interactive head); the released
size is one ``slow`` test. Tolerance: max-abs within 1e-4 of the reference's scale; binary masks
identical away from the 0 level."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent / "sam3"))

import oracle as O  # noqa: E402

pytestmark = pytest.mark.oracle

from samkit.checkpoint import load_into, remap  # noqa: E402
from samkit.heads.sam3_detector import cxcywh_to_xyxy  # noqa: E402
from samkit.models.sam3 import Sam3Model  # noqa: E402

TEXTS = ["yellow school bus", "a dog"]


def close(ours: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> float:
    """Max-abs difference, asserted within ``rel`` of the reference's scale; returned for reports."""
    err = (ours.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item()
    assert err <= rel * max(scale, 1e-6), (err, scale)
    return err


def same_masks_away_from_boundary(ours: torch.Tensor, ref: torch.Tensor, margin: float = 1e-3) -> None:
    far = ref.abs() > margin * ref.abs().max()
    assert far.float().mean() > 0.5
    assert torch.equal((ours > 0)[far], (ref > 0)[far])


@pytest.fixture(scope="module")
def setup():
    cfg = O.REDUCED
    sd = O.synth_official(cfg)
    ours = Sam3Model(cfg).eval()
    load_into(ours, sd, "sam3", source="synthesized sam3.pt")
    hf_sd = O.official_to_hf(sd)
    torch.manual_seed(0)
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    with torch.inference_mode():
        feats = ours.encode(x)
    return dict(cfg=cfg, sd=sd, hf_sd=hf_sd, ours=ours, det=O.hf_detector(cfg, hf_sd), trk=O.hf_tracker(cfg, hf_sd),
                x=x, feats=feats)


# ----------------------------------------------------------------------------- layouts
def test_hf_layout_loads_the_same_weights(setup):
    """transformers' layout of the same weights gives the same samkit state dict (the ViT's
    class slot of the position embedding, dropped by transformers and never used, is zero)."""
    a = remap(setup["sd"], "sam3")
    b = remap(setup["hf_sd"], "sam3")
    assert sorted(a) == sorted(b)
    for k in a:
        if k == "image_encoder.trunk.pos_embed":
            assert torch.equal(a[k][:, 1:], b[k][:, 1:]) and not b[k][:, 0].any()
        else:
            assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- parity
def test_backbone_and_text_features(setup):
    ours, det, x, feats = setup["ours"], setup["det"], setup["x"], setup["feats"]
    with torch.inference_mode():
        ref = det.vision_encoder(x)
        close(ours.image_encoder.trunk(x).flatten(2).transpose(1, 2), ref.last_hidden_state)
        for i in range(3):
            close(feats.detector[i], ref.fpn_hidden_states[i])
            close(feats.pos[i], ref.fpn_position_encoding[i])
        ids = ours.text_encoder.tokenize(TEXTS)
        tokens, valid = ours.text_encoder(ids)
        hf = det.get_text_features(input_ids=ids, attention_mask=valid.long()).pooler_output
        close(tokens[valid], hf[valid])  # padded positions are never read


def _hf_detect(setup, texts, boxes=None, labels=None):
    """transformers with the official prompt: text tokens + the geometry encoder's output (its
    CLS token even without boxes; transformers skips the geometry encoder when no box is given,
    so a padding box (label -10) stands in for "no box")."""
    det, x, ours = setup["det"], setup["x"], setup["ours"]
    ids = ours.text_encoder.tokenize(texts)
    n = len(texts)
    if boxes is None:
        boxes, labels = torch.zeros(n, 1, 4), torch.full((n, 1), -10)
    return det(pixel_values=x.expand(n, -1, -1, -1), input_ids=ids, attention_mask=(ids != 0).long(),
               input_boxes=boxes, input_boxes_labels=labels)


def _compare_detections(d, ref):
    close(d.logits, ref.pred_logits)
    close(cxcywh_to_xyxy(d.boxes), ref.pred_boxes)
    close(d.presence, ref.presence_logits)
    close(d.masks, ref.pred_masks)
    same_masks_away_from_boundary(d.masks, ref.pred_masks)
    if d.semantic is not None:
        close(d.semantic, ref.semantic_seg)


def test_detector_text_prompts(setup):
    with torch.inference_mode():
        d = setup["ours"].detect(setup["feats"], texts=TEXTS, semantic=True)
        _compare_detections(d, _hf_detect(setup, TEXTS))


@pytest.mark.parametrize("text", ["visual", "dog"])
def test_detector_exemplar_prompts(setup, text):
    boxes = torch.tensor([[[0.4, 0.5, 0.3, 0.2], [0.7, 0.3, 0.2, 0.4], [0.2, 0.8, 0.1, 0.1]]])
    labels = torch.tensor([[1, 0, 1]])
    with torch.inference_mode():
        d = setup["ours"].detect(setup["feats"], texts=[text], boxes=boxes, box_labels=labels)
        _compare_detections(d, _hf_detect(setup, [text], boxes, labels))


@pytest.mark.parametrize("multimask", [True, False])
def test_interactive_points_and_box(setup, multimask):
    ours, trk, x, feats = setup["ours"], setup["trk"], setup["x"], setup["feats"]
    pts = torch.tensor([[[60.0, 80.0], [150.0, 120.0]]])
    lab = torch.tensor([[1, 0]])
    box = torch.tensor([[30.0, 40.0, 200.0, 180.0]])
    with torch.inference_mode():
        for kwargs, ref_kwargs in (
                (dict(points=pts, labels=lab, boxes=None), dict(input_points=pts[:, None], input_labels=lab[:, None])),
                (dict(points=None, labels=None, boxes=box), dict(input_boxes=box[:, None]))):
            o = ours.decode(feats, mask_input=None, multimask=multimask, **kwargs)
            r = trk(pixel_values=x, multimask_output=multimask, **ref_kwargs)
            close(o.low_res, r.pred_masks[:, 0])
            same_masks_away_from_boundary(o.low_res, r.pred_masks[:, 0])
            close(o.iou, r.iou_scores[:, 0])
            close(o.object_score, r.object_score_logits[:, 0])


def test_predict_text_keeps_the_instances_of_the_reference(setup):
    """ImagePredictor(text=...) end to end: the kept instances and their masks at the image size
    are those of transformers' outputs post-processed as upstream (score = sigmoid(logit) *
    sigmoid(presence) above the threshold, masks upsampled bilinearly, logit > 0)."""
    from samkit import ImagePredictor

    ours = setup["ours"]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (180, 300, 3), dtype=np.uint8)
    predictor = ImagePredictor(ours).set_image(image)
    x, _ = ours.preprocess(image)
    with torch.inference_mode():
        ref = setup["det"](pixel_values=x, input_ids=ours.text_encoder.tokenize(TEXTS[:1]),
                           attention_mask=(ours.text_encoder.tokenize(TEXTS[:1]) != 0).long(),
                           input_boxes=torch.zeros(1, 1, 4), input_boxes_labels=torch.full((1, 1), -10))
    scores = (ref.pred_logits.sigmoid() * ref.presence_logits.sigmoid())[0]
    threshold = float(scores.sort(descending=True).values[5])  # five instances above it
    ours.score_threshold = threshold
    try:
        out = predictor.predict(text=TEXTS[0])
    finally:
        ours.score_threshold = Sam3Model.score_threshold
    keep = torch.nonzero(scores > threshold).flatten()
    keep = keep[torch.argsort(scores[keep], descending=True)]
    assert len(out) == 5 and out.labels == [TEXTS[0]] * 5
    np.testing.assert_allclose(out.scores, scores[keep].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(out.label_scores, out.scores)
    full = F.interpolate(ref.pred_masks[0, keep][None], image.shape[:2], mode="bilinear", align_corners=False)[0]
    far = full.abs() > 1e-3 * full.abs().max()
    assert np.array_equal(out.masks[far.numpy()], (full > 0).numpy()[far.numpy()])


# ----------------------------------------------------------------------------- released size
@pytest.mark.slow
def test_released_size_against_transformers():
    """The released configuration (840M-parameter detector, 1008 px): backbone, text, detector
    (text and exemplar prompts) and the interactive head vs transformers, once."""
    from samkit.models.sam3 import Sam3Config

    cfg = Sam3Config()
    sd = O.synth_official(cfg)
    with torch.device("meta"):
        ours = Sam3Model(cfg).eval()
    # assign: the model keeps the synthesized tensors (no second 3.4 GB copy); the transformers
    # models below share them too (their layout is made of views of the same tensors)
    ours.load_state_dict(remap(sd, "sam3"), strict=True, assign=True)
    hf_sd = O.official_to_hf(sd)
    del sd
    det = O.hf_detector(cfg, hf_sd, assign=True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, cfg.image_size, cfg.image_size)
    with torch.inference_mode():
        feats = ours.encode(x)
        vis = det.get_vision_features(pixel_values=x)
        for i in range(3):
            close(feats.detector[i], vis.fpn_hidden_states[i])
        ids = ours.text_encoder.tokenize(["visual", "yellow school bus"])
        mask = (ids != 0).long()
        boxes = torch.tensor([[[0.4, 0.5, 0.3, 0.2]], [[0.0, 0.0, 0.0, 0.0]]])
        labels = torch.tensor([[1], [-10]])
        ref = det(vision_embeds=type(vis)(last_hidden_state=vis.last_hidden_state.expand(2, -1, -1),
                                          fpn_hidden_states=tuple(t.expand(2, -1, -1, -1) for t in vis.fpn_hidden_states),
                                          fpn_position_encoding=tuple(t.expand(2, -1, -1, -1)
                                                                      for t in vis.fpn_position_encoding)),
                  input_ids=ids, attention_mask=mask, input_boxes=boxes, input_boxes_labels=labels)
        d0 = ours.detect(feats, texts=["visual"], boxes=boxes[:1], box_labels=labels[:1])
        d1 = ours.detect(feats, texts=["yellow school bus"])
        for i, d in enumerate((d0, d1)):
            close(d.logits[0], ref.pred_logits[i])
            close(cxcywh_to_xyxy(d.boxes)[0], ref.pred_boxes[i])
            close(d.presence[0], ref.presence_logits[i])
            close(d.masks[0], ref.pred_masks[i])
            same_masks_away_from_boundary(d.masks[0], ref.pred_masks[i])
    del det
    trk = O.hf_tracker(cfg, hf_sd, assign=True)
    del hf_sd
    with torch.inference_mode():
        pts, lab = torch.tensor([[[300.0, 400.0]]]), torch.tensor([[1]])
        o = ours.decode(feats, pts, lab, None, None, True)
        r = trk(pixel_values=x, input_points=pts[:, None], input_labels=lab[:, None], multimask_output=True)
        close(o.low_res, r.pred_masks[:, 0])
        close(o.iou, r.iou_scores[:, 0])


def test_lower_input_size_against_transformers(setup):
    """``image_size`` below the released one (here 168 for the reduced model's 252: a 12 x 12
    token grid instead of 18 x 18) with the same weights: backbone, text detections and masks
    equal transformers built at that size (its ``image_size`` config)."""
    from samkit.models.sam3 import at_image_size

    cfg = at_image_size(O.REDUCED, 168)
    ours = Sam3Model(cfg).eval()
    load_into(ours, setup["sd"], "sam3", source="synthesized sam3.pt")
    det = O.hf_detector(cfg, setup["hf_sd"])
    torch.manual_seed(1)
    x = torch.randn(1, 3, 168, 168)
    with torch.inference_mode():
        feats = ours.encode(x)
        ref = det.vision_encoder(x)
        close(ours.image_encoder.trunk(x).flatten(2).transpose(1, 2), ref.last_hidden_state)
        d = ours.detect(feats, texts=TEXTS, semantic=True)
        _compare_detections(d, _hf_detect(dict(det=det, x=x, ours=ours), TEXTS))
    assert d.masks.shape[-2:] == (48, 48)
