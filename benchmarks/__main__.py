"""One command for every benchmark: ``python -m benchmarks [--quick] [--sections image everything video onnx]``.

Runs samkit and the official implementations in the same process on the same synthesized
weights and inputs, prints the tables and writes ``benchmarks/RESULTS.md`` with a
description of the machine. No timing is asserted anywhere in the test suite.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}; {os.cpu_count()} logical CPUs; torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads; Python {platform.python_version()}; load average at start {load:.1f}")


def section_image(quick: bool) -> str:
    import bench_image

    models = ["sam_vit_b", "sam2.1_hiera_t"] if quick else bench_image.DEFAULT_MODELS
    return bench_image.run(models, warmup=1, runs=2 if quick else 5)


def section_everything(quick: bool) -> str:
    import bench_everything

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = bench_everything.main(["--model", "sam_vit_b", "--points-per-side", "8" if quick else "16",
                                        "--images", *(["truck"] if quick else ["truck", "davis"])])
    return "```json\n" + json.dumps(result, indent=2) + "\n```"


def section_video(quick: bool) -> str:
    """Tiny streaming run (bounded memory) plus per tracked frame time at frame 10 and at frame
    N (``SAMKIT_BENCH_VIDEO_FRAMES``, default 200) for the real-size video models and the
    official sam2 predictor."""
    import bench_video

    frames = int(os.environ.get("SAMKIT_BENCH_VIDEO_FRAMES", "200"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench_video.main(["--frames", "0", "--tiny-frames", "300" if quick else "2000",
                          "--threads", str(torch.get_num_threads())])
        bench_video.main(["--frames", str(frames), "--threads", str(torch.get_num_threads())])
    return "```\n" + out.getvalue().strip() + "\n```"


def section_encoders(quick: bool) -> str:
    """Encoders again, with the opt-in fast paths: ``+fuse`` (BN / RepVGG folding) and ``+ort``
    (onnxruntime via samkit.accel), interleaved with the official encoder where one installs."""
    import bench_encoders

    models = ["edge_sam", "sam2.1_hiera_t"] if quick else ["mobile_sam", "edge_sam", "edgetam", "sam2.1_hiera_t",
                                                          "efficienttam_ti", "sam_vit_b"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench_encoders.main(["--models", *models, "--runs", "2" if quick else "3", "--onnxruntime",
                             "--threads", str(torch.get_num_threads())])
    return "```\n" + out.getvalue().strip() + "\n```"


def section_onnx(quick: bool) -> str:
    """Export folders: torch vs onnxruntime fp32 / int8 / int8-static, encoder and decoder, with
    mask agreement on DAVIS frames (``bench_onnx.py``)."""
    import bench_onnx

    models = ["mobile_sam", "edgetam"] if quick else bench_onnx.DEFAULT_MODELS
    # int8-static is left out here: its calibration needs 4 to 16+ GB on 1024 x 1024 encoders
    return bench_onnx.run(models, HERE.parent.parent / "shared" / "data" / "davis", frames=1 if quick else 2,
                          runs=2 if quick else 3, static=False)


SECTIONS = {"image": section_image, "encoders": section_encoders, "everything": section_everything,
            "video": section_video, "onnx": section_onnx}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    ap.add_argument("--quick", action="store_true", help="fewer models and runs")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    parts = [f"# samkit benchmark results\n\nMachine: {machine()}\n\nCommand: `python -m benchmarks "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
             "\nRatios are ours / official (below 1: samkit is faster); medians after a warm-up; the "
             "official code runs in the same process on the same synthesized weights."]
    for name in args.sections:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            body = SECTIONS[name](args.quick)
        except Exception as exc:  # noqa: BLE001 - one failing section must not hide the others
            body = f"section failed: {type(exc).__name__}: {exc}"
        print(body, flush=True)
        parts.append(f"## {name} ({time.perf_counter() - t0:.0f} s)\n\n{body}")
    Path(args.out).write_text("\n\n".join(parts) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
