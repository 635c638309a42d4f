"""Video tracking benchmark: per tracked frame time at frame 10 and at frame N, peak RSS.

    python benchmarks/bench_video.py                          # real-size models, 200 frames, + official
    python benchmarks/bench_video.py --frames 12 --models edgetam --no-official   # quick check
    python benchmarks/bench_video.py --tiny-frames 2000 --frames 0               # tiny stream only

Part 1 (``--frames N``, default 200): a synthetic clip of real size (``--size``, default
480 x 854; frames are resized to the model's 1024 x 1024 anyway) with one object moving
across a textured background. Each model in ``--models`` (default sam2.1_hiera_t, edgetam,
efficienttam_ti) is loaded from the synthesized parity weights (needs ../shared/parity),
prompted with one point on frame 0 and propagated through all N frames. Reported per model:
the median per tracked frame time over frames 8..12 ("frame 10") and over the last five
frames ("frame N"), and the peak RSS (VmHWM, reset before each model) when each point is
reached. With ``--official`` (default on) the official sam2 video predictor
(tests/video_oracle.py, one object: its CPU path fails with two) runs sam2.1_hiera_t on the
same weights and frames afterwards, measured the same way (its loader decodes all frames up
front, outside the per-frame times; ours reads and resizes each frame inside them).

Part 2 (``--tiny-frames``, default 0): a tiny random SAM 2-style model streams frames from a
never-ending iterator and reports RSS, stored memory entries/tensors and the per-frame time
around frame 100 and the last frame (memory stays bounded).

Part 3 (``--objects 1 2 4 8``, default off): many objects. A short DAVIS clip (``--davis``,
``--sequence``, ``--clip-frames``, default 8 frames) with N objects prompted by boxes on frame 0
(the ground-truth box, then boxes on a 3 x 3 grid), tracked batched (``object_batch=8``) and one
object at a time (``object_batch=1``) in the same run, for each model of ``--object-models``
(default edgetam, sam2.1_hiera_t): per-frame time beside each stage's time, FLOPs and floor at
this machine's GEMM rate (``benchmarks/video_stages.py``), and the ratios within the run.

Part 4 (``--stage-models``, default off; ``all`` = every video variant): one object on the same
clip, each stage's frames per second and share of the GEMM rate; names the fastest tracker.

No numbers are asserted; timings are for the report (float32 CPU, ``--threads`` threads).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_MODELS = ["sam2.1_hiera_t", "edgetam", "efficienttam_ti"]
OFFICIAL = {"sam2.1_hiera_t"}  # official video predictors available as oracles


def rss_mib(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Reset VmHWM (Linux ``clear_refs`` 5); harmless where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def synthetic_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """T x H x W x 3 uint8: a textured background and a bright ellipse moving on a loop."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 120 + 40).astype(np.uint8)
    bg = np.kron(bg, np.ones((8, 8, 1), np.uint8))[:height, :width]
    yy, xx = np.mgrid[:height, :width]
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        a = 2 * np.pi * t / 100.0
        cy, cx = height * (0.5 + 0.2 * np.sin(a)), width * (0.5 + 0.3 * np.cos(a))
        inside = ((yy - cy) / (0.15 * height)) ** 2 + ((xx - cx) / (0.1 * width)) ** 2 <= 1
        fr = bg.copy()
        fr[inside] = (230, 200, 60)
        out[t] = fr
    return out


def object_point(height: int, width: int) -> np.ndarray:
    """The object's centre on frame 0 (x, y), see ``synthetic_clip``."""
    return np.array([[width * 0.8, height * 0.5]], np.float32)


def marks(frames: int) -> dict:
    """Frame windows whose median time is reported: 8..12 and the last five frames."""
    early = [t for t in range(8, 13) if 0 < t < frames]
    late = list(range(max(1, frames - 5), frames))
    return {"frame 10": early, f"frame {frames}": late}


def measure(name: str, steps: Iterator, frames: int) -> dict:
    """Time each ``next(steps)`` (frame 0 = the prompted frame, not counted) and record RSS."""
    windows = marks(frames)
    times: List[float] = []
    rss = {}
    for t in range(frames):
        t0 = time.perf_counter()
        next(steps)
        times.append(time.perf_counter() - t0)
        for label, idx in windows.items():
            if idx and t == idx[-1]:
                rss[label] = (rss_mib("VmRSS"), rss_mib("VmHWM"))
    res = {"name": name, "frames": frames, "points": {}}
    for label, idx in windows.items():
        if idx:
            res["points"][label] = (float(np.median([times[i] for i in idx])), idx[0], idx[-1], *rss[label])
    return res


def bench_ours(name: str, vid: np.ndarray, point: np.ndarray) -> dict:
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from parity import synth_checkpoint_file
    from samkit.registry import load_model
    from samkit.video import VideoTracker

    reset_peak_rss()
    model = load_model(name, checkpoint=synth_checkpoint_file(name, Path(tempfile.mkdtemp())))
    tr = VideoTracker(model)
    s = tr.start(vid)
    t0 = time.perf_counter()
    tr.add_prompt(s, 0, 1, points=point, labels=[1])
    prompt_s = time.perf_counter() - t0
    res = measure(f"{name} samkit", tr.propagate(s), len(vid))
    res["prompt_s"] = prompt_s
    return res


