"""Live parity of samkit's VideoTracker with the official sam2 video predictor (test-only
oracle) on a new random prompt: SAM 2.1 Hiera-T, synthesized weights, three frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import require_parity, synth_checkpoint_file

pytestmark = [pytest.mark.oracle, pytest.mark.slow]


def test_new_prompt_matches_official_sam2_video(tmp_path_factory):
    from safetensors.torch import load_file

    from samkit.registry import load_model
    from samkit.video import VideoTracker
    from video_oracle import jpeg_roundtrip, official_propagation

    name, frames = "sam2.1_hiera_t", 3
    clip = load_file(str(require_parity() / "golden" / "video_clip.safetensors"))
    original = clip["frames"].numpy()[:frames]
    vid = jpeg_roundtrip(original)  # the pixels the official loader decodes from its JPEG files
    h, w = vid.shape[1:3]
    rng = np.random.default_rng(2024)
    pts = np.array([[rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h],
                    [rng.uniform(0, 1) * w, rng.uniform(0, 1) * h]], np.float32)
    labs = np.array([1, 0], np.int32)
    theirs = official_propagation(name, original, pts, labs)
    tracker = VideoTracker(load_model(name, checkpoint=synth_checkpoint_file(name, tmp_path_factory.mktemp("v"))),
                           keep_logits=True)
    session = tracker.start(vid)
    tracker.add_prompt(session, 0, 1, points=pts, labels=labs)
    seen = 0
    with torch.inference_mode():
        for (f, res), (f_off, obj_ids, masks) in zip(tracker.propagate(session), theirs):
            assert f == f_off and list(obj_ids) == [1]
            ref = masks[0, 0].float().numpy()
            ours = res.logits[1]
            assert ours.shape == ref.shape == (h, w)
            assert np.abs(ours - ref).max() < 1e-2, (f, np.abs(ours - ref).max())
            sel = np.abs(ref) >= 1e-2
            assert ((ours > 0) == (ref > 0))[sel].mean() >= 0.999
            seen += 1
    assert seen == frames
