"""ONNX export folders: speed and agreement, per family, in one run.

For every model (full size, the synthesized parity weights of ``../shared/parity``): torch
eager (samkit) vs onnxruntime float32 vs onnxruntime int8 (dynamic) vs int8-static (calibrated
on DAVIS frames that are not scored), for the image encoder and the per-prompt decoder; and
agreement of the masks (mask IoU of each precision with onnxruntime float32, and of float32 with
torch) on DAVIS frames of ``../shared/data/davis`` with prompts from the ground truth (the
object's box, and one click at its innermost pixel).

With the parity weights (random values in the official layout) the masks are not meaningful
segmentations: the agreement shows that the int8 graphs run the same pipeline, not their
quality, which needs the real weights to judge.

Usage::

    python benchmarks/bench_onnx.py [--models mobile_sam edgetam ...] [--frames 2] [--runs 3]
        [--davis ../shared/data/davis] [--results benchmarks/RESULTS.md]

The table replaces the ``## onnx`` section of ``--results`` (other sections are kept). No test
asserts a timing; ``tests/test_bench_onnx.py`` runs the script on a tiny model.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

#: int8-static calibration materialises every activation of two images: for the SAM ViTs and Hiera
#: (global attention at 1024 x 1024) that exceeds 16 GB, so they are left out of the static column
NO_STATIC = ("sam_vit_b", "sam_vit_l", "sam_vit_h", "sam2_hiera_t", "sam2_hiera_s", "sam2_hiera_b+", "sam2_hiera_l",
             "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l")
DEFAULT_MODELS = ["sam_vit_b", "mobile_sam", "edge_sam", "efficient_sam_vitt", "sam2.1_hiera_t", "edgetam",
                  "efficienttam_ti"]
PRECISIONS = ("fp32", "int8", "int8-static")


def median_time(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def davis_samples(root: Path, frames: int, offset: int = 0, step: int = 20) -> List[tuple]:
    """``frames`` frames per sequence (every ``step``-th from ``offset``): (name, image, gt mask)."""
    from samkit.eval.davis import read_index_png
    from samkit.io.image import load_image

    out = []
    for seq in sorted(p.name for p in (root / "Annotations" / "480p").iterdir() if p.is_dir()):
        anns = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))[offset::step][:frames]
        for ann in anns:
            gt = read_index_png(ann) > 0
            if gt.any():
                out.append((f"{seq}/{ann.stem}", load_image(root / "JPEGImages" / "480p" / seq / f"{ann.stem}.jpg"), gt))
    return out


def prompts_from_gt(gt: np.ndarray) -> List[dict]:
    """The ground-truth box and one click at the innermost object pixel."""
    from samkit.eval.clicks import centre_point

    ys, xs = np.nonzero(gt)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    x, y = centre_point(gt)
    return [dict(box=box, multimask=False), dict(points=[[x + 0.5, y + 0.5]], labels=[1], multimask=False)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def bench_model(model, name: str, samples: Sequence[tuple], calibration: Sequence[np.ndarray], runs: int,
                workdir: Path, torch_runs: Optional[int] = None, static: bool = True) -> Dict[str, object]:
    """One row: encoder and decoder seconds per backend, mask agreement, file sizes. ``static``:
    also the int8-static encoder (its calibration needs 4 to 16+ GB on 1024 x 1024 inputs)."""
    import torch

    from samkit import ImagePredictor
    from samkit.export import export_onnx
    from samkit.runtime import OnnxImagePredictor

    t0 = time.perf_counter()
    precisions = PRECISIONS if static else PRECISIONS[:2]
    folder = export_onnx(model, workdir / name, quantize=list(precisions[1:]), calibration=list(calibration),
                         name=name)
    row: Dict[str, object] = {"model": name, "export_s": time.perf_counter() - t0}
    preds = {"torch": ImagePredictor(model)}
    preds.update({p: OnnxImagePredictor(folder, precision=p) for p in precisions})
    for p in precisions:
        g = preds[p].export.graph("image_encoder", p)
        row[f"size_{p}_mb"] = (folder / g["file"]).stat().st_size / 2 ** 20
    img0 = samples[0][1]
    for key, pred in preds.items():
        n = torch_runs if key == "torch" and torch_runs else runs
        with torch.inference_mode():
            row[f"enc_{key}"] = median_time(lambda: pred.set_image(img0), n)
        if key in ("torch", "fp32"):  # every onnxruntime variant shares the float32 decoder graph
            prompt = prompts_from_gt(samples[0][2])[1]
            with torch.inference_mode():
                row[f"dec_{key}"] = median_time(lambda: pred.predict(**prompt), max(runs, 5))
    agree: Dict[str, List[float]] = {"fp32_vs_torch": [], **{f"{p}_vs_fp32": [] for p in precisions[1:]}}
    gt_iou: Dict[str, List[float]] = {k: [] for k in ("torch",) + precisions}
    for _, img, gt in samples:
        masks = {}
        for key, pred in preds.items():
            with torch.inference_mode():
                pred.set_image(img)
                masks[key] = [pred.predict(**p).masks[0] for p in prompts_from_gt(gt)]
            gt_iou[key] += [iou(m, gt) for m in masks[key]]
        agree["fp32_vs_torch"] += [iou(a, b) for a, b in zip(masks["fp32"], masks["torch"])]
        for p in precisions[1:]:
            agree[f"{p}_vs_fp32"] += [iou(a, b) for a, b in zip(masks[p], masks["fp32"])]
    row.update({f"agree_{k}": float(np.mean(v)) for k, v in agree.items()})
    row.update({f"gt_{k}": float(np.mean(v)) for k, v in gt_iou.items()})
    row["n_prompts"] = len(agree["fp32_vs_torch"])
    return row


def _fmt(r: dict, key: str, spec: str, scale: float = 1.0) -> str:
    return format(r[key] * scale, spec) if key in r else "-"


def table(rows: List[dict]) -> str:
    head = ("| model | encoder s: torch / ort fp32 / int8 / int8-static | decoder ms per prompt: torch / ort | "
            "mask IoU ort fp32 vs torch | int8 vs fp32 | int8-static vs fp32 | encoder MB fp32 / int8 / int8-static "
            "| export s |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} |||||||")
            continue
        enc = " / ".join(_fmt(r, f"enc_{k}", ".2f") for k in ("torch",) + PRECISIONS)
        dec = " / ".join(_fmt(r, f"dec_{k}", ".1f", 1000) for k in ("torch", "fp32"))
        size = " / ".join(_fmt(r, f"size_{k}_mb", ".0f") for k in PRECISIONS)
        lines.append(f"| {r['model']} | {enc} | {dec} | {r['agree_fp32_vs_torch']:.4f} | "
                     f"{_fmt(r, 'agree_int8_vs_fp32', '.3f')} | {_fmt(r, 'agree_int8-static_vs_fp32', '.3f')} | "
                     f"{size} | {r['export_s']:.0f} |")
    return "\n".join(lines)


def write_section(results: Path, body: str) -> None:
    """Replace (or append) the ``## onnx`` section of ``results``."""
    text = results.read_text() if results.exists() else "# samkit benchmark results\n"
    section = f"## onnx\n\n{body.strip()}\n"
    pattern = re.compile(r"^## onnx[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)  # not "## onnx video"
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    results.write_text(text)


def run(models: Sequence[str], davis: Path, frames: int = 2, runs: int = 3, static: bool = True) -> str:
    """The section body: a description and the table, for ``models`` on the parity weights."""
    import torch

    from parity import synth_checkpoint_file
    from samkit.registry import load_model

    samples = davis_samples(davis, frames)
    calibration = [s[1] for s in davis_samples(davis, 2, offset=10)]  # frames that are not scored
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            print(f"== {name}", flush=True)
            try:
                model = load_model(name, checkpoint=synth_checkpoint_file(name, Path(tmp)))
                rows.append(bench_model(model, name, samples, calibration, runs, Path(tmp),
                                        static=static and name not in NO_STATIC))
            except Exception as exc:  # noqa: BLE001 - one failing model must not hide the others
                rows.append({"model": name, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"})
            print(rows[-1], flush=True)
    how = (f"calibrated on {len(calibration)} other DAVIS frames (not for {', '.join(NO_STATIC)}: memory)" if static
           else "not run (--no-static)")
    return (f"{len(samples)} DAVIS frames ({', '.join(s[0] for s in samples)}), 2 prompts each (ground-truth box, "
            f"one click at the innermost object pixel), single-mask output; int8-static {how}. torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads; encoder time on a 854 x 480 frame, median of "
            f"{runs} runs. Weights: the synthesized parity weights, so the IoU columns check the plumbing (the same "
            "pipeline runs in every precision), not quality.\n\n" + table(rows))


def main(argv=None) -> str:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--frames", type=int, default=2, help="scored DAVIS frames per sequence")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (median) after one warm-up")
    ap.add_argument("--davis", type=Path, default=HERE.parent.parent / "shared" / "data" / "davis")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--no-static", action="store_true", help="skip int8-static (its calibration needs 4-16+ GB)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    body = run(args.models, args.davis, args.frames, args.runs, static=not args.no_static)
    print(body)
    if not args.no_write:
        write_section(args.results, body)
    return body


if __name__ == "__main__":
    main()
