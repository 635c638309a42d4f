"""Measure the ``classic`` (GrabCut) engine on DAVIS frames.

For every ``--step``-th frame of every sequence and every object of its annotation (palette
PNG, index k = object k), two prompts are scored by mask IoU with the ground truth:

* box:   the object's tight ground-truth box (x0, y0, x1, y1 inclusive pixels);
* click: one positive point at the object's interior pixel farthest from its boundary
         (maximum of cv2.distanceTransform).

The engine returns its candidates best-score first; the first one is the prediction (no
oracle choice). The plain box (the box itself taken as the mask) is reported as a baseline.

Usage: python scripts/measure_classic_davis.py --data ../shared/data/davis [--step 10] [--offset 0] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def sequences(root: Path, names=None):
    jpg = root / "JPEGImages" / "480p"
    ann = root / "Annotations" / "480p"
    if not jpg.is_dir() or not ann.is_dir():
        sys.exit(f"error: {root} has no JPEGImages/480p and Annotations/480p. Fix: pass --data <DAVIS root>.")
    for seq in sorted(p.name for p in ann.iterdir() if p.is_dir()):
        if names and seq not in names:
            continue
        yield seq, sorted((jpg / seq).glob("*.jpg")), ann / seq


def main(argv=None) -> int:
    import cv2

    from samkit.models.classic import GrabCutModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="DAVIS root (JPEGImages/480p, Annotations/480p)")
    ap.add_argument("--step", type=int, default=10, help="use every STEP-th frame (default 10)")
    ap.add_argument("--offset", type=int, default=0, help="first frame index (default 0; 5 gives the frames between)")
    ap.add_argument("--seq", nargs="*", help="only these sequences")
    ap.add_argument("--json", type=Path, help="also write per-frame results here")
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = ap.parse_args(argv)

    engine = GrabCutModel()
    rows = []
    t0 = time.perf_counter()
    for seq, frames, ann_dir in sequences(args.data, args.seq):
        for f in frames[args.offset:: args.step]:
            png = ann_dir / (f.stem + ".png")
            if not png.exists():
                continue
            image = np.asarray(Image.open(f).convert("RGB"))
            ann = np.asarray(Image.open(png))
            for obj in sorted(int(v) for v in np.unique(ann) if v not in (0, 255)):
                gt = ann == obj
                ys, xs = np.nonzero(gt)
                box = [xs.min(), ys.min(), xs.max(), ys.max()]
                plain = np.zeros_like(gt)
                plain[box[1]:box[3] + 1, box[0]:box[2] + 1] = True
                dist = cv2.distanceTransform(np.pad(gt, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
                cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
                mb, sb, _ = engine.segment(image, box=box)
                mc, sc, _ = engine.segment(image, points=[[cx, cy]], labels=[1])
                rows.append(dict(seq=seq, frame=f.stem, obj=obj, box=iou(mb[0], gt), click=iou(mc[0], gt),
                                 box_best=max(iou(m, gt) for m in mb), click_best=max(iou(m, gt) for m in mc),
                                 plain_box=iou(plain, gt)))
    elapsed = time.perf_counter() - t0
    if not rows:
        sys.exit("error: no annotated frames found. Fix: check --data and --seq.")

    keys = ("box", "click", "plain_box", "box_best", "click_best")
    groups = {}
    for r in rows:
        groups.setdefault(r["seq"], []).append(r)
    table = [(seq, len(rs), *[np.mean([r[k] for r in rs]) for k in keys]) for seq, rs in groups.items()]
    table.append(("**all**" if args.markdown else "all", len(rows), *[np.mean([r[k] for r in rows]) for k in keys]))
    head = ("sequence", "n", "box mIoU", "click mIoU", "plain box", "box (best of 3)", "click (best of 3)")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for t in table:
            print(f"| {t[0]} | {t[1]} | " + " | ".join(f"{v:.3f}" for v in t[2:]) + " |")
    else:
        print(("{:<12}{:>5}" + "{:>18}" * len(keys)).format(*head))
        for t in table:
            print(("{:<12}{:>5}" + "{:>18.3f}" * len(keys)).format(*t))
    print(f"\n{len(rows)} object-frames, {elapsed:.1f} s ({elapsed / len(rows) / 2:.2f} s per prompt)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
