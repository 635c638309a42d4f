"""Click latency: one point -> full-resolution mask on a 1200 x 1800 image, per family.

    python benchmarks/bench_click.py [--models sam_vit_b ...] [--runs 20] [--size 1200 1800] [--no-onnx]
                                     [--batch N]

Columns (medians, calls interleaved, same process, synthesized weights as ``bench_image``):
``before``: ``ImagePredictor.predict`` on the decoder path before the click-latency rewrites
(``MaskDecoder.prune_tokens = False``: the final attention for every token;
``samkit.heads.upscale.GATHER_REORDER = False``: the 8-d permute into raster order;
``MaskDecoder.factored = False``; ``samkit.models.base.BANDED_POSTPROCESS = False``;
``MaskDecoder.merge_repeats = False``); ``last stop``: only the latest rewrite off
(``merge_repeats``: repeated prompt tokens, EfficientSAM's 5 padding points, run once); ``after``:
today's path (two smaller exact rewrites have no switch and run in both columns: the embedding +
dense sum skipped when the first block is cached, the residual starting the image->token GEMM's
accumulator; SAM 2's lazy multimask tokens follow ``prune_tokens``); ``official``: the official
predictor where ``bench_image`` has one. ``same``: whether before and after give identical
full-resolution masks (else how many pixels differ: float noise at logits ~ 0) and the largest
low-res logit difference. ONNX: the per-click graph ``prompt_decoder_fast``
(``samkit.export.fast_decoder``) traced before / last stop / after, in onnxruntime on the CPU with 2 threads
(the page's wasm build runs the same graph), one click on the image's ``decoder_image`` outputs.

``--batch N`` adds a table: ``ImagePredictor.predict_batch`` of N one-point prompts with three
masks each (what the everything generator decodes per chunk), last stop vs after.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import bench_image  # noqa: E402  (same folder)

DEFAULT_MODELS = ["sam_vit_b", "mobile_sam", "edge_sam", "efficient_sam_vitt", "sam2.1_hiera_t", "edgetam",
                  "efficienttam_ti"]


@contextlib.contextmanager
def before_rewrites(model, stop: str = "first"):
    """The decoder path before the click-latency rewrites (same results, more work).
    ``stop="first"``: before all of them; ``"second"``: before the latest only (repeated prompt
    tokens merged)."""
    from samkit.heads import upscale
    from samkit.models import base

    dec = model.mask_decoder
    saved = dec.prune_tokens, upscale.GATHER_REORDER, dec.factored, base.BANDED_POSTPROCESS, dec.merge_repeats
    if stop == "first":
        dec.prune_tokens, upscale.GATHER_REORDER, dec.factored, base.BANDED_POSTPROCESS = False, False, False, False
    dec.merge_repeats = False
    try:
        yield
    finally:
        dec.prune_tokens, upscale.GATHER_REORDER, dec.factored, base.BANDED_POSTPROCESS, dec.merge_repeats = saved


def _torch_times(name, model, image, point, label, warmup, runs):
    from samkit import ImagePredictor

    pred = ImagePredictor(model, selection="native").set_image(image)

    def old():
        with before_rewrites(model):
            return pred.predict(points=point, labels=label, multimask=False)

    def mid():
        with before_rewrites(model, "second"):
            return pred.predict(points=point, labels=label, multimask=False)

    def new():
        return pred.predict(points=point, labels=label, multimask=False)

    a, b = old(), new()
    same = int((a.masks != b.masks).sum())  # pixels that differ (|logit| ~ 0 only: float noise)
    diff = float(np.abs(a.low_res_logits - b.low_res_logits).max())
    fns = [old, mid, new]
    try:
        official = bench_image._official_predictor(name)
    except Exception as exc:  # noqa: BLE001 - optional oracle
        print(f"  (official {name} unavailable: {exc})")
        official = None
    if official is not None and hasattr(official, "predict"):
        official.set_image(image)
        fns.append(lambda: official.predict(point_coords=point, point_labels=label, multimask_output=False))
    t = bench_image.interleaved(fns, warmup, runs)
    return pred, {"before_ms": 1e3 * t[0], "mid_ms": 1e3 * t[1], "after_ms": 1e3 * t[2],
                  "official_ms": 1e3 * t[3] if len(t) > 3 else None, "same": same, "max_logit_diff": diff}


def _onnx_graphs(model, features, tmp: Path):
    """(decoder_image session, {"before": session, "after": session}, first-layer feeds, high-res feeds)."""
    from samkit.export import fast_decoder as fd
    from samkit.export.graphs import layout_of
    from samkit.export.onnx_io import ort_session, trace_to_onnx

    layout = layout_of(model)
    image = fd.DecoderImageGraph(model, layout).eval()
    with torch.inference_mode():
        first = [t.clone() for t in image(features.embed)]
    high = {}
    if layout == "sam2" and model.use_high_res_features:
        high = {"high_res_feats_0": features.high_res[0], "high_res_feats_1": features.high_res[1]}
    graph = fd.FastDecoderGraph(model, layout).eval()
    axes = {"point_coords": {0: "num_prompts", 1: "num_points"}, "point_labels": {0: "num_prompts", 1: "num_points"},
            "low_res_masks": {0: "num_prompts"}, "iou_predictions": {0: "num_prompts"}}
    coords, labels = _click(layout, 512.0, 400.0)
    inputs = dict(zip(fd.FIRST_LAYER, first), **high, point_coords=torch.from_numpy(coords),
                  point_labels=torch.from_numpy(labels))
    sessions = {}
    for variant in ("before", "mid", "after"):
        ctx = {"before": lambda: before_rewrites(model), "mid": lambda: before_rewrites(model, "second"),
               "after": contextlib.nullcontext}[variant]()
        with ctx:
            proto = trace_to_onnx(graph, tuple(inputs.values()), tmp, input_names=list(inputs),
                                  output_names=fd.FAST_OUTPUTS, dynamic_axes=axes, opset=17,
                                  what="the per-click decoder", fix="-")
        sessions[variant] = ort_session(proto.SerializeToString(), threads=2)
    feeds = {k: v.numpy() for k, v in inputs.items()}
    return layout, sessions, feeds


def _click(layout: str, x: float, y: float):
    """One positive click in the model frame, padded as the layout's decoder graphs want."""
    if layout == "sam":
        return np.array([[[x, y], [0.0, 0.0]]], np.float32), np.array([[1.0, -1.0]], np.float32)
    return np.array([[[x, y]]], np.float32), np.array([[1.0]], np.float32)


