"""Segment-everything benchmark: samkit's AutoMaskGenerator vs the official
SamAutomaticMaskGenerator on the same weights and image, plus the mask match rate between
greedy and Fast NMS.

    python benchmarks/bench_everything.py --model tiny --points-per-side 16
    python benchmarks/bench_everything.py --model sam_vit_b --points-per-side 8 --crop-layers 1

``--model``: ``sam_vit_b`` (the synthesized golden weights of tests/parity.py, loaded into both
implementations), ``tiny`` (official SAM with a dim-64, depth-2 ViT encoder, default init, its
weights loaded into samkit's SAM) or ``color`` (the colour-region stand-in of tests/test_auto.py,
which gives real objects on a synthetic image). Random weights give noisy masks, so for
``sam_vit_b``/``tiny`` the filters default to 0 (same settings on both sides).
Prints one JSON document; no numbers are asserted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def match_rate(a: np.ndarray, b: np.ndarray, thr: float = 0.99) -> float:
    """Fraction of masks of ``a`` that have a mask in ``b`` at IoU >= thr."""
    from samkit.ops import mask_iou

    if len(a) == 0:
        return 1.0 if len(b) == 0 else 0.0
    if len(b) == 0:
        return 0.0
    iou = mask_iou(torch.from_numpy(a), torch.from_numpy(b))
    return float((iou.max(dim=1).values >= thr).float().mean())


def build(model: str):
    """-> (official Sam, samkit model, image)."""
    from oracle_shims import import_oracle

    if model == "color":
        import test_auto

        return test_auto.official_color_sam(), test_auto.ColorRegion(), test_auto.rectangles_image()
    from parity import golden, synth_state_dict

    image = golden("sam_vit_b")[0]["image_0"].numpy()
    from samkit.models import sam as sam_mod

    if model == "sam_vit_b":
        sa = import_oracle("segment_anything")
        official = sa.sam_model_registry["vit_b"]()
        sd = synth_state_dict("sam_vit_b")
        official.load_state_dict(sd, strict=True)
        ours = sam_mod.build_sam_vit_b()
        ours.load_state_dict(sam_mod.remap_sam(sd), strict=True)
    elif model == "tiny":
        build_sam = import_oracle("segment_anything.build_sam")
        torch.manual_seed(0)
        official = build_sam._build_sam(64, 2, 2, [1])
        ours = sam_mod._build(64, 2, 2, (1,))
        ours.load_state_dict(sam_mod.remap_sam(official.state_dict()), strict=True)
    else:
        raise SystemExit(f"unknown --model {model!r}; use sam_vit_b, tiny or color")
    return official.eval(), ours.eval(), image


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--crop-layers", type=int, default=0)
    p.add_argument("--pred-iou-thresh", type=float, default=None)
    p.add_argument("--stability-thresh", type=float, default=None)
    p.add_argument("--nms-thresh", type=float, default=0.7)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from oracle_shims import import_oracle

    from samkit.auto import AutoMaskGenerator

    official, ours, image = build(args.model)
    random_weights = args.model != "color"
    piou = args.pred_iou_thresh if args.pred_iou_thresh is not None else (0.0 if random_weights else 0.88)
    stab = args.stability_thresh if args.stability_thresh is not None else (0.0 if random_weights else 0.95)
    common = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                  pred_iou_thresh=piou, stability_score_thresh=stab, crop_n_layers=args.crop_layers)
    amg = import_oracle("segment_anything.automatic_mask_generator")
    with torch.inference_mode():
        t0 = time.perf_counter()
        records = amg.SamAutomaticMaskGenerator(official, box_nms_thresh=args.nms_thresh,
                                                crop_nms_thresh=args.nms_thresh, **common).generate(image)
        t_official = time.perf_counter() - t0
    t0 = time.perf_counter()
    greedy = AutoMaskGenerator(ours, nms="greedy", nms_thresh=args.nms_thresh, **common).generate(image)
    t_greedy = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = AutoMaskGenerator(ours, nms="fast", nms_thresh=args.nms_thresh, **common).generate(image)
    t_fast = time.perf_counter() - t0
    off_masks = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0,) + image.shape[:2], bool)
    result = {
        "model": args.model, "image_hw": list(image.shape[:2]), "settings": {**common, "nms_thresh": args.nms_thresh},
        "torch_threads": torch.get_num_threads(),
        "seconds": {"official": round(t_official, 2), "samkit_greedy": round(t_greedy, 2),
                    "samkit_fast": round(t_fast, 2)},
        "speed_ratio_official_over_samkit": round(t_official / t_greedy, 3),
        "counts": {"official": len(records), "samkit_greedy": len(greedy), "samkit_fast": len(fast)},
        "parity_match_rate_iou99": {"official_in_samkit": match_rate(off_masks, greedy.masks),
                                    "samkit_in_official": match_rate(greedy.masks, off_masks)},
        "greedy_vs_fast_match_rate_iou99": {"greedy_in_fast": match_rate(greedy.masks, fast.masks),
                                            "fast_in_greedy": match_rate(fast.masks, greedy.masks)},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
