"""Segment-everything benchmark: samkit's AutoMaskGenerator (exact mode and the opt-in fast
mode) vs the official SamAutomaticMaskGenerator, same weights, same images, same run.

    python benchmarks/bench_everything.py --model tiny --points-per-side 16
    python benchmarks/bench_everything.py --model sam_vit_b --images truck davis
    python benchmarks/bench_everything.py --model sam_vit_b --points-per-side 8 --crop-layers 1

Images: ``truck`` (samkit/assets/truck.png) and ``davis`` (``00000.jpg`` of the first two
sequences under ``--davis``/JPEGImages/480p, default ../shared/data/davis; skipped with a note
when absent). Per image: seconds of each run (encoder included), the ratio official / samkit,
and the match rates: the share of the official masks that samkit's output has at IoU >= 0.99
and >= 0.9 (exact mode), >= 0.9 (fast mode), and the reverse share for exact mode.

``--model``: ``sam_vit_b`` (the synthesized golden weights of tests/parity.py, loaded into both
implementations), ``tiny`` (official SAM with a dim-64, depth-2 ViT encoder, default init, its
weights loaded into samkit's SAM), ``color`` (the colour-region stand-in of tests/test_auto.py,
which gives real objects on a synthetic image; its own synthetic image) or ``regions`` (the
same stand-in kept to the prompted pixel's connected component, ``connected_region_logits``:
nested, connected regions on the truck and DAVIS photographs, so the official generator keeps
several masks per image and the fast mode's match rate can be counted; the stand-in's masks
depend on the seed pixel's exact colour much more than SAM's do, and its timings say nothing).
Random weights give odd masks (large, overlapping), so for ``sam_vit_b``/``tiny`` the filters
default to 0 (same settings on both sides) and the figures say how fast and how close, not how
good the masks are. ``--rounds R`` runs official, exact and fast R times in turn and reports
the median seconds and the median of the per-round ratios (the machine's speed drifts).
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
    """-> (official Sam, samkit model, golden image or None)."""
    from oracle_shims import import_oracle

    if model in ("color", "regions"):
        import test_auto

        connected = model == "regions"
        return (test_auto.official_color_sam(connected), test_auto.ColorRegion(connected),
                None if connected else test_auto.rectangles_image())
    from parity import synth_state_dict

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
        raise SystemExit(f"unknown --model {model!r}; use sam_vit_b, tiny, color or regions")
    return official.eval(), ours.eval(), None


def images(names, model: str, golden_image, davis: Path) -> list:
    """-> [(name, H x W x 3 uint8)]; the ``color`` model runs on its own synthetic image."""
    from samkit.io.image import load_image

    if golden_image is not None:  # the colour stand-in's own synthetic image
        return [("rectangles", golden_image)]
    out = []
    for name in names:
        if name == "truck":
            out.append(("truck", load_image(ROOT / "samkit" / "assets" / "truck.png")))
        elif name == "davis":
            seqs = sorted(p for p in (davis / "JPEGImages" / "480p").glob("*") if (p / "00000.jpg").exists())[:2]
            if not seqs:
                print(f"note: no DAVIS frames under {davis}; pass --davis DIR", file=sys.stderr)
            out += [(f"davis/{p.name}", load_image(p / "00000.jpg")) for p in seqs]
        else:
            raise SystemExit(f"unknown image set {name!r}; use truck, davis")
    return out


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_image(official, ours, image: np.ndarray, common: dict, nms_thresh: float, rounds: int = 1) -> dict:
    """One image: the official generator, samkit exact and fast (``rounds`` times in turn),
    timings and match rates."""
    from oracle_shims import import_oracle

    from samkit.auto import AutoMaskGenerator

    amg = import_oracle("segment_anything.automatic_mask_generator")

    def official_run():
        with torch.inference_mode():
            return amg.SamAutomaticMaskGenerator(official, box_nms_thresh=nms_thresh, crop_nms_thresh=nms_thresh,
                                                 **common).generate(image)

    runs = {"official": official_run,
            "exact": lambda: AutoMaskGenerator(ours, nms="greedy", nms_thresh=nms_thresh,
                                               **common).generate_with_info(image),
            "fast": lambda: AutoMaskGenerator(ours, nms="greedy", nms_thresh=nms_thresh, mode="fast",
                                              **common).generate_with_info(image)}
    secs = {k: [] for k in runs}
    out = {}
    for _ in range(max(1, rounds)):
        for key, fn in runs.items():
            out[key], t = _timed(fn)
            secs[key].append(t)
    records, (exact, exact_info), (fast, fast_info) = out["official"], out["exact"], out["fast"]
    ratio = {k: float(np.median([o / t for o, t in zip(secs["official"], secs[k])])) for k in ("exact", "fast")}
    off = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0,) + image.shape[:2], bool)
    return {
        "image_hw": list(image.shape[:2]),
        "seconds": {k: round(float(np.median(v)), 2) for k, v in secs.items()},
        "ratio_official_over": {k: round(v, 3) for k, v in ratio.items()},
        **({"seconds_per_round": {k: [round(t, 2) for t in v] for k, v in secs.items()}} if rounds > 1 else {}),
        "counts": {"official": len(records), "exact": len(exact), "fast": len(fast)},
        "points_decoded": {"official": exact_info.stats["points_decoded"], "exact": exact_info.stats["points_decoded"],
                           "fast": fast_info.stats["points_decoded"]},
        "official_found": {"exact_iou99": match_rate(off, exact.masks, 0.99),
                           "exact_iou90": match_rate(off, exact.masks, 0.9),
                           "fast_iou90": match_rate(off, fast.masks, 0.9)},
        "exact_in_official_iou99": match_rate(exact.masks, off, 0.99),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--images", nargs="+", default=["truck", "davis"], help="truck and/or davis")
    p.add_argument("--davis", type=Path, default=ROOT.parent / "shared" / "data" / "davis")
    p.add_argument("--points-per-side", type=int, default=16)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--crop-layers", type=int, default=0)
    p.add_argument("--pred-iou-thresh", type=float, default=None)
    p.add_argument("--stability-thresh", type=float, default=None)
    p.add_argument("--nms-thresh", type=float, default=0.7)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="official / exact / fast this many times in turn")
    p.add_argument("--decode-chunk", type=int, default=0,
                   help="prompts per decoder call on CPU (default: AutoMaskGenerator._DECODE_CHUNK)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from samkit.auto import AutoMaskGenerator

    if args.decode_chunk:
        AutoMaskGenerator._DECODE_CHUNK = args.decode_chunk
    official, ours, golden_image = build(args.model)
    random_weights = args.model not in ("color", "regions")
    piou = args.pred_iou_thresh if args.pred_iou_thresh is not None else (0.0 if random_weights else 0.88)
    stab = args.stability_thresh if args.stability_thresh is not None else (0.0 if random_weights else 0.95)
    common = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                  pred_iou_thresh=piou, stability_score_thresh=stab, crop_n_layers=args.crop_layers)
    result = {"model": args.model, "weights": "synthesized random" if random_weights else "colour stand-in",
              "rounds": args.rounds,
              "settings": {**common, "nms_thresh": args.nms_thresh}, "torch_threads": torch.get_num_threads(),
              "decode_chunk": AutoMaskGenerator._DECODE_CHUNK,
              "images": {}}
    for name, image in images(args.images, args.model, golden_image, args.davis):
        result["images"][name] = run_image(official, ours, image, common, args.nms_thresh, args.rounds)
        print(f"{name}: {json.dumps(result['images'][name])}", file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
