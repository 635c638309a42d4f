"""SAM3-LiteText against Hugging Face transformers' ``sam3_lite_text`` (test-only oracle) on
weights synthesized in the released layout (tests/sam3/litetext_oracle.py), loaded through
samkit's loader.

Reduced configuration in the default suite (both student layouts: MobileCLIP-S0's RepMixer
blocks around the transformer blocks, and the plain S1 / MobileCLIP2-L stack; the reduced SAM 3
around them); the released text encoders are ``slow`` tests. Tolerances as for SAM 3
(tests/test_sam3_parity.py).

The official student reads its padding tokens: upstream's ``TextStudentEncoder`` passes no
attention mask to the MobileCLIP transformer (nor did its training), while transformers masks
the padded keys when given ``attention_mask``. samkit follows the official code, so the
reference text features here are transformers' without a mask; the detector still gets the
padding mask, as upstream.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "sam3"))

import litetext_oracle as L  # noqa: E402
import oracle as O  # noqa: E402
from test_sam3_parity import close, same_masks_away_from_boundary  # noqa: E402

from samkit.heads.sam3_detector import cxcywh_to_xyxy  # noqa: E402

pytestmark = pytest.mark.oracle

TEXTS = ["yellow school bus", "a dog", "the small red car on the left"]


@pytest.fixture(scope="module")
def s0():
    ours = L.load_reduced(L.TEXT_S0)
    hf_sd = L.official_to_hf(L.synth_official(O.REDUCED, L.TEXT_S0), L.TEXT_S0)
    return ours, L.hf_model(O.REDUCED, L.TEXT_S0, hf_sd)


def _reference_text(hf, ids):
    """transformers' text features as upstream computes them (no mask in the student)."""
    return hf.get_text_features(input_ids=ids, attention_mask=None)


@pytest.mark.parametrize("text", [L.TEXT_S0, L.TEXT_BASE], ids=["s0_repmixer", "base"])
def test_text_features(text):
    """Every token's features (padding included) of texts of different lengths."""
    enc, reference = L.text_pair(text, L._synth_text(text, 0))
    ids = enc.tokenize(TEXTS)
    with torch.inference_mode():
        feats, valid = enc(ids)
        ref = reference(ids)
    assert (valid.sum(1) < ids.shape[1]).all()  # every text is padded
    close(feats, ref)


def test_detector_text_prompts(s0):
    """Scores, boxes, presence and masks for text prompts, end to end from the pixels."""
    ours, hf = s0
    torch.manual_seed(0)
    x = torch.randn(1, 3, O.REDUCED.image_size, O.REDUCED.image_size)
    n = len(TEXTS)
    with torch.inference_mode():
        d = ours.detect(ours.encode(x), texts=TEXTS, semantic=True)
        ids = ours.text_encoder.tokenize(TEXTS)
        vis = hf.get_vision_features(pixel_values=x)
        vis = type(vis)(last_hidden_state=vis.last_hidden_state.expand(n, -1, -1),
                        fpn_hidden_states=tuple(t.expand(n, -1, -1, -1) for t in vis.fpn_hidden_states),
                        fpn_position_encoding=tuple(t.expand(n, -1, -1, -1) for t in vis.fpn_position_encoding))
        ref = hf(vision_embeds=vis, text_embeds=_reference_text(hf, ids),
                 attention_mask=(ids != 0).long(), input_boxes=torch.zeros(n, 1, 4),
                 input_boxes_labels=torch.full((n, 1), -10))
    close(d.logits, ref.pred_logits)
    close(cxcywh_to_xyxy(d.boxes), ref.pred_boxes)
    close(d.presence, ref.presence_logits)
    close(d.masks, ref.pred_masks)
    same_masks_away_from_boundary(d.masks, ref.pred_masks)
    close(d.semantic, ref.semantic_seg)
    close(d.scores, ref.pred_logits.sigmoid() * ref.presence_logits.sigmoid())


@pytest.mark.slow
@pytest.mark.parametrize("variant, ctx", [("MobileCLIP-S0", 16), ("MobileCLIP-S1", 32), ("MobileCLIP2-L", 16)])
def test_released_text_encoders(variant, ctx):
    """The released text students at full size (synthesized weights in the released layout)
    against transformers' text model + projection."""
    from samkit.backbones.mobileclip_text import variant_config

    text = variant_config(variant, ctx)
    enc, reference = L.text_pair(text, {k: L._synth(k, s, d, 0) for k, s, d in L.text_manifest(text)})
    with torch.inference_mode():
        ids = enc.tokenize(["yellow school bus", "a dog", "person"])
        feats, _ = enc(ids)
        ref = reference(ids)
    print(f"\n{variant} ctx {ctx}: max-abs {close(feats, ref):.2e} of scale {ref.abs().max().item():.2f}")
