"""Test double: a 6-frame clip with two moving blocks and one tracking script, shared by the torch
and the torch-free side of tests/test_runtime_video.py (this module imports no torch)."""
from __future__ import annotations

import numpy as np


def clip(n: int = 6, h: int = 80, w: int = 96) -> np.ndarray:
    """``n x h x w x 3`` uint8: a red block moving right-down, a blue one moving left, on noise."""
    rng = np.random.default_rng(0)
    frames = rng.integers(60, 90, (n, h, w, 3)).astype(np.uint8)
    for t in range(n):
        frames[t, 10 + 2 * t:40 + 2 * t, 8 + 3 * t:40 + 3 * t] = (200, 40, 40)
        frames[t, 45:75, 50 - 2 * t:85 - 2 * t] = (40, 40, 210)
    return frames


def run_tracker(tracker, frames) -> dict:
    """Two objects, prompts on frames 0 and 2 (a correction), forward then backward from the
    end: ``{(frame, "f"/"r", obj): (mask, logits, score)}`` and the session's peak memory."""
    s = tracker.start(frames)
    tracker.add_prompt(s, frame=0, obj_id=1, points=[[24, 25]], labels=[1])
    tracker.add_prompt(s, frame=0, obj_id=2, box=[48, 44, 86, 76])
    tracker.add_prompt(s, frame=2, obj_id=1, points=[[30, 30], [5, 5]], labels=[1, 0])
    out = {}
    for tag, kw in (("f", {}), ("r", {"start": len(frames) - 1, "reverse": True})):
        for t, r in tracker.propagate(s, **kw):
            for o in r.masks:
                out[(t, tag, o)] = (r.masks[o], r.logits[o], r.scores[o])
    return out, (s.stats.max_entries, s.stats.max_tensors)
