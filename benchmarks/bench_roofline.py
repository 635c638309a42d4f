"""Roofline per stage: FLOPs, time, achieved GFLOP/s and the share of this machine's fp32 GEMM rate.

    python benchmarks/bench_roofline.py [--quick] [--runs 5] [--warmup 1] [--threads N]

1. The machine's fp32 GEMM rate is measured in the same run: ``torch.matmul`` of large square
   matrices and of SAM-shaped ones (ViT-B qkv / MLP over 64 x 64 tokens, a Hiera-T stage-1 MLP,
   a memory-attention score matrix), best of several calls each, with the benchmark's thread
   count. The best of these is the "GEMM rate" the stages are compared with.
2. Each stage's FLOPs are counted once with ``torch.utils.flop_counter.FlopCounterMode``
   (convolutions, linears, matmuls) plus the attention of every
   ``F.scaled_dot_product_attention`` call counted by hand: ``FlopCounterMode`` does not count
   the CPU SDPA kernel, so ``2 * Lq * Lk * d`` (q @ k^T) ``+ 2 * Lq * Lk * d_v`` (attn @ v) per
   batch and head are added for each call, less whatever the counter saw inside that call (a
   call that falls back to the math path is counted once, not twice). The counter is also told
   the products it does not know (in-place ``baddbmm_`` / ``addmm_``, oneDNN's fused linear). A
   FLOP is one multiply or one add (a multiply-add is 2), as ``FlopCounterMode`` counts.
3. Each stage is timed (median of ``--runs`` after ``--warmup``, ``torch.inference_mode``).

Stages (synthesized parity weights, as bench_image.py; values do not change the work):

* ``encoder``: ``model.encode`` of the bundled image resized to 1200 x 1800, per family;
* ``point->mask``: ``ImagePredictor.predict`` of one point, full-resolution mask (per prompt);
* ``mem-attn`` / ``mem-enc``: memory attention and memory encoder of one frame of one object,
  with a tracker state holding ``--memories`` tracked frames (SAM 2.1-T, EdgeTAM, EfficientTAM-Ti);
* ``everything``: ``AutoMaskGenerator``'s work on one batch of 64 grid points (decoder with
  three masks per point, upscaling, filters) on SAM ViT-B, reported per point.

No numbers are asserted anywhere; timings on a busy machine are only comparable within one run.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

IMAGE_MODELS = ["sam_vit_b", "mobile_sam", "edge_sam", "efficient_sam_vitt", "sam2.1_hiera_t", "edgetam",
                "efficienttam_ti"]
VIDEO_MODELS = ["sam2.1_hiera_t", "edgetam", "efficienttam_ti"]
QUICK_IMAGE = ["mobile_sam", "edgetam"]
QUICK_VIDEO = ["edgetam"]

#: (label, m, k, n): C[m x n] = A[m x k] @ B[k x n]
GEMM_SHAPES = [("square 2048", 2048, 2048, 2048), ("square 4096", 4096, 4096, 4096),
               ("ViT-B qkv 4096x768x2304", 4096, 768, 2304), ("ViT-B MLP 4096x768x3072", 4096, 768, 3072),
               ("Hiera-T MLP 65536x96x384", 65536, 96, 384), ("mem-attn scores 4096x32x4096", 4096, 32, 4096)]
QUICK_GEMM = [GEMM_SHAPES[0], GEMM_SHAPES[3]]


# ----------------------------------------------------------------------------- GEMM rate
def gemm_rate(shapes, repeats: int = 5) -> List[Tuple[str, float]]:
    """[(label, best GFLOP/s)] of ``torch.matmul`` for each (label, m, k, n); 2*m*k*n FLOPs."""
    out = []
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for label, m, k, n in shapes:
            a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            c = torch.empty(m, n)
            torch.matmul(a, b, out=c)  # warm-up
            best = min(_timed(lambda: torch.matmul(a, b, out=c)) for _ in range(repeats))
            out.append((label, 2.0 * m * k * n / best / 1e9))
    return out


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- FLOP counting
def sdpa_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> int:
    """Matmul FLOPs of softmax(q k^T) v: q ... x Lq x d, k ... x Lk x d, v ... x Lk x dv."""
    batch = 1
    for s in torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2]):
        batch *= int(s)
    lq, lk, d, dv = q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]
    return 2 * batch * lq * lk * d + 2 * batch * lq * lk * dv


class _AttentionByHand(TorchFunctionMode):
    """Adds the attention FLOPs of ``F.scaled_dot_product_attention`` calls that ``counter``
    does not see (the CPU kernel); ``self.flops`` holds the sum, ``self.calls`` the count."""

    def __init__(self, counter: FlopCounterMode) -> None:
        super().__init__()
        self.counter, self.flops, self.calls = counter, 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        before = self.counter.get_total_flops()
        out = func(*args, **kwargs)
        seen = self.counter.get_total_flops() - before
        q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")[len(args):]])[:3]
        self.flops += max(0, sdpa_flops(q, k, v) - seen)
        self.calls += 1
        return out


def _linear_pointwise_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's fused linear (``x @ w.T`` + bias, epilogue): 2 M N K."""
    return 2 * math.prod(x_shape[:-1]) * int(x_shape[-1]) * int(w_shape[0])


