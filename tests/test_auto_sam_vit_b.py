"""Segment-everything parity on the synthesized sam_vit_b weights: samkit's AutoMaskGenerator
on samkit's SAM vs the official SamAutomaticMaskGenerator on the official SAM.

Random weights give noisy masks that cover most of the image, so (as in benchmarks/
bench_everything.py) the quality filters are off and box NMS keeps overlapping masks; every
other step (grid, batching, thresholding, stability, boxes, RLE, ordering) is the official one.
The crop-layer path is proven on real objects in test_auto.py."""
from __future__ import annotations

import pytest
import torch

from parity import golden, synth_state_dict
from test_auto import assert_parity, official_generate

pytestmark = [pytest.mark.oracle, pytest.mark.slow]


def test_everything_matches_official_on_synthesized_vit_b(sam_vit_b):
    from oracle_shims import import_oracle

    from samkit.auto import AutoMaskGenerator

    sa = import_oracle("segment_anything")
    official = sa.sam_model_registry["vit_b"]()
    official.load_state_dict(synth_state_dict("sam_vit_b"), strict=True)
    image = golden("sam_vit_b")[0]["image_1"].numpy()
    kw = dict(points_per_side=4, points_per_batch=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    with torch.inference_mode():
        records = official_generate(official.eval(), image, box_nms_thresh=1.0, crop_nms_thresh=1.0, **kw)
    masks, info = AutoMaskGenerator(sam_vit_b, nms="greedy", nms_thresh=1.0, **kw).generate_with_info(image)
    assert len(records) == 48  # 16 points x 3 masks, none filtered
    assert_parity(records, masks, info, score_tol=1e-4)
