"""Dynamic int8 vs float32: image encoder and point decoder, torch (``samkit.quant``) and
onnxruntime (``samkit.export.quantize``), with the agreement with float32 as a plumbing check.

    python benchmarks/bench_int8.py [--models sam_vit_b mobile_sam ...] [--runs 3] [--warmup 1]
                                    [--threads N] [--no-onnxruntime]

Per family (synthesized parity weights, as bench_image.py; values do not change the work):

* encoder seconds (``1 x 3 x 1024 x 1024`` after the family's preprocessing of the bundled
  image at 1200 x 1800): torch fp32, torch int8 (``quantize="int8"``: dynamic int8 linears),
  and with onnxruntime installed the encoder exported to ONNX (``samkit.accel``) in fp32 and
  after ``quantize_dynamic`` (``samkit export --quantize int8``'s int8); calls interleaved.
* point -> full-resolution mask ms: fp32 vs the decoder's linears in int8
  (``parts=("mask_decoder",)``: all but the attention projections, which the exact fast path
  reads as matrices).
* agreement with fp32: max |embedding difference| / max |fp32 embedding| and the mean mask IoU of
  single-point masks at 9 grid points (int8 encoder; int8 encoder + decoder).

The parity weights are random: agreement here shows the int8 path runs the same pipeline, not
its quality, which needs the real weights to judge. No numbers are asserted anywhere.
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

DEFAULT_MODELS = ["sam_vit_b", "mobile_sam", "edge_sam", "efficient_sam_vitt", "sam2.1_hiera_t", "edgetam",
                  "efficienttam_ti"]


def _ort_encoders(name: str, x: torch.Tensor) -> Dict[str, Callable[[], object]]:
    """{"ort fp32": fn, "ort int8": fn} of the encoder exported once (not timed), or {} when
    onnxruntime is missing or the export fails."""
    from bench_image import _ours

    try:
        from samkit.accel import accel_info, accelerate
        from samkit.export.onnx_io import ort_session
        from samkit.export.quantize import quantize_dynamic_file

        tmp = Path(tempfile.mkdtemp(prefix="samkit-bench-int8-"))
        model = _ours(name)
        accelerate(model, backend="onnxruntime", cache_dir=tmp)
        with torch.inference_mode():
            model.image_encoder(x)  # exports
        src = accel_info(model).onnx_paths[(1,) + tuple(x.shape[1:])]
        dst = tmp / "encoder.int8.onnx"
        quantize_dynamic_file(src, dst)
        sess = ort_session(dst, threads=torch.get_num_threads())
        feed = {sess.get_inputs()[0].name: x.numpy()}
        return {"ort fp32": lambda: model.image_encoder(x), "ort int8": lambda: sess.run(None, feed)}
    except Exception as exc:  # noqa: BLE001 - onnxruntime is an optional extra
        print(f"  (onnxruntime {name} unavailable: {type(exc).__name__}: {exc})", flush=True)
        return {}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def agreement(fp32, other, image: np.ndarray, x: torch.Tensor) -> Dict[str, float]:
    """Relative max-abs embedding difference and mean single-point mask IoU at 9 grid points."""
    from samkit import ImagePredictor

    with torch.inference_mode():
        e0, e1 = fp32.encode(x).embed, other.encode(x).embed
    h, w = image.shape[:2]
    p0, p1 = ImagePredictor(fp32).set_image(image), ImagePredictor(other).set_image(image)
    ious = []
    for fy in (0.25, 0.5, 0.75):
        for fx in (0.25, 0.5, 0.75):
            pt = [[w * fx, h * fy]]
            m0 = p0.predict(points=pt, labels=[1], multimask=False).masks[0]
            m1 = p1.predict(points=pt, labels=[1], multimask=False).masks[0]
            ious.append(_iou(np.asarray(m0), np.asarray(m1)))
    return {"embed_rel_maxabs": float((e1 - e0).abs().max() / e0.abs().max()), "mask_iou": float(np.mean(ious))}


def bench_model(name: str, image: np.ndarray, warmup: int, runs: int, onnxruntime: bool) -> dict:
    from bench_image import _ours, interleaved

    from samkit import ImagePredictor
    from samkit.quant import quantize

    fp32 = _ours(name)
    enc8 = quantize(copy.deepcopy(fp32))
    dec8 = quantize(copy.deepcopy(fp32), parts=("mask_decoder",))
    both8 = quantize(copy.deepcopy(enc8), parts=("mask_decoder",))
    x, _ = fp32.preprocess(image)
    enc = {"torch fp32": lambda: fp32.encode(x), "torch int8": lambda: enc8.encode(x)}
    if onnxruntime:
        enc.update(_ort_encoders(name, x))
    t_enc = dict(zip(enc, interleaved(list(enc.values()), warmup, runs)))
    h, w = image.shape[:2]
    pt, lab = np.array([[w * 0.4, h * 0.55]], np.float32), np.array([1], np.int32)
    preds = {k: ImagePredictor(m).set_image(image) for k, m in (("fp32", fp32), ("int8 decoder", dec8))}
    t_dec = dict(zip(preds, interleaved([lambda p=p: p.predict(points=pt, labels=lab, multimask=False)
                                         for p in preds.values()], warmup + 2, runs * 4)))
    return {"model": name, "encoder_s": t_enc, "prompt_ms": {k: 1000 * v for k, v in t_dec.items()},
            "agree_int8_encoder": agreement(fp32, enc8, image, x),
            "agree_int8_encoder_decoder": agreement(fp32, both8, image, x)}


def format_rows(rows: List[dict]) -> str:
    def cell(d: dict, key: str, fmt: str) -> str:
        return format(d[key], fmt) if key in d else "-"

    lines = ["| model | enc s torch fp32 | torch int8 | int8/fp32 | ort fp32 | ort int8 | ort int8/torch fp32 | "
             "point->mask ms fp32 | int8 decoder | embed rel. max-abs (int8 enc) | mask IoU int8 enc | "
             "mask IoU int8 enc+dec |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, d = r["encoder_s"], r["prompt_ms"]
        ort_ratio = f"{e['ort int8'] / e['torch fp32']:.2f}" if "ort int8" in e else "-"
        lines.append(f"| {r['model']} | {e['torch fp32']:.3f} | {e['torch int8']:.3f} | "
                     f"{e['torch int8'] / e['torch fp32']:.2f} | {cell(e, 'ort fp32', '.3f')} | "
                     f"{cell(e, 'ort int8', '.3f')} | {ort_ratio} | {d['fp32']:.1f} | {d['int8 decoder']:.1f} | "
                     f"{r['agree_int8_encoder']['embed_rel_maxabs']:.3f} | {r['agree_int8_encoder']['mask_iou']:.3f} | "
                     f"{r['agree_int8_encoder_decoder']['mask_iou']:.3f} |")
    return "\n".join(lines)


def run(models: Optional[List[str]] = None, warmup: int = 1, runs: int = 3, onnxruntime: bool = True) -> str:
    from bench_roofline import _image

    image = _image()
    rows = []
    for name in models or DEFAULT_MODELS:
        rows.append(bench_model(name, image, warmup, runs, onnxruntime))
        print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {runs} after {warmup} "
            "warm-up; parity weights (random): agreement is a plumbing check, not quality\n\n" + format_rows(rows))


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-onnxruntime", dest="onnxruntime", action="store_false")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = run(a.models, a.warmup, a.runs, a.onnxruntime)
    print(out)
    return out


if __name__ == "__main__":
    main()
