"""The official sam2 video predictor as a test-only oracle (one object: its CPU path fails
with two, see ../shared/parity/README.md)."""
from __future__ import annotations

from pathlib import Path

import torch


def official_propagation(name, vid, pts, labs):
    """Generator of the official predictor's propagation on the same weights and frames
    (object 1 prompted with ``pts``/``labs`` on frame 0). The official loader reads JPEG files:
    ``jpeg_roundtrip(vid)`` gives the exact pixels it sees."""
    import tempfile


    from conftest import official_import_path
    from parity import synth_state_dict

    with official_import_path():
        from sam2.build_sam import build_sam2_video_predictor

        cfg = {"sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml"}[name]
        pred = build_sam2_video_predictor(cfg, ckpt_path=None, device="cpu")
    pred.load_state_dict(synth_state_dict(name, 0))
    orig = pred.memory_attention.forward

    def upcast(v):  # bf16 memory values meet fp32 weights on CPU: upcast at use (parity README)
        return v.float() if torch.is_tensor(v) and v.dtype == torch.bfloat16 else v

    pred.memory_attention.forward = lambda *a, **k: orig(*map(upcast, a), **{n: upcast(v) for n, v in k.items()})
    d = Path(tempfile.mkdtemp())
    _write_jpegs(vid, d)
    with torch.inference_mode():
        state = pred.init_state(str(d))
        pred.add_new_points_or_box(state, 0, 1, points=pts, labels=labs)
    return pred.propagate_in_video(state)


def _write_jpegs(vid, d: Path) -> None:
    from PIL import Image

    for i, fr in enumerate(vid):
        Image.fromarray(fr).save(d / f"{i:05d}.jpg", quality=95)


def jpeg_roundtrip(vid):
    """The frames as the official folder loader decodes them (uint8 T x H x W x 3)."""
    import tempfile

    import numpy as np
    from PIL import Image

    d = Path(tempfile.mkdtemp())
    _write_jpegs(vid, d)
    return np.stack([np.asarray(Image.open(d / f"{i:05d}.jpg").convert("RGB")) for i in range(len(vid))])
