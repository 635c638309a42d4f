"""Per-stage time and FLOP floor of video tracking (``bench_video.py --objects`` / ``--stage-models``).

Each tracked frame of a SAM 2-family tracker runs four stages: the image encoder (once per
frame), the memory attention, the mask decoder and the memory encoder (per object; batched over
objects by ``VideoTracker(object_batch=N)``, one object at a time with ``object_batch=1``).
``StageMeter`` wraps the model's ``forward_image``, ``memory_attention`` (and its ``prefix``),
``forward_sam_heads``, the memory encoder's ``project`` and the engine's ``encode_memory`` to time
them, and once per run counts their FLOPs on the last
frame again (the engine is stateless, so re-running a frame's step reads the same memory):
``torch.utils.flop_counter.FlopCounterMode`` for everything but scaled-dot-product attention,
which it does not count on CPU; those calls are counted by hand, ``2 Lq Lk d`` for ``q k^T``
plus ``2 Lq Lk d`` for ``attn v`` per batch and head. The floor of a stage is its FLOPs at this
machine's fp32 GEMM rate, measured in the same run (``gemm_rate``).
"""
from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("image encoder", "memory attention", "mask decoder", "memory encoder")
SHORT = {"image encoder": "enc", "memory attention": "mem-attn", "mask decoder": "dec", "memory encoder": "mem-enc"}
VARIANTS = ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "edgetam", "efficienttam_ti",
            "efficienttam_ti_1", "efficienttam_ti_2", "efficienttam_ti_512", "efficienttam_s", "efficienttam_s_1",
            "efficienttam_s_2", "efficienttam_s_512"]

_SDPA_FLOPS = [0.0]


def _counted_sdpa(orig):
    def sdpa(query, key, value, *args, **kwargs):
        batch = math.prod(torch.broadcast_shapes(query.shape[:-2], key.shape[:-2]))
        lq, lk = query.shape[-2], key.shape[-2]
        _SDPA_FLOPS[0] += 2.0 * batch * lq * lk * query.shape[-1] + 2.0 * batch * lq * lk * value.shape[-1]
        return orig(query, key, value, *args, **kwargs)
    return sdpa


