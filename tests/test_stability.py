"""One stability score (``samkit.ops.stability_score``, 0.0 for an empty mask) and what each
caller does with an empty mask: everything mode drops it like the official NaN filter, SAM 2's
dynamic multimask keeps an empty single mask as the official decoder does. (The predictor's
case is in test_predictor_errors.py.)"""
from __future__ import annotations

import pytest
import torch

from samkit.ops import stability_score
from tiny import tiny_sam


def _logits_with_empty(n: int = 6, size: int = 32, empty=(1, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    low = torch.randn(n, size, size, generator=g) * 3
    for i in empty:
        low[i] = -5.0  # no logit above mask_threshold - offset
    return low


@pytest.mark.parametrize("thresh", [0.01, 0.5])
def test_everything_mode_drops_empty_masks_like_upstream_nan(thresh):
    from oracle_shims import import_oracle

    from samkit.auto import AutoMaskGenerator
    from samkit.models.base import ImageTransform

    amg = import_oracle("segment_anything.utils.amg")
    model = tiny_sam()
    gen = AutoMaskGenerator(model, points_per_side=2, stability_score_thresh=thresh)
    t = ImageTransform((40, 40), (128, 128), 128)
    low = _logits_with_empty(size=32)
    kept, stab, masks, _ = gen._upscale(low, t)
    logits = model.postprocess(low[:, None], t)[:, 0]
    ref = amg.calculate_stability_score(logits, 0.0, 1.0)
    assert torch.isnan(ref[[1, 4]]).all()  # upstream: 0 / 0
    assert kept.tolist() == torch.where(ref >= thresh)[0].tolist()  # NaN fails >= like our 0.0
    assert 1 not in kept.tolist() and 4 not in kept.tolist()
    assert torch.equal(stab, ref[kept]) and masks.flatten(1).any(1).all()


def test_everything_mode_without_filter_reports_zero_for_empty_masks():
    from samkit.auto import AutoMaskGenerator
    from samkit.models.base import ImageTransform

    gen = AutoMaskGenerator(tiny_sam(), points_per_side=2, stability_score_thresh=0.0)
    kept, stab, masks, _ = gen._upscale(_logits_with_empty(size=32), ImageTransform((40, 40), (128, 128), 128))
    assert len(kept) == 6 and stab[[1, 4]].tolist() == [0.0, 0.0] and not masks[[1, 4]].any()


def _decoder():
    from samkit.heads import MaskDecoder, TwoWayTransformer

    return MaskDecoder(transformer_dim=16, transformer=TwoWayTransformer(depth=1, embedding_dim=16, num_heads=2,
                                                                          mlp_dim=16),
                       iou_head_hidden_dim=16, dynamic_multimask_via_stability=True).eval()


def _dynamic_case():
    """B = 3 rows of 4 mask tokens: the single mask (token 0) is empty, unstable, stable."""
    g = torch.Generator().manual_seed(4)
    masks = torch.randn(3, 4, 16, 16, generator=g) * 4
    masks[0, 0] = -1.0  # empty: nothing above -delta
    masks[1, 0] = 0.0  # unstable: everything above -delta, nothing above +delta
    masks[2, 0] = torch.where(masks[2, 0] > 0, 5.0, -5.0)  # stable
    iou = torch.rand(3, 4, generator=g)
    return masks, iou


def test_dynamic_multimask_keeps_an_empty_single_mask():
    masks, iou = _dynamic_case()
    dec = _decoder()
    out, out_iou = dec._dynamic_multimask(masks, iou)
    best = iou[:, 1:].argmax(-1) + 1
    assert torch.equal(out[0, 0], masks[0, 0]) and out_iou[0, 0] == iou[0, 0]  # empty: kept (SAM 2)
    assert torch.equal(out[1, 0], masks[1, best[1]]) and out_iou[1, 0] == iou[1, best[1]]  # unstable: best multi
    assert torch.equal(out[2, 0], masks[2, 0])  # stable: kept
    assert stability_score(masks[0, 0], 0.0, 0.05) == 0.0  # the shared score itself says 0 for empty


@pytest.mark.oracle
def test_dynamic_multimask_matches_official_sam2():
    from types import SimpleNamespace

    from oracle_shims import import_oracle

    official = import_oracle("sam2.modeling.sam.mask_decoder").MaskDecoder
    masks, iou = _dynamic_case()
    ns = SimpleNamespace(dynamic_multimask_stability_delta=0.05, dynamic_multimask_stability_thresh=0.98)
    ns._get_stability_scores = lambda m: official._get_stability_scores(ns, m)
    ref_masks, ref_iou = official._dynamic_multimask_via_stability(ns, masks, iou)
    out, out_iou = _decoder()._dynamic_multimask(masks, iou)
    assert torch.equal(out, ref_masks) and torch.equal(out_iou, ref_iou)