def bench_official(name: str, vid: np.ndarray, point: np.ndarray) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from video_oracle import official_propagation

    reset_peak_rss()
    t0 = time.perf_counter()
    steps = official_propagation(name, vid, point, np.array([1], np.int32))  # loads frames + prompts frame 0
    setup_s = time.perf_counter() - t0

    def stepped():
        while True:
            with torch.inference_mode():  # as tests/test_video_oracle.py drives it
                item = next(steps)
            yield item

    res = measure(f"{name} official sam2", stepped(), len(vid))
    res["prompt_s"] = setup_s
    return res


def report(res: dict) -> str:
    lines = [f"{res['name']}: prompt/setup {res['prompt_s']:.2f} s"]
    for label, (med, a, b, rss, hwm) in res["points"].items():
        lines.append(f"  {label:>10s} (median of frames {a}..{b}): {med:7.3f} s per tracked frame, "
                     f"RSS {rss:6.0f} MiB, peak RSS {hwm:6.0f} MiB")
    return "\n".join(lines)


def bench_tracked(models: List[str], frames: int, size: tuple, official: bool) -> List[dict]:
    vid = synthetic_clip(frames, *size)
    point = object_point(*size)
    print(f"{frames} frames of {size[1]}x{size[0]}, one object (point prompt on frame 0), "
          f"torch threads {torch.get_num_threads()}", flush=True)
    results = []
    for name in models:
        results.append(bench_ours(name, vid, point))
        print(report(results[-1]), flush=True)
    if official:
        for name in models:
            if name in OFFICIAL:
                results.append(bench_official(name, vid, point))
                print(report(results[-1]), flush=True)
        ours = {r["name"].split()[0]: r for r in results if r["name"].endswith("samkit")}
        for r in results:
            if r["name"].endswith("official sam2"):
                mine = ours[r["name"].split()[0]]
                ratio = ", ".join(f"{label} {r['points'][label][0] / mine['points'][label][0]:.2f}x"
                                  for label in r["points"])
                print(f"{r['name'].split()[0]}: official / samkit per-frame time: {ratio}", flush=True)
    return results


def bench_tiny(frames: int, size: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))  # the tiny model is a test double (tests/_tiny_video.py)
    from samkit.video import VideoTracker
    from _tiny_video import build_tiny_video_model

    model = build_tiny_video_model(64, 32)
    rng = np.random.default_rng(0)
    base = (rng.random((16, size, size, 3)) * 255).astype(np.uint8)
    stream = (base[i % 16] for i in itertools.count())
    tr = VideoTracker(model)
    s = tr.start(stream)
    tr.add_prompt(s, 0, 1, points=[[size / 2, size / 2]], labels=[1])
    tr.add_prompt(s, 0, 2, box=[2, 2, size / 2, size / 2])
    at = {min(100, frames), frames}
    window: List[float] = []
    t_prev = time.perf_counter()
    print(f"tiny model, 2 objects, {size}x{size} frames, torch threads {torch.get_num_threads()}")
    for f, _ in tr.propagate(s, max_frames=frames):
        now = time.perf_counter()
        window = (window + [now - t_prev])[-50:]
        t_prev = now
        if f + 1 in at:
            print(f"  frame {f + 1:5d}: RSS {rss_mib():7.1f} MiB  memory entries {s.memory_entries():3d}  "
                  f"tensors {s.memory_tensors():3d}  per-frame {1000 * np.mean(window):6.2f} ms (last 50)")


def main(argv: Optional[List[str]] = None) -> List[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=200, help="frames tracked per model (0: skip)")
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    ap.add_argument("--official", dest="official", action="store_true", default=True)
    ap.add_argument("--no-official", dest="official", action="store_false")
    ap.add_argument("--tiny-frames", type=int, default=0, help="frames of the tiny streaming run (0: skip)")
    ap.add_argument("--tiny-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: keep torch's)")
    ap.add_argument("--objects", type=int, nargs="*", default=[], help="object counts of part 3, e.g. 1 2 4 8")
    ap.add_argument("--object-models", nargs="+", default=["edgetam", "sam2.1_hiera_t"])
    ap.add_argument("--stage-models", nargs="*", default=[], help="models of part 4 ('all': every video variant)")
    ap.add_argument("--davis", default=str(ROOT.parent / "shared" / "data" / "davis"), help="DAVIS root folder")
    ap.add_argument("--sequence", default="bmx-trees")
    ap.add_argument("--clip-frames", type=int, default=8, help="frames of the DAVIS clip of parts 3 and 4")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.tiny_frames > 0:
        bench_tiny(a.tiny_frames, a.tiny_size)
    results = []
    if a.frames > 0:
        results = bench_tracked(a.models, a.frames, tuple(a.size), a.official)
    if a.objects or a.stage_models:
        results += bench_stages(a)
    return results


def bench_stages(a) -> List[dict]:
    """Parts 3 and 4 (``benchmarks/video_stages.py``)."""
    import video_stages as vs

    frames, box = vs.davis_frames(Path(a.davis), a.sequence, a.clip_frames)
    if len(frames) < 4:
        raise SystemExit(f"the clip needs at least 4 frames, {a.davis}/{a.sequence} gave {len(frames)}")
    rate = vs.gemm_rate()
    print(f"DAVIS {a.sequence}, {len(frames)} frames; fp32 GEMM rate {rate / 1e9:.0f} GFLOP/s; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    out = []
    if a.objects:
        out += vs.objects_table(a.object_models, a.objects, frames, box, rate)
    if a.stage_models:
        models = vs.VARIANTS if a.stage_models == ["all"] else a.stage_models
        out += vs.stage_fps_table(models, frames, box, rate)
    return out


if __name__ == "__main__":
    main()