def gemm_rate(n: int = 2048, runs: int = 5) -> float:
    """This machine's fp32 matrix-product rate (FLOP/s): the best of ``runs`` n x n products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(runs))
    return 2.0 * n ** 3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class StageMeter:
    """Times (or, with ``counting``, counts the FLOPs of) the four stages of a ``VideoTracker``."""

    def __init__(self, tracker) -> None:
        self.engine = tracker.engine
        self.model = tracker.engine.model
        self.times: Dict[str, float] = defaultdict(float)
        self.flops: Dict[str, float] = defaultdict(float)
        self.counting = False
        self._inside = False

    def _wrap(self, stage: str, fn):
        def run(*args, **kwargs):
            if self._inside:  # a wrapped call inside another (memory_attention.forward -> prefix)
                return fn(*args, **kwargs)
            self._inside = True
            try:
                return measured(*args, **kwargs)
            finally:
                self._inside = False

        def measured(*args, **kwargs):
            if self.counting:
                from torch.utils.flop_counter import FlopCounterMode

                before = _SDPA_FLOPS[0]
                with FlopCounterMode(display=False) as fc:
                    out = fn(*args, **kwargs)
                self.flops[stage] += fc.get_total_flops() + _SDPA_FLOPS[0] - before
                return out
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.times[stage] += time.perf_counter() - t0
            return out
        return run

    def __enter__(self) -> "StageMeter":
        m, ma = self.model, self.model.memory_attention
        m.forward_image = self._wrap("image encoder", m.forward_image)
        m.forward_sam_heads = self._wrap("mask decoder", m.forward_sam_heads)
        ma.forward = self._wrap("memory attention", ma.forward)
        ma.prefix = self._wrap("memory attention", ma.prefix)  # once per frame for all objects
        self.engine.encode_memory = self._wrap("memory encoder", self.engine.encode_memory)
        me = m.memory_encoder  # its projection of the frame: once per frame for all objects
        me.project = self._wrap("memory encoder", me.project)
        return self

    def __exit__(self, *exc) -> None:
        for obj, name in ((self.model, "forward_image"), (self.model, "forward_sam_heads"),
                          (self.model.memory_attention, "forward"), (self.model.memory_attention, "prefix"),
                          (self.engine, "encode_memory"), (self.model.memory_encoder, "project")):
            obj.__dict__.pop(name, None)

    @contextlib.contextmanager
    def count(self):
        """FLOP counting instead of timing (scaled-dot-product attention counted by hand)."""
        orig = F.scaled_dot_product_attention
        F.scaled_dot_product_attention = _counted_sdpa(orig)
        self.counting = True
        try:
            yield self
        finally:
            self.counting = False
            F.scaled_dot_product_attention = orig


def load_synth(name: str):
    """``name`` on the synthesized parity weights; a variant without its own manifest (the
    ``*_512`` inputs, EfficientTAM-S pooled memory) takes its base model's weights, whose
    tensors have the same shapes. None when neither loads."""
    sys.path.insert(0, str(ROOT / "tests"))
    from parity import manifest, synth_checkpoint_file
    from samkit.registry import load_model

    folder = Path(tempfile.gettempdir()) / "samkit_bench"
    folder.mkdir(exist_ok=True)
    bases = [name] + [name[: -len(s)] for s in ("_512", "_1", "_2") if name.endswith(s)]
    for base in bases:
        try:
            manifest(base)
        except (OSError, ValueError):
            continue
        try:
            return load_model(name, checkpoint=synth_checkpoint_file(base, folder))
        except Exception as exc:  # a base whose tensors do not fit: try the next one
            print(f"  ({name} on {base}'s weights failed: {type(exc).__name__}: {exc})", flush=True)
    return None


def object_boxes(height: int, width: int, first_box: Sequence[float], n: int) -> List[List[float]]:
    """``n`` box prompts: the ground-truth box of frame 0, then boxes of a quarter of the frame's
    sides centred on a 3 x 3 grid (different objects with different memories)."""
    boxes = [list(map(float, first_box))]
    bw, bh = width / 4, height / 4
    for i in range(n - 1):
        gy, gx = divmod(i % 9, 3)
        cx, cy = width * (gx + 0.5) / 3 + (i // 9) * 7, height * (gy + 0.5) / 3 + (i // 9) * 5
        boxes.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    return boxes


def _prompted(tr, frames: np.ndarray, boxes: List[List[float]]):
    """A session of ``tr`` on ``frames`` with one object per box prompted on frame 0."""
    s = tr.start(frames)
    for i, box in enumerate(boxes):
        tr.add_prompt(s, 0, i + 1, box=box)
    return s


def _count_last_frame(meter: "StageMeter", tr, s, object_batch: int) -> Dict[str, float]:
    """Each stage's FLOPs of the session's last frame, re-run (the engine is stateless)."""
    meter.flops.clear()
    t = s.num_frames - 1
    s.features.pop(t, None)
    with meter.count():
        feats = tr._features(s, t)
        tracks = list(s.objects.values())
        if object_batch > 1 and len(tracks) > 1:
            tr.engine.step_many(s, tracks, feats, t, False, max_batch=object_batch)
        else:
            for track in tracks:
                tr.engine.step(s, track, feats, t, False, False)
    return {st: float(meter.flops.get(st, 0.0)) for st in STAGES}


def track_stages(model, frames: np.ndarray, boxes: List[List[float]], object_batch, tail: int = 3):
    """Prompt one object per box on frame 0 and propagate; returns the median over the last
    ``tail`` frames of the per-frame time and of each stage's time, and each stage's FLOPs
    on the last frame (counted by re-running it). ``object_batch`` a list of values: one session
    each, stepped in turn frame by frame (a busy machine slows them alike), one result each."""
    from samkit.video import VideoTracker

    batches = list(object_batch) if isinstance(object_batch, (list, tuple)) else [object_batch]
    model.requires_grad_(False)  # FlopCounterMode's module hooks fail on parameters that want gradients
    trackers = [VideoTracker(model, object_batch=b) for b in batches]
    for tr in trackers[1:]:
        tr.engine = trackers[0].engine  # the engine is stateless: one (the meter wraps it) for all
    sessions = [_prompted(tr, frames, boxes) for tr in trackers]
    rows: List[list] = [[] for _ in batches]
    out = []
    with StageMeter(trackers[0]) as meter:
        its = [tr.propagate(s, start=1) for tr, s in zip(trackers, sessions)]
        for _ in range(1, len(frames)):
            for k, it in enumerate(its):
                meter.times.clear()
                dt = _timed(lambda: next(it))
                rows[k].append((dt, dict(meter.times)))
        for k, (tr, s, b) in enumerate(zip(trackers, sessions, batches)):
            flops = _count_last_frame(meter, tr, s, b)
            s.close()
            last = rows[k][-tail:]
            out.append({"frame_s": float(np.median([r[0] for r in last])),
                        "stage_s": {st: float(np.median([r[1].get(st, 0.0) for r in last])) for st in STAGES},
                        "flops": flops, "frames": len(frames)})
    return out if isinstance(object_batch, (list, tuple)) else out[0]


def _stage_cells(res: dict, rate: float) -> str:
    cells = []
    for st in STAGES:
        t, fl = res["stage_s"][st], res["flops"][st]
        cells.append(f"{t:7.3f} s / {fl / 1e9:7.1f} GF / floor {fl / rate:6.3f} s")
    return " | ".join(cells)


def objects_table(models: Sequence[str], objects: Sequence[int], frames: np.ndarray, first_box, rate: float,
                  modes: Sequence[str] = ("batched", "one-at-a-time")) -> List[dict]:
    """Per-frame time for each object count, batched and one at a time (the two sessions
    stepped in turn, frame by frame), beside each stage's time, FLOPs and floor; then the ratios
    within this run."""
    h, w = frames.shape[1:3]
    results = []
    print(f"\nmany objects: {len(frames)} frames of {w}x{h}, N objects prompted with boxes on frame 0, "
          f"median of the last frames; per stage: time / GFLOP / floor at the GEMM rate "
          f"({rate / 1e9:.0f} GFLOP/s)", flush=True)
    print("  model             N  mode           s/frame  FLOP floor | " + " | ".join(STAGES), flush=True)
    for name in models:
        model = load_synth(name)
        if model is None:
            print(f"  {name}: no synthesized weights (skipped)", flush=True)
            continue
        for n in objects:
            boxes = object_boxes(h, w, first_box, n)
            run = [m for m in modes if n > 1 or m == modes[0]]  # one object: both modes run the same code
            got = track_stages(model, frames, boxes, [8 if m == "batched" else 1 for m in run])
            for mode, res in zip(run, got):
                res.update(name=name, objects=n, mode=mode)
                results.append(res)
                floor = sum(res["flops"].values()) / rate
                print(f"  {name:16s} {n:2d}  {mode:13s} {res['frame_s']:8.3f} {floor:8.3f} s | "
                      f"{_stage_cells(res, rate)}", flush=True)
        del model
    _ratios(results)
    return results


def _ratios(results: List[dict]) -> None:
    by = {(r["name"], r["objects"], r["mode"]): r for r in results}
    for name in dict.fromkeys(r["name"] for r in results):
        one = by.get((name, 1, "batched"))
        parts = []
        for n in sorted({r["objects"] for r in results if r["name"] == name and r["objects"] > 1}):
            b, s = by.get((name, n, "batched")), by.get((name, n, "one-at-a-time"))
            if b and s:
                txt = f"N={n}: batched/one-at-a-time {b['frame_s'] / s['frame_s']:.2f}"
                if one:
                    txt += f", N/1 object: batched {b['frame_s'] / one['frame_s']:.2f}x, " \
                           f"one-at-a-time {s['frame_s'] / one['frame_s']:.2f}x"
                parts.append(txt)
        if parts:
            print(f"  {name} (ratios within this run): " + "; ".join(parts), flush=True)


def stage_fps_table(models: Sequence[str], frames: np.ndarray, first_box, rate: float) -> List[dict]:
    """One object per variant: each stage's frames per second (1 / its time per frame), the
    whole frame's FPS and the share of the GEMM rate each stage reaches; names the fastest."""
    print(f"\nper-stage FPS, one object, {len(frames)} frames (GEMM rate {rate / 1e9:.0f} GFLOP/s; "
          f"per stage: FPS / achieved share of the GEMM rate)", flush=True)
    print("  model                 frame FPS  s/frame | " + " | ".join(f"{SHORT[s]:>16s}" for s in STAGES), flush=True)
    results = []
    for name in models:
        model = load_synth(name)
        if model is None:
            print(f"  {name:20s} no synthesized weights (skipped)", flush=True)
            continue
        res = track_stages(model, frames, [first_box], 1)
        res["name"] = name
        results.append(res)
        cells = []
        for st in STAGES:
            t, fl = res["stage_s"][st], res["flops"][st]
            cells.append(f"{1 / t if t > 0 else float('inf'):7.2f} / {fl / t / rate if t > 0 else 0:5.0%}")
        print(f"  {name:20s} {1 / res['frame_s']:9.3f} {res['frame_s']:8.3f} | " + " | ".join(f"{c:>16s}" for c in cells),
              flush=True)
        del model
    if results:
        best = min(results, key=lambda r: r["frame_s"])
        print(f"  fastest CPU tracker here: {best['name']} at {1 / best['frame_s']:.2f} FPS "
              f"({best['frame_s']:.3f} s per frame, one object)", flush=True)
    return results


def davis_frames(root: Path, sequence: str, frames: int):
    """(frames x H x W x 3 uint8, ground-truth box of frame 0) of a DAVIS sequence."""
    from bench_onnx_video import davis_clip

    return davis_clip(Path(root), sequence, frames)