def _onnx_times(model, features, warmup, runs):
    with tempfile.TemporaryDirectory() as tmp:
        _, sessions, feeds = _onnx_graphs(model, features, Path(tmp))
    a = sessions["before"].run(None, feeds)
    b = sessions["after"].run(None, feeds)
    diff = float(np.abs(a[0] - b[0]).max())
    fns = [lambda s=s: s.run(None, feeds) for s in (sessions["before"], sessions["mid"], sessions["after"])]
    t = bench_image.interleaved(fns, warmup, runs)
    return {"onnx_before_ms": 1e3 * t[0], "onnx_mid_ms": 1e3 * t[1], "onnx_after_ms": 1e3 * t[2],
            "onnx_max_diff": diff}


def bench_model(name, image, warmup, runs, onnx: bool) -> dict:
    model = bench_image._ours(name)
    h, w = image.shape[:2]
    point = np.array([[w * 0.4, h * 0.55]], np.float32)
    label = np.array([1], np.int32)
    pred, row = _torch_times(name, model, image, point, label, warmup, runs)
    row["model"] = name
    if onnx:
        try:
            row.update(_onnx_times(model, pred.features, warmup, runs))
        except Exception as exc:  # noqa: BLE001 - onnx / onnxruntime are extras
            print(f"  (ONNX {name} skipped: {type(exc).__name__}: {exc})")
    return row


