"""Video parity: samkit's VideoTracker (memory + tracking, on samkit's own image path loaded
from the synthesized official-layout checkpoints) against the official video goldens.

Flow of the goldens (see ../shared/parity/README.md): object 1 = point on frame 0, object 2 =
box on frame 2. SAM 2.1 / EfficientTAM stored pass 2 of "propagate, add object 2,
propagate"; objects are tracked independently there, so a single propagation after both
prompts gives the same numbers. EdgeTAM added both before one propagation (its predictor
makes every prompted frame a conditioning frame of all objects; reproduced, not skipped).

Tolerances (README): logits atol 1e-2, >= 99.9 % agreement of logits > 0 outside
|logit| < 1e-2, object scores atol 1e-2. ``SAMKIT_VIDEO_FRAMES`` (default 3: frames 0-2, which
already exercise both prompts, memory reads in both directions of the prompt frames and the
object pointers; 6 = the whole golden clip) bounds the default suite's time on 2 cores.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from parity import require_parity, synth_checkpoint_file

MODELS = ["sam2.1_hiera_t", "efficienttam_ti", "efficienttam_ti_1", "edgetam"]
ATOL, AGREE, SCORE_ATOL = 1e-2, 0.999, 1e-2


def run_video_parity(name: str, ckpt_dir, frames: int = 6) -> dict:
    """Track the golden clip with samkit; return per-frame/object figures and the worst case."""
    from samkit.registry import load_model
    from samkit.video import VideoTracker

    from safetensors.torch import load_file


    d = require_parity() / "golden"
    clip = load_file(str(d / "video_clip.safetensors"))
    g = load_file(str(d / f"{name}_video.safetensors"))
    model = load_model(name, checkpoint=synth_checkpoint_file(name, ckpt_dir))
    tracker = VideoTracker(model, keep_logits=True)
    session = tracker.start(clip["frames"].numpy())
    t0 = time.perf_counter()
    r1 = tracker.add_prompt(session, 0, 1, points=clip["obj1_points"].numpy(), labels=clip["obj1_labels"].numpy())
    r2 = tracker.add_prompt(session, 2, 2, box=clip["obj2_box"].numpy())
    out = {"prompt_obj1_f0": float(np.abs(r1.logits[1] - g["prompt_obj1_f0_logits"][0].float().numpy()).max()),
           "prompt_obj2_f2": float(np.abs(r2.logits[2] - g["prompt_obj2_f2_logits"][0].float().numpy()).max()),
           "rows": []}
    for f, res in tracker.propagate(session, max_frames=frames):
        for j, oid in enumerate((1, 2)):
            ref = g["logits"][f, j].float().numpy()
            ours = res.logits[oid]
            sel = np.abs(ref) >= 1e-2
            out["rows"].append({
                "frame": f, "obj": oid,
                "maxabs": float(np.abs(ours - ref).max()),
                "agree": float(((ours > 0) == (ref > 0))[sel].mean()),
                "score_diff": abs(res.scores[oid] - float(g["object_score_logits"][f, j])),
            })
    out["seconds"] = time.perf_counter() - t0
    out["max_abs"] = max(r["maxabs"] for r in out["rows"])
    out["min_agree"] = min(r["agree"] for r in out["rows"])
    out["max_score_diff"] = max(r["score_diff"] for r in out["rows"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_video_golden(name, tmp_path_factory):
    pytest.importorskip("safetensors")
    frames = int(os.environ.get("SAMKIT_VIDEO_FRAMES", "3"))
    res = run_video_parity(name, tmp_path_factory.mktemp("ckpt"), frames)
    assert res["prompt_obj1_f0"] <= ATOL and res["prompt_obj2_f2"] <= ATOL, res
    for row in res["rows"]:
        assert row["maxabs"] <= ATOL, row
        assert row["agree"] >= AGREE, row
        assert row["score_diff"] <= SCORE_ATOL, row


if __name__ == "__main__":  # figures for the report: python tests/test_video_parity.py [names]
    import sys
    import tempfile

    torch.set_num_threads(max(1, torch.get_num_threads()))
    for n in sys.argv[1:] or MODELS:
        r = run_video_parity(n, tempfile.mkdtemp())
        print(f"{n}: max|dlogit| {r['max_abs']:.2e}  min sign agreement {r['min_agree']:.6f}  "
              f"max|dscore| {r['max_score_diff']:.2e}  prompts {r['prompt_obj1_f0']:.2e}/{r['prompt_obj2_f2']:.2e}  "
              f"{r['seconds']:.0f} s", flush=True)