def _product_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``addmm_`` / ``baddbmm_``: ``self += a @ b`` -> 2 (B) M N K."""
    return 2 * math.prod(a_shape) * int(b_shape[-1])


def _uncounted_products() -> dict:
    """Products ``FlopCounterMode`` does not know: the in-place ``baddbmm_`` / ``addmm_`` (the
    decoder accumulates into its own temporaries) and oneDNN's fused linear (the upscaling)."""
    aten = torch.ops.aten
    mapping = {aten.baddbmm_: _product_flop, aten.addmm_: _product_flop}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        mapping[torch.ops.mkldnn._linear_pointwise] = _linear_pointwise_flop
    return mapping


def count_flops(fn: Callable[[], object]) -> Tuple[float, float, int]:
    """(counted GFLOP, hand-counted attention GFLOP, SDPA calls) of one call of ``fn``."""
    with torch.inference_mode():
        with FlopCounterMode(display=False, custom_mapping=_uncounted_products()) as counter:
            with _AttentionByHand(counter) as hand:
                fn()
    return counter.get_total_flops() / 1e9, hand.flops / 1e9, hand.calls


# ----------------------------------------------------------------------------- stages
@dataclasses.dataclass
class Row:
    stage: str
    model: str
    gflop_counted: float
    gflop_attention: float
    seconds: float
    per: int = 1  # the row is reported per ``per`` items (everything mode: points)

    @property
    def gflop(self) -> float:
        return (self.gflop_counted + self.gflop_attention) / self.per

    @property
    def ms(self) -> float:
        return 1000.0 * self.seconds / self.per


def measure(stage: str, model: str, fn: Callable[[], object], warmup: int, runs: int, per: int = 1) -> Row:
    from bench_image import interleaved

    seconds = interleaved([fn], warmup, runs)[0]
    counted, attn, _ = count_flops(fn)  # after the warm-up: per-image caches are filled, as when timed
    return Row(stage, model, counted, attn, seconds, per)


def _model(name: str) -> torch.nn.Module:
    """The model with the synthesized parity weights, parameters without grad: FlopCounterMode's
    module tracker would hook grads of parameters passed as inputs (perceiver latents), which
    fails under inference mode."""
    from bench_image import _ours

    return _ours(name).requires_grad_(False)


def _image() -> np.ndarray:
    from PIL import Image

    from samkit.io import example_image_path

    img = Image.open(example_image_path()).convert("RGB").resize((1800, 1200), Image.BICUBIC)
    return np.asarray(img)


def image_stages(name: str, image: np.ndarray, warmup: int, runs: int) -> List[Row]:
    """Encoder and one point -> full-resolution mask of one image family."""
    from samkit import ImagePredictor

    model = _model(name)
    x, _ = model.preprocess(image)
    rows = [measure("encoder", name, lambda: model.encode(x), warmup, runs)]
    pred = ImagePredictor(model, selection="native")
    pred.set_image(image)
    h, w = image.shape[:2]
    point, label = np.array([[w * 0.4, h * 0.55]], np.float32), np.array([1], np.int32)
    rows.append(measure("point->mask", name, lambda: pred.predict(points=point, labels=label, multimask=False),
                        warmup + 2, runs * 4))
    return rows


def video_stages(name: str, memories: int, warmup: int, runs: int) -> List[Row]:
    """Memory attention and memory encoder of one object on one frame, after ``memories``
    tracked frames (one point on frame 0). The frames are one image, so its features are
    computed once and reused (this stage is about the memory, not the encoder)."""
    from bench_video import object_point, synthetic_clip

    from samkit.video import VideoTracker

    model = _model(name)
    frames = memories + 2
    vid = synthetic_clip(frames, 240, 427)
    tracker = VideoTracker(model)
    session = tracker.start(vid)
    first = tracker._features(session, 0)
    tracker._features = lambda s, t: dataclasses.replace(first, index=t)
    tracker.add_prompt(session, 0, 1, points=object_point(240, 427), labels=[1])
    for _ in tracker.propagate(session, max_frames=frames - 1):
        pass
    engine, track, t = tracker.engine, session.objects[1], frames - 1
    feats = tracker._features(session, t)
    last = track.entry(t - 1)
    attn = measure("mem-attn", name, lambda: engine._with_memory(session, track, feats, t, False, False),
                   warmup, runs)
    enc = measure("mem-enc", name, lambda: engine.encode_memory(session, feats, last.low_res, last.object_score, False),
                  warmup, runs)
    return [attn, enc]


