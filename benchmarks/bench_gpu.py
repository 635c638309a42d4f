"""GPU benchmark, prepared for a lent accelerator (never run in CI; CPU figures live elsewhere).

    python benchmarks/bench_gpu.py --parity PARITY_DIR [--frames 60] [--out gpu.json]

On one CUDA device, with the synthesized parity weights (``PARITY_DIR`` holds
``synth_weights.py`` and ``manifests/``; copy ``../shared/parity`` into a folder that travels
with the working tree), it measures:

* **encoder latency per family**: ``model.encode`` of one 1024 x 1024 input (1008 for SAM 3
  is not included), float32 and bfloat16 autocast, median of ``--runs`` after warm-up, each
  timed between ``_sync()`` calls;
* **click latency**: point -> full-resolution mask on a 1200 x 1800 image (``ImagePredictor``);
* **video frames per second**: one object tracked through ``--frames`` frames of the synthetic
  480 x 854 clip of ``bench_video.py`` for edgetam, sam2.1_hiera_t and efficienttam_ti, float32
  and bfloat16 autocast; the median per-frame time of the frames after the first five.

The EdgeTAM paper reports 150.9 FPS on an A100 (its own compiled, half-precision pipeline);
these are samkit's eager figures on whatever device runs this. Prints a markdown table and,
with ``--out``, writes the rows as JSON. Exit status 2 without a CUDA device.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

IMAGE_MODELS = ["sam_vit_b", "mobile_sam", "edge_sam", "efficient_sam_vitt", "sam2.1_hiera_t", "edgetam",
                "efficienttam_ti"]
VIDEO_MODELS = ["edgetam", "sam2.1_hiera_t", "efficienttam_ti"]


DEVICE = "cuda"  # ``--device cpu`` only to smoke-test this script without a GPU


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _autocast(dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(DEVICE, dtype=dtype)


def _median_ms(fn: Callable[[], object], warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def _load(name: str, tmp: Path):
    from parity import synth_checkpoint_file
    from samkit.registry import load_model

    return load_model(name, checkpoint=synth_checkpoint_file(name, tmp), device=DEVICE)


def image_rows(models: List[str], runs: int, tmp: Path) -> List[dict]:
    from samkit import ImagePredictor

    rng = np.random.default_rng(0)
    image = (rng.random((1200, 1800, 3)) * 255).astype(np.uint8)
    point, label = np.array([[720.0, 660.0]], np.float32), np.array([1], np.int32)
    rows = []
    for name in models:
        model = _load(name, tmp)
        x, _ = model.preprocess(image)
        x = x.to(DEVICE)
        row = {"model": name}
        for tag, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            def encode(dtype=dtype):
                with torch.inference_mode(), _autocast(dtype):
                    return model.encode(x)
            row[f"encoder_ms_{tag}"] = _median_ms(encode, 3, runs)
        pred = ImagePredictor(model)
        pred.set_image(image)
        row["click_ms_fp32"] = _median_ms(lambda: pred.predict(points=point, labels=label, multimask=False), 3,
                                          runs * 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
        model = pred = None  # free the GPU memory before the next family
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows


def video_rows(models: List[str], frames: int, tmp: Path) -> List[dict]:
    from bench_video import object_point, synthetic_clip
    from samkit.video import VideoTracker

    clip = synthetic_clip(frames, 480, 854)
    point = object_point(480, 854)
    rows = []
    for name in models:
        model = _load(name, tmp)
        row = {"model": name, "frames": frames}
        for tag, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            tracker = VideoTracker(model)
            session = tracker.start(clip)
            times = []
            with torch.inference_mode(), _autocast(dtype):
                tracker.add_prompt(session, 0, 1, points=point, labels=[1])
                steps = tracker.propagate(session)
                for _ in range(frames):
                    t0 = time.perf_counter()
                    next(steps)
                    _sync()
                    times.append(time.perf_counter() - t0)
            per_frame = statistics.median(times[5:] or times)
            row[f"frame_ms_{tag}"] = 1000 * per_frame
            row[f"fps_{tag}"] = 1.0 / per_frame
        rows.append(row)
        print(json.dumps(row), flush=True)
        model = None
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows


def table(image: List[dict], video: List[dict]) -> str:
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else DEVICE
    lines = [f"device: {name}; torch {torch.__version__}", "",
             "| model | encoder ms fp32 | encoder ms bf16 | point->full mask ms |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['encoder_ms_fp32']:.2f} | {r['encoder_ms_bf16']:.2f} | {r['click_ms_fp32']:.2f} |"
              for r in image]
    lines += ["", "| video model | frames | FPS fp32 | FPS bf16 |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['frames']} | {r['fps_fp32']:.1f} | {r['fps_bf16']:.1f} |" for r in video]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parity", required=True, help="folder with synth_weights.py and manifests/")
    ap.add_argument("--models", nargs="+", default=IMAGE_MODELS)
    ap.add_argument("--video-models", nargs="+", default=VIDEO_MODELS)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: smoke test only")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device. Fix: run this on a machine with a GPU (it is never part of CI).")
        return 2
    os.environ["SAMKIT_PARITY_DIR"] = str(Path(args.parity).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        image = image_rows(args.models, args.runs, Path(tmp))
        video = video_rows(args.video_models, args.frames, Path(tmp))
    print(table(image, video))
    if args.out:
        Path(args.out).write_text(json.dumps({"image": image, "video": video}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
