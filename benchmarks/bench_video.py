"""Video tracking benchmark: memory (RSS) and per-frame time stay flat over a long stream.

    python benchmarks/bench_video.py                       # tiny random model, 2,000 frames
    python benchmarks/bench_video.py --real sam2.1_hiera_t --real-frames 4 [--official]

Part 1 streams frames from a never-ending iterator through a tiny random SAM 2-style model
and reports RSS, stored memory entries/tensors and the mean per-frame time around frame 100
and frame 2,000. Part 2 (``--real``) tracks one object with a real-size model on the
synthesized parity weights (needs ../shared/parity) and, with ``--official``, runs the
official sam2 video predictor on the same weights and frames for comparison (same machine,
same thread count; float32 CPU). No numbers are asserted; timings are for the report.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_tiny(frames: int, size: int) -> None:
    from samkit.video import VideoTracker
    from samkit.video.tiny import build_tiny_video_model

    model = build_tiny_video_model(64, 32)
    rng = np.random.default_rng(0)
    base = (rng.random((16, size, size, 3)) * 255).astype(np.uint8)
    stream = (base[i % 16] for i in itertools.count())
    tr = VideoTracker(model)
    s = tr.start(stream)
    tr.add_prompt(s, 0, 1, points=[[size / 2, size / 2]], labels=[1])
    tr.add_prompt(s, 0, 2, box=[2, 2, size / 2, size / 2])
    marks = {100, frames}
    window = []
    t_prev = time.perf_counter()
    print(f"tiny model, 2 objects, {size}x{size} frames, torch threads {torch.get_num_threads()}")
    for f, _ in tr.propagate(s, max_frames=frames):
        now = time.perf_counter()
        window = (window + [now - t_prev])[-50:]
        t_prev = now
        if f + 1 in marks:
            print(f"  frame {f + 1:5d}: RSS {rss_mib():7.1f} MiB  memory entries {s.memory_entries():3d}  "
                  f"tensors {s.memory_tensors():3d}  per-frame {1000 * np.mean(window):6.2f} ms (last 50)")


def bench_real(name: str, frames: int, official: bool) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import tempfile

    from safetensors.torch import load_file

    from parity import require_parity, synth_checkpoint_file
    from samkit.registry import load_model
    from samkit.video import VideoTracker

    clip = load_file(str(require_parity() / "golden" / "video_clip.safetensors"))
    vid = clip["frames"].numpy()[:frames]
    pts, labs = clip["obj1_points"].numpy(), clip["obj1_labels"].numpy()
    ckpt = synth_checkpoint_file(name, Path(tempfile.mkdtemp()))
    model = load_model(name, checkpoint=ckpt)
    tr = VideoTracker(model)
    s = tr.start(vid)
    t0 = time.perf_counter()
    tr.add_prompt(s, 0, 1, points=pts, labels=labs)
    print(f"{name} samkit: prompt on frame 0 {time.perf_counter() - t0:.2f} s")
    ours = tr.propagate(s)
    from video_oracle import official_propagation

    theirs = official_propagation(name, vid, pts, labs) if official else None
    t_ours, t_theirs = [], []
    for _ in range(frames):  # interleaved, so that both see the same machine load
        t = time.perf_counter()
        next(ours)
        t_ours.append(time.perf_counter() - t)
        if theirs is not None:
            t = time.perf_counter()
            with torch.inference_mode():
                next(theirs)
            t_theirs.append(time.perf_counter() - t)
    print(f"{name} samkit: per tracked frame {np.mean(t_ours[1:]):.2f} s (frames 1..{frames - 1}), "
          f"RSS {rss_mib():.0f} MiB")
    if t_theirs:
        print(f"{name} official sam2: per tracked frame {np.mean(t_theirs[1:]):.2f} s (same frames, interleaved)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64, help="frame side of the tiny stream")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--real", default=None, help="e.g. sam2.1_hiera_t")
    ap.add_argument("--real-frames", type=int, default=4)
    ap.add_argument("--official", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.frames > 0:
        bench_tiny(a.frames, a.size)
    if a.real:
        bench_real(a.real, a.real_frames, a.official)


if __name__ == "__main__":
    main()
