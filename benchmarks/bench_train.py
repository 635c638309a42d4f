"""Training speed: optimiser steps per second of the EdgeSAM student (full size, 1024 frame,
random weights) in both distillation phases, through ``samkit.train.run.train`` itself.

The teacher is a second EdgeSAM with random weights (its embeddings are cached before the timed
steps, as in a real run where they are computed once), the data a few synthetic images with
rectangle masks. Phase 1: encoder MSE; phase 2: prompt-in-the-loop (``--loop-iters`` decode passes,
``--masks`` prompts per image). The figures are wall-clock medians over the timed steps (the first
step of each phase is a warm-up).

Usage::

    python benchmarks/bench_train.py [--steps 4] [--batch 1] [--masks 4] [--loop-iters 3]
        [--device cpu] [--results benchmarks/RESULTS.md]

The table replaces the ``## train`` section of ``--results``. No test asserts a timing.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _data(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(n):
        img = (rng.random((768, 1024, 3)) * 255).astype(np.uint8)
        lab = np.zeros((768, 1024), dtype=np.uint8)
        for k in range(4):
            y, x = rng.integers(0, 600), rng.integers(0, 850)
            lab[y:y + 150, x:x + 160] = k + 1
        Image.fromarray(img).save(root / "images" / f"{i}.jpg")
        Image.fromarray(lab).save(root / "masks" / f"{i}.png")
    return root


def _phase_rates(args, tmp: Path) -> dict:
    from samkit.registry import build_model
    from samkit.train.config import TrainConfig
    from samkit.train.layouts import save_official
    from samkit.train.run import train

    torch.manual_seed(1)
    teacher = build_model("edge_sam")
    ckpt = save_official(teacher, teacher.spec, tmp / "teacher.pt")
    data = _data(tmp / "data", max(2, args.batch * 2))
    times = []
    last = [0.0]

    def tick(step, run):  # after every optimiser step
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append((step, now - last[0]))
        last[0] = now

    cfg = TrainConfig(mode="distill", data=str(data), out=str(tmp / "out"), student="edge_sam",
                      teacher=f"edge_sam:{ckpt}", encoder_steps=args.steps, loop_steps=args.steps,
                      batch_size=args.batch, masks_per_image=args.masks, loop_iters=args.loop_iters, holdout=0.0,
                      save_every=0, progress=False, device=args.device)
    t0 = last[0] = time.perf_counter()
    train(cfg, on_step=tick)
    total = time.perf_counter() - t0
    enc = [dt for s, dt in times if 2 <= s <= args.steps]
    loop = [dt for s, dt in times if args.steps + 2 <= s <= 2 * args.steps]
    return {"encoder": 1.0 / statistics.median(enc) if enc else float("nan"),
            "loop": 1.0 / statistics.median(loop) if loop else float("nan"), "total_s": total}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="steps per phase (the first is a warm-up)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--masks", type=int, default=4)
    ap.add_argument("--loop-iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        r = _phase_rates(args, Path(tmp))
    dev = args.device if not args.device.startswith("cuda") else torch.cuda.get_device_name(0)
    text = (f"## train\n\nEdgeSAM student (RepViT-M1, 1024 frame, random weights), distillation from a cached "
            f"EdgeSAM teacher; batch {args.batch} image(s) x {args.masks} prompts, {args.loop_iters} loop passes; "
            f"device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads; load average at start "
            f"{load:.1f}.\n\nCommand: `python benchmarks/bench_train.py --steps {args.steps} --batch {args.batch} "
            f"--masks {args.masks} --loop-iters {args.loop_iters} --device {args.device}`\n\n"
            "| phase | steps/s | images/s |\n|---|---|---|\n"
            f"| 1: encoder MSE | {r['encoder']:.3f} | {r['encoder'] * args.batch:.3f} |\n"
            f"| 2: prompt-in-the-loop | {r['loop']:.3f} | {r['loop'] * args.batch:.3f} |\n\n"
            f"Whole run (teacher cache, {2 * args.steps} steps, checkpoint): {r['total_s']:.1f} s.\n")
    print(text)
    if args.results is not None:
        old = args.results.read_text() if args.results.is_file() else ""
        new = re.sub(r"## train\n.*?(?=\n## |\Z)", lambda m: text.rstrip("\n") + "\n", old, flags=re.S) \
            if "## train\n" in old else old.rstrip("\n") + "\n\n" + text
        args.results.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
