"""Child side of ``bench_edgetam_official.py``: runs the OFFICIAL EdgeTAM code (PyPI
``edgetam-dimos``, module ``sam2``) inside its own virtual environment, driven line by line.

Never imported by samkit or by the main environment: the parent starts it with the other
interpreter, ``tests/oracle_shims`` on PYTHONPATH (the test-only torchvision stand-in). Protocol:
one JSON command per stdin line, one JSON answer per line on the original stdout (everything
the official code prints goes to stderr). Commands:

* ``{"op": "encode"}`` -> ``{"s": seconds}`` one image-encoder pass (``forward_image``) on frame 0
* ``{"op": "prompt", "points": [[x, y]], "labels": [1]}`` -> object 1 prompted on frame 0;
  ``{"s": seconds, "logits": path}`` (.npy, video-resolution logits H x W)
* ``{"op": "step"}`` -> the next propagated frame: ``{"s", "frame", "logits"}``
* ``{"op": "golden", "path": edgetam.safetensors}`` -> the image golden's set ``p0a`` (image 0,
  one point, multimask) through the official image predictor on the same model:
  ``{"maxabs": largest difference of the low-res logits from the stored ones}``
* ``{"op": "quit"}``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types


def _quiet_imports() -> None:
    """timm imports torchvision.datasets at import time; the stand-in has no datasets, and the
    official tracker never uses them: an empty module satisfies the import."""
    import torchvision

    if not hasattr(torchvision, "datasets"):
        ds = types.ModuleType("torchvision.datasets")
        for n in ("CIFAR100", "CIFAR10", "MNIST", "KMNIST", "FashionMNIST", "ImageFolder", "Places365",
                  "INaturalist", "QMNIST", "ImageNet"):
            setattr(ds, n, type(n, (), {}))
        sys.modules["torchvision.datasets"] = ds
        torchvision.datasets = ds


def build(ckpt: str):
    """The official video predictor on the synthesized weights (strict load of the file's
    ``model`` dict). Two CPU-only adjustments, both recorded in the parity README: the timm trunk
    is built with ``pretrained=False`` (no download), and bfloat16 memory values are upcast when
    memory attention reads them (float32 weights on CPU)."""
    import torch

    _quiet_imports()
    import sam2.modeling.backbones.timm as tb

    create = tb.create_model
    tb.create_model = lambda *a, **k: create(*a, **{**k, "pretrained": False})
    from sam2.build_sam import build_sam2_video_predictor

    pred = build_sam2_video_predictor("edgetam.yaml", ckpt_path=None, device="cpu")
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    pred.load_state_dict(sd, strict=True)
    pred.eval()
    orig = pred.memory_attention.forward

    def upcast(v):
        return v.float() if torch.is_tensor(v) and v.dtype == torch.bfloat16 else v

    pred.memory_attention.forward = lambda *a, **k: orig(*map(upcast, a), **{n: upcast(v) for n, v in k.items()})
    return pred


def golden_maxabs(pred, path: str) -> float:
    """Reproduce the stored official EdgeTAM image golden (``p0a``) in this environment."""
    from safetensors.torch import load_file
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    g = load_file(path)
    ip = SAM2ImagePredictor(pred)
    ip.set_image(g["image_0"].numpy())
    _, _, low = ip.predict(point_coords=g["p0a.point_coords"].numpy(), point_labels=g["p0a.point_labels"].numpy(),
                           multimask_output=True, return_logits=True)
    return float(abs(low - g["p0a.lowres_logits"].numpy()).max())


def serve(pred, frames_dir: str, out_dir: str, reply) -> None:
    import numpy as np
    import torch

    with torch.inference_mode():
        state = pred.init_state(video_path=frames_dir)
    steps = None
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        with torch.inference_mode():
            t0 = time.perf_counter()
            if op == "encode":
                pred.forward_image(state["images"][0:1].float())
                reply({"s": time.perf_counter() - t0})
            elif op == "prompt":
                _, _, logits = pred.add_new_points_or_box(
                    state, frame_idx=0, obj_id=1, points=np.array(cmd["points"], np.float32),
                    labels=np.array(cmd["labels"], np.int32))
                s = time.perf_counter() - t0
                steps = pred.propagate_in_video(state)
                path = os.path.join(out_dir, "prompt.npy")
                np.save(path, logits[0, 0].float().numpy())
                reply({"s": s, "logits": path})
            elif op == "step":
                frame, _, logits = next(steps)
                s = time.perf_counter() - t0
                path = os.path.join(out_dir, f"frame{frame}.npy")
                np.save(path, logits[0, 0].float().numpy())
                reply({"s": s, "frame": int(frame), "logits": path})
            elif op == "golden":
                reply({"maxabs": golden_maxabs(pred, cmd["path"])})
            elif op == "quit":
                return
            else:
                reply({"error": f"unknown op {op}"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--frames-dir", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the official code prints; keep stdout for answers only
    sys.stdout = sys.stderr

    def reply(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    pred = build(a.ckpt)
    reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads()})
    serve(pred, a.frames_dir, a.out_dir, reply)


if __name__ == "__main__":
    main()