def batch_row(name, image, prompts: int, warmup: int, runs: int) -> dict:
    """``predict_batch`` of ``prompts`` one-point prompts (three masks each): last stop vs after."""
    from samkit import ImagePredictor

    model = bench_image._ours(name)
    pred = ImagePredictor(model, selection="native").set_image(image)
    h, w = image.shape[:2]
    g = np.random.default_rng(0)
    pts = np.stack([g.uniform(0, w, prompts), g.uniform(0, h, prompts)], 1)[:, None].astype(np.float32)
    lab = np.ones((prompts, 1), np.int32)

    def mid():
        with before_rewrites(model, "second"):
            return pred.predict_batch(points=pts, labels=lab, multimask=True)

    def new():
        return pred.predict_batch(points=pts, labels=lab, multimask=True)

    diff = max(float(np.abs(a.low_res_logits - b.low_res_logits).max()) for a, b in zip(mid(), new()))
    t = bench_image.interleaved([mid, new], warmup, runs)
    return {"model": name, "prompts": prompts, "mid_ms": 1e3 * t[0], "after_ms": 1e3 * t[1], "diff": diff}


def format_batch(rows) -> str:
    lines = ["| model | prompts | last stop ms | after ms | after/last stop | max logit diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['prompts']} | {r['mid_ms']:.0f} | {r['after_ms']:.0f} | "
              f"{r['after_ms'] / r['mid_ms']:.2f} | {r['diff']:.1e} |" for r in rows]
    return "\n".join(lines)


def format_rows(rows) -> str:
    def num(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b else "-"

    lines = ["| model | before ms | last stop ms | after ms | after/before | after/last stop | official ms | "
             "after/official | same masks (pixels differing, max logit diff) | ONNX click before ms | last stop ms | "
             "after ms | after/before | after/last stop |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {num(r['before_ms'])} | {num(r['mid_ms'])} | {num(r['after_ms'])} | "
                     f"{ratio(r['after_ms'], r['before_ms'])} | {ratio(r['after_ms'], r['mid_ms'])} | "
                     f"{num(r['official_ms'])} | "
                     f"{ratio(r['after_ms'], r['official_ms'])} | {'yes' if not r['same'] else r['same']} "
                     f"({r['max_logit_diff']:.1e}) | {num(r.get('onnx_before_ms'))} | {num(r.get('onnx_mid_ms'))} | "
                     f"{num(r.get('onnx_after_ms'))} | {ratio(r.get('onnx_after_ms'), r.get('onnx_before_ms'))} | "
                     f"{ratio(r.get('onnx_after_ms'), r.get('onnx_mid_ms'))} |")
    return "\n".join(lines)


def run(models=None, warmup: int = 2, runs: int = 20, image_size=(1200, 1800), onnx: bool = True,
        batch: int = 0) -> str:
    from PIL import Image

    from samkit.io import example_image_path

    img = Image.open(example_image_path()).convert("RGB").resize((image_size[1], image_size[0]), Image.BICUBIC)
    image = np.asarray(img)
    rows, batches = [], []
    for name in models or DEFAULT_MODELS:
        t0 = time.perf_counter()
        rows.append(bench_model(name, image, warmup, runs, onnx))
        print(format_rows(rows[-1:]).splitlines()[-1] + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if batch:
            batches.append(batch_row(name, image, batch, 1, max(3, runs // 4)))
            print(format_batch(batches[-1:]).splitlines()[-1], flush=True)
    return format_rows(rows) + ("\n\n" + format_batch(batches) if batches else "")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--size", type=int, nargs=2, default=(1200, 1800), metavar=("H", "W"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--batch", type=int, default=0, help="also time predict_batch of N one-point prompts")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(run(args.models, args.warmup, args.runs, tuple(args.size), not args.no_onnx, args.batch))


if __name__ == "__main__":
    main()