def everything_stage(name: str, image: np.ndarray, warmup: int, runs: int, batch: int = 64) -> List[Row]:
    """One ``points_per_batch`` batch of AutoMaskGenerator on the image, per point; the decoder
    alone on the same batch as a second row."""
    from samkit.auto import AutoMaskGenerator

    model = _model(name)
    gen = AutoMaskGenerator(model, points_per_side=32, points_per_batch=batch, pred_iou_thresh=0.0,
                            stability_score_thresh=0.0)
    x, transform = model.preprocess(image)
    with torch.inference_mode():
        feats = model.encode(x)
    h, w = image.shape[:2]
    points = gen.point_grids[0][:batch] * np.array([[w, h]], dtype=np.float64)
    box = [0, 0, w, h]
    pts = torch.as_tensor(points, dtype=torch.float64)
    dec = measure("everything decode", name, lambda: gen._decode(feats, transform, pts, None, gen.multimask),
                  warmup, runs, per=batch)
    full = measure("everything batch", name, lambda: gen._process_batch(feats, transform, points, box, (h, w)),
                   warmup, runs, per=batch)
    return [dec, full]


# ----------------------------------------------------------------------------- report
def format_rows(rows: List[Row], rate: float) -> str:
    lines = ["| stage | model | GFLOP (counted + attention by hand) | ms | GFLOP/s | share of GEMM rate |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        per = " per point" if r.per > 1 else ""
        achieved = r.gflop / (r.ms / 1000.0) if r.ms > 0 else float("nan")
        lines.append(f"| {r.stage}{per} | {r.model} | {r.gflop:.3f} ({r.gflop_counted / r.per:.3f} + "
                     f"{r.gflop_attention / r.per:.3f}) | {r.ms:.2f} | {achieved:.1f} | "
                     f"{100 * achieved / rate:.0f} % |")
    return "\n".join(lines)


def format_gemm(rates: List[Tuple[str, float]]) -> str:
    return "\n".join(["| GEMM (fp32 torch.matmul, best of 5) | GFLOP/s |", "|---|---|"] +
                     [f"| {label} | {g:.1f} |" for label, g in rates])


def run(quick: bool = False, warmup: int = 1, runs: int = 5, memories: int = 7,
        image_models: Optional[List[str]] = None, video_models: Optional[List[str]] = None,
        everything: str = "sam_vit_b") -> str:
    """All stages; returns the markdown tables (and prints rows as they come)."""
    rates = gemm_rate(QUICK_GEMM if quick else GEMM_SHAPES)
    rate = max(g for _, g in rates)
    head = (f"torch {torch.__version__}, {torch.get_num_threads()} threads; GEMM rate = best of the "
            f"shapes below = {rate:.1f} GFLOP/s\n\n{format_gemm(rates)}\n")
    print(head, flush=True)
    image = _image()
    rows: List[Row] = []

    def add(new: List[Row]) -> None:
        rows.extend(new)
        print("\n".join(format_rows(new, rate).splitlines()[2:]), flush=True)

    for name in image_models if image_models is not None else (QUICK_IMAGE if quick else IMAGE_MODELS):
        add(image_stages(name, image, warmup, runs))
    for name in video_models if video_models is not None else (QUICK_VIDEO if quick else VIDEO_MODELS):
        add(video_stages(name, 2 if quick else memories, warmup, runs))
    if everything:
        add(everything_stage(everything, image, warmup, runs, batch=16 if quick else 64))
    return head + "\n" + format_rows(rows, rate)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two image families, EdgeTAM video, 16-point batch")
    ap.add_argument("--image-models", nargs="*", default=None, help="default: all (--quick: two); none: skip")
    ap.add_argument("--video-models", nargs="*", default=None, help="default: all three (--quick: EdgeTAM)")
    ap.add_argument("--everything", default="sam_vit_b", help="model of the everything-mode stage ('' to skip)")
    ap.add_argument("--memories", type=int, default=7, help="tracked frames before the timed video frame")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = run(a.quick, a.warmup, a.runs, a.memories, a.image_models, a.video_models, a.everything)
    print(out)
    return out


if __name__ == "__main__":
    main()
