"""ONNX video tracking: per-frame time of ``samkit.runtime.OnnxVideoTracker`` (onnxruntime,
float32 video graphs) vs samkit's torch ``VideoTracker``, and how far their masks agree.

For every model (full size, the synthesized parity weights of ``../shared/parity``): export
with ``samkit.export.export_onnx`` (the image and the video graphs), then track the first
``--frames`` frames of a DAVIS sequence of ``../shared/data/davis`` with both trackers, one
object prompted with its ground-truth box on frame 0. Per-frame time is the median over the
propagated frames after the first two (the memory bank fills in the first ``num_maskmem``
frames; later frames read the same amount). Agreement: the fraction of pixels where the masks
of both trackers agree, over all frames. With the parity weights the masks are not
segmentations: agreement checks the plumbing, not quality.

Usage::

    python benchmarks/bench_onnx_video.py [--models edgetam sam2.1_hiera_t] [--frames 8]
        [--sequence blackswan] [--davis ../shared/data/davis] [--results benchmarks/RESULTS.md]

The table replaces the ``## onnx video`` section of ``--results``. No test asserts a timing.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

DEFAULT_MODELS = ["edgetam", "sam2.1_hiera_t"]


def davis_clip(root: Path, sequence: str, frames: int):
    """(``frames`` x H x W x 3 uint8 frames, the ground-truth box of frame 0 as xyxy)."""
    from samkit.eval.davis import read_index_png
    from samkit.io.image import load_image

    jpgs = sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:frames]
    gt = read_index_png(sorted((root / "Annotations" / "480p" / sequence).glob("*.png"))[0]) > 0
    ys, xs = np.nonzero(gt)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    return np.stack([load_image(p) for p in jpgs]), box


def track_timed(tracker, frames: np.ndarray, box) -> tuple:
    """Prompt frame 0 with ``box`` and propagate: (per-frame seconds, masks per frame)."""
    session = tracker.start(frames)
    tracker.add_prompt(session, frame=0, obj_id=1, box=box)
    times, masks = [], []
    t0 = time.perf_counter()
    for _, result in tracker.propagate(session):
        now = time.perf_counter()
        times.append(now - t0)
        masks.append(result.masks[1])
        t0 = now
    session.close()
    return times, masks


def bench_model(model, name: str, frames: np.ndarray, box, workdir: Path) -> Dict[str, object]:
    """One row: export seconds, per-frame seconds of torch and onnxruntime, pixel agreement."""
    import torch

    from samkit.export import export_onnx
    from samkit.runtime import OnnxVideoTracker
    from samkit.video import VideoTracker

    t0 = time.perf_counter()
    folder = export_onnx(model, workdir / name, name=name)
    row: Dict[str, object] = {"model": name, "export_s": time.perf_counter() - t0, "frames": len(frames)}
    with torch.inference_mode():
        t_torch, m_torch = track_timed(VideoTracker(model), frames, box)
    t_ort, m_ort = track_timed(OnnxVideoTracker(folder), frames, box)
    skip = min(2, len(frames) - 1)  # the prompted frame and the first tracked one
    row["torch_s"] = statistics.median(t_torch[skip:])
    row["ort_s"] = statistics.median(t_ort[skip:])
    row["agree"] = float(np.mean([(a == b).mean() for a, b in zip(m_torch, m_ort)]))
    row["fg_torch"] = float(np.mean([m.mean() for m in m_torch]))
    return row


def table(rows: List[dict]) -> str:
    lines = ["| model | frames | s per frame: torch / ort fp32 | pixels agreeing ort vs torch | mask area (torch) "
             "| export s |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} |||||")
            continue
        lines.append(f"| {r['model']} | {r['frames']} | {r['torch_s']:.2f} / {r['ort_s']:.2f} | {r['agree']:.5f} | "
                     f"{r['fg_torch']:.3f} | {r['export_s']:.0f} |")
    return "\n".join(lines)


def write_section(results: Path, body: str) -> None:
    """Replace (or append) the ``## onnx video`` section of ``results``."""
    text = results.read_text() if results.exists() else "# samkit benchmark results\n"
    section = f"## onnx video\n\n{body.strip()}\n"
    pattern = re.compile(r"^## onnx video\b.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    results.write_text(text)


def run(models: Sequence[str], davis: Path, sequence: str, frames: int) -> str:
    import torch

    from parity import synth_checkpoint_file
    from samkit.registry import load_model

    clip, box = davis_clip(davis, sequence, frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            print(f"== {name}", flush=True)
            try:
                model = load_model(name, checkpoint=synth_checkpoint_file(name, Path(tmp)))
                rows.append(bench_model(model, name, clip, box, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 - one failing model must not hide the others
                rows.append({"model": name, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"})
            print(rows[-1], flush=True)
    h, w = clip.shape[1:3]
    return (f"DAVIS `{sequence}`, first {len(clip)} frames ({w} x {h}), one object prompted with its ground-truth "
            f"box on frame 0, propagated forward; time per frame is the median over frames 2..{len(clip) - 1} "
            f"(image encoder, memory attention, decoder and memory encoder of one object). torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads. Weights: the synthesized parity weights, so "
            "the agreement checks the plumbing, not quality.\n\n" + table(rows))


def main(argv=None) -> str:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--sequence", default="blackswan")
    ap.add_argument("--davis", type=Path, default=HERE.parent.parent / "shared" / "data" / "davis")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    body = run(args.models, args.davis, args.sequence, args.frames)
    print(body)
    if not args.no_write:
        write_section(args.results, body)
    return body


if __name__ == "__main__":
    main()
