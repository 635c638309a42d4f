"""Images/s of ``samkit label``: the local worker pool and the Ray engine with 1 and 2 workers.

``python benchmarks/bench_label.py [--model edge_sam|tiny] [--images 8] [--points-per-side 8] [--write]``

Each configuration labels the same folder of synthetic photos (``--size`` pixels, a few
coloured shapes) in everything mode into a fresh output folder, with a model built from
synthesized official-layout weights (tests/parity.py: the real architecture, random values, so
the compute is that of the released model; ``tiny``: the random tiny SAM of tests/tiny.py, which
measures the engines' own overhead more than a model). Two figures per run: ``job`` = images / the whole
job (engine start-up and model loading included, what a user waits for), and ``steady`` = the
images after the first finished batch / the time after it (the pool's throughput once loaded).
``--write`` replaces the ``## label`` section of benchmarks/RESULTS.md. Ray runs on a local
``ray.init(num_cpus=CPUs)`` started once for all its runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]


def make_images(folder: Path, n: int, size: int) -> None:
    """``n`` synthetic size x size RGB photos: a gradient with three filled shapes."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        grad = np.linspace(40, 200, size, dtype=np.float32)
        base = np.stack([np.add.outer(grad, grad) / 2, np.tile(grad, (size, 1)), np.tile(grad[:, None], (1, size))], -1)
        img = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.integers(0, size * 2 // 3, 2)
            w, h = rng.integers(size // 8, size // 3, 2)
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=color)
        img.save(folder / f"img{i:03d}.png")


def run_one(engine_name: str, workers: int, src: Path, out: Path, settings, batch_size: int, threads) -> dict:
    """One job through the engine, timing every finished batch (same path as ``label_dataset``)."""
    from samkit.label.engines import LocalEngine
    from samkit.label.ray_engine import RayEngine
    from samkit.label.sources import list_items
    from samkit.label.store import ShardStore

    items = list_items(str(src))
    store = ShardStore(out, settings.key()).lock()
    t0 = time.perf_counter()
    engine = (LocalEngine(settings, workers, threads) if engine_name == "local"
              else RayEngine(settings, workers, threads))
    stamps = []
    try:
        for records in engine.run(items, batch_size):
            store.write(records)
            stamps.append((time.perf_counter(), len(records)))
    finally:
        engine.close()
        store.unlock()
    total = stamps[-1][0] - t0
    first_t, first_n = stamps[0]
    steady = (len(items) - first_n) / (stamps[-1][0] - first_t) if len(stamps) > 1 else float("nan")
    return {"engine": engine_name, "workers": workers, "threads": engine.threads,
            "cpus": getattr(engine, "cpus", None), "images": len(items), "seconds": total,
            "job": len(items) / total, "steady": steady}


def table(rows) -> str:
    lines = ["| engine | workers | threads / worker | CPUs / actor | images | job s | job images/s | "
             "steady images/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpus = "-" if r["cpus"] is None else f"{r['cpus']:g}"
        lines.append(f"| {r['engine']} | {r['workers']} | {r['threads']} | {cpus} | {r['images']} | "
                     f"{r['seconds']:.1f} | {r['job']:.3f} | {r['steady']:.3f} |")
    return "\n".join(lines)


def write_results(text: str) -> None:
    path = HERE / "RESULTS.md"
    doc = path.read_text() if path.exists() else "# samkit benchmark results\n"
    start = doc.find("\n## label")
    if start >= 0:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start] + (doc[end:] if end >= 0 else "\n")
    path.write_text(doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="edge_sam")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--points-per-side", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--engines", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--write", action="store_true", help="replace the `## label` section of RESULTS.md")
    args = ap.parse_args(argv)

    from parity import synth_checkpoint_file
    from samkit.label.settings import make_settings
    from samkit.threads import usable_cpus

    tmp = Path(tempfile.mkdtemp(prefix="samkit-bench-label-"))
    rows = []
    try:
        make_images(tmp / "src", args.images, args.size)
        if args.model == "tiny":  # tests/tiny.py: a 2-block ViT SAM on a 128-pixel frame (engine overhead)
            from _label_models import tiny_sam

            model, ckpt = tiny_sam, None
        else:
            model, ckpt = args.model, synth_checkpoint_file(args.model, tmp)
        settings = make_settings(model, "everything", ckpt, points_per_side=args.points_per_side,
                                 pred_iou_thresh=0.0, stability_score_thresh=0.0)
        cpus = usable_cpus()
        for engine in args.engines:
            if engine == "ray":
                import ray

                paths = [str(HERE.parent), str(HERE.parent / "tests"), os.environ.get("PYTHONPATH")]
                os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
            for w in args.workers:
                out = tmp / f"out-{engine}-{w}"
                shutil.rmtree(out, ignore_errors=True)
                rows.append(run_one(engine, w, tmp / "src", out, settings, args.batch_size, None))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
            if engine == "ray":
                ray.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cmd = "python benchmarks/bench_label.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    text = (f"## label\n\n{usable_cpus()} CPUs, load average {load} at the end (the benchmark's own processes "
            "count; anything far above the CPU count means other jobs shared the machine).\n\n"
            f"Command: `{cmd.strip()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; model "
            f"{args.model} ({'random tiny SAM of tests/tiny.py' if args.model == 'tiny' else 'synthesized weights'}), "
            f"everything mode, {args.points_per_side} points per side, "
            f"{args.images} images of {args.size} x {args.size}, batches of {args.batch_size}. job = images / whole "
            "job (start-up and model loading included); steady = throughput after the first batch.\n\n"
            + table(rows) + "\n")
    print(text)
    if args.write:
        write_results(text)


if __name__ == "__main__":
    main()
