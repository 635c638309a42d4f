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


def section_roofline(quick: bool) -> str:
    """Per stage: FLOPs (FlopCounterMode + SDPA attention by hand), time, GFLOP/s and the share
    of this machine's fp32 GEMM rate measured in the same run (``bench_roofline.py``)."""
    import bench_roofline

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        body = bench_roofline.run(quick, warmup=1, runs=2 if quick else 5)
    return body


def section_int8(quick: bool) -> str:
    """Dynamic int8 vs fp32 (torch ``quantize="int8"`` and onnxruntime), encoder and decoder, with
    the agreement with fp32 on the parity weights as a plumbing check (``bench_int8.py``)."""
    import bench_int8

    models = ["mobile_sam", "sam2.1_hiera_t"] if quick else bench_int8.DEFAULT_MODELS
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        body = bench_int8.run(models, warmup=1, runs=2 if quick else 3)
    return body


def section_video_objects(quick: bool) -> str:
    """Many objects (1/2/4/8, batched vs one at a time, per stage beside its FLOP floor) for
    EdgeTAM and SAM 2.1-T, and per-stage FPS of every video variant (``bench_video.py`` parts 3
    and 4) on a short DAVIS clip (``SAMKIT_BENCH_DAVIS``, default ../shared/data/davis)."""
    import bench_video

    args = ["--frames", "0", "--threads", str(torch.get_num_threads()), "--clip-frames", "6" if quick else "8"]
    if os.environ.get("SAMKIT_BENCH_DAVIS"):
        args += ["--davis", os.environ["SAMKIT_BENCH_DAVIS"]]
    if quick:
        args += ["--objects", "1", "2", "--object-models", "edgetam", "--stage-models", "edgetam", "efficienttam_ti_512"]
    else:
        args += ["--objects", "1", "2", "4", "8", "--stage-models", "all"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bench_video.main(args)
    return "```\n" + out.getvalue().strip() + "\n```"


def section_click(quick: bool) -> str:
    """Point -> full-resolution mask before / after the click-latency rewrites, torch and the
    exported per-click graph in onnxruntime (``bench_click``)."""
    import bench_click

    models = ["sam_vit_b", "sam2.1_hiera_t"] if quick else bench_click.DEFAULT_MODELS
    return bench_click.run(models, warmup=2, runs=5 if quick else 20, batch=0 if quick else 16)


def section_peers(quick: bool) -> str:
    """Hugging Face transformers' SamModel / Sam2Model / Sam2VideoModel on the same weights
    (``bench_peers.py``): encoder, point -> full mask, per video frame, ours / transformers."""
    import bench_peers

    return bench_peers.run(["sam2.1_hiera_t"] if quick else None, warmup=1, runs=2 if quick else 3,
                           frames=3 if quick else 6)


def section_edgetam_official(quick: bool) -> str:
    """The official EdgeTAM code in its own environment (``SAMKIT_EDGETAM_VENV``), alternating
    runs with samkit (``bench_edgetam_official.py``)."""
    import bench_edgetam_official

    if not os.environ.get("SAMKIT_EDGETAM_VENV"):
        return ("not run: set SAMKIT_EDGETAM_VENV to the EdgeTAM environment (bench_edgetam_official.py "
                "says how to create it)")
    return bench_edgetam_official.run(frames=3 if quick else 6, runs=2 if quick else 3)


SECTIONS = {"image": section_image, "encoders": section_encoders, "everything": section_everything,
            "video": section_video, "onnx": section_onnx, "roofline": section_roofline, "int8": section_int8,
            "video_objects": section_video_objects, "click": section_click, "peers": section_peers,
            "edgetam_official": section_edgetam_official}


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
