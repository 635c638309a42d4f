"""``samkit track VIDEO``: track prompted objects through a video.

Prompts name their frame and object: ``--point FRAME,X,Y,OBJ[,LABEL]`` and
``--box FRAME,X0,Y0,X1,Y1,OBJ``. Outputs (``--format``):
* ``png``: ``OUT/masks/{frame:05d}_obj{id}.png`` (0/255) per frame and object,
* ``coco``: ``OUT/tracks.jsonl``, one line per frame: ``{"frame", "objects": [{"id",
  "score", "segmentation": COCO RLE}]}`` (written and flushed frame by frame),
* ``overlay``: ``OUT/overlay.mp4`` (PyAV, H.264 or MPEG-4) with the masks blended in.
Results are written as frames are tracked, so a video that fails mid-way keeps every
finished frame.
"""
from __future__ import annotations

import enum
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import InputError
from .common import _numbers, emit_json, info, typer

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="rich",
                  help="Track prompted objects through a video (SAM 2 family, or the offline classic engine).")


class TrackFormat(str, enum.Enum):
    png = "png"
    coco = "coco"
    overlay = "overlay"


def parse_track_point(text: str) -> Tuple[int, float, float, int, int]:
    """``FRAME,X,Y,OBJ[,LABEL]`` -> (frame, x, y, obj, label)."""
    v = _numbers(text, "point", "--point 0,500,375,1 (frame 0, x 500, y 375, object 1)")
    if len(v) not in (4, 5):
        raise InputError(f"point {text!r} has {len(v)} numbers, expected FRAME,X,Y,OBJ[,LABEL]. "
                         "Fix: write it like --point 0,500,375,1.")
    label = 1 if len(v) == 4 else v[4]
    if label not in (0, 1) or v[0] != int(v[0]) or v[3] != int(v[3]) or v[0] < 0:
        raise InputError(f"point {text!r}: FRAME and OBJ must be whole numbers and LABEL 0 or 1. "
                         "Fix: write it like --point 0,500,375,1 or --point 0,500,375,1,0 for background.")
    return int(v[0]), v[1], v[2], int(v[3]), int(label)


def parse_track_box(text: str) -> Tuple[int, Tuple[float, float, float, float], int]:
    """``FRAME,X0,Y0,X1,Y1,OBJ`` -> (frame, box, obj)."""
    v = _numbers(text, "box", "--box 0,75,275,1725,850,1")
    if len(v) != 6 or v[0] != int(v[0]) or v[5] != int(v[5]) or v[0] < 0:
        raise InputError(f"box {text!r}: expected FRAME,X0,Y0,X1,Y1,OBJ with whole FRAME and OBJ. "
                         "Fix: write it like --box 0,75,275,1725,850,1.")
    if v[3] <= v[1] or v[4] <= v[2]:
        raise InputError(f"box {text!r} is inverted or empty. Fix: top-left corner first, then bottom-right.")
    return int(v[0]), (v[1], v[2], v[3], v[4]), int(v[5])


def collect_prompts(points: List[str], boxes: List[str]) -> Dict[Tuple[int, int], dict]:
    """(frame, obj) -> {"points": [[x, y]...], "labels": [...], "box": [...] or None}."""
    out: Dict[Tuple[int, int], dict] = {}
    for p in points or []:
        f, x, y, o, lab = parse_track_point(p)
        d = out.setdefault((f, o), {"points": [], "labels": [], "box": None})
        d["points"].append([x, y])
        d["labels"].append(lab)
    for b in boxes or []:
        f, box, o = parse_track_box(b)
        d = out.setdefault((f, o), {"points": [], "labels": [], "box": None})
        if d["box"] is not None:
            raise InputError(f"two boxes for object {o} on frame {f}. Fix: give one box per object and frame.")
        d["box"] = list(box)
    if not out:
        raise InputError("no prompt given. Fix: add --point FRAME,X,Y,OBJ or --box FRAME,X0,Y0,X1,Y1,OBJ.")
    return out


def default_video_model() -> Tuple[str, str]:
    """(name, reason): the first video model whose weights are cached, else ``classic``."""
    from .. import hub
    from ..specs import MODELS

    for name, spec in MODELS.items():
        if spec.neural and spec.video and hub.cached_path(spec) is not None:
            return name, f"its weights are in the cache ({hub.cached_path(spec)})"
    return "classic", ("no video-model weights in the cache; classic is the offline optical-flow + GrabCut "
                       "fallback, far below any neural model (run `samkit models download sam2.1_hiera_t`)")


class _OverlayWriter:
    def __init__(self, path: Path, fps: float) -> None:
        import av

        self.av = av
        self.path = path
        self.fps = fps
        self.container = None
        self.stream = None

    def write(self, frame, masks: dict) -> None:
        import numpy as np

        from ..masks import mask_color

        img = frame.astype(np.float32)
        for k, (oid, m) in enumerate(sorted(masks.items())):
            col = np.asarray(mask_color(oid), dtype=np.float32)[:3]
            img[m] = 0.5 * img[m] + 0.5 * col
        img = img.clip(0, 255).astype(np.uint8)
        h, w = img.shape[:2]
        if self.container is None:
            from fractions import Fraction

            self.container = self.av.open(str(self.path), "w")
            codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1000))
            self.stream.width, self.stream.height = w - w % 2, h - h % 2
            self.stream.pix_fmt = "yuv420p"
        img = img[: self.stream.height, : self.stream.width]
        for packet in self.stream.encode(self.av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()


@app.callback(invoke_without_command=True, context_settings={"allow_interspersed_args": True})
def track(
    video: Path = typer.Argument(..., help="Video file or folder of frames."),
    point: List[str] = typer.Option([], "--point", "-p", help="FRAME,X,Y,OBJ[,LABEL] (repeatable)."),
    box: List[str] = typer.Option([], "--box", "-b", help="FRAME,X0,Y0,X1,Y1,OBJ (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Video model (default: cached, else classic)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file."),
    out: Path = typer.Option(Path("track_out"), "--out", "-o", help="Output folder."),
    fmt: List[TrackFormat] = typer.Option([TrackFormat.png], "--format", "-f", help="png, coco or overlay (repeatable)."),
    reverse: bool = typer.Option(False, "--reverse", help="Also track backwards from the earliest prompt."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many frames."),
    fps: float = typer.Option(24.0, "--fps", help="Frame rate of the overlay video."),
    device: str = typer.Option("cpu", "--device", help="torch device."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Track objects prompted on any frame; writes per-frame masks, COCO RLE JSONL or an overlay video."""
    import numpy as np

    prompts = collect_prompts(point, box)
    if model is None:
        model, why = default_video_model()
        info(f"model: {model} ({why})")
    from ..masks import rle_encode
    from ..registry import load_model
    from ..video import VideoTracker

    net = load_model(model, checkpoint=checkpoint, device=device)
    tracker = VideoTracker(net)
    session = tracker.start(str(video))
    formats = list(dict.fromkeys(fmt))
    out.mkdir(parents=True, exist_ok=True)
    for (f, o), d in sorted(prompts.items()):
        tracker.add_prompt(session, frame=f, obj_id=o, points=d["points"] or None,
                           labels=d["labels"] or None, box=d["box"])
    jsonl = open(out / "tracks.jsonl", "w") if TrackFormat.coco in formats else None
    overlay = _OverlayWriter(out / "overlay.mp4", fps) if TrackFormat.overlay in formats else None
    if TrackFormat.png in formats:
        (out / "masks").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    frames = 0
    try:
        passes = [False, True] if reverse else [False]
        for rev in passes:
            for t, res in tracker.propagate(session, reverse=rev, max_frames=max_frames):
                frames += 1
                if TrackFormat.png in formats:
                    from PIL import Image

                    for oid, m in res.masks.items():
                        Image.fromarray((m * 255).astype(np.uint8)).save(out / "masks" / f"{t:05d}_obj{oid}.png")
                if jsonl is not None:
                    objs = [{"id": oid, "score": res.scores[oid], "segmentation": rle_encode(m)}
                            for oid, m in res.masks.items()]
                    jsonl.write(json.dumps({"frame": t, "objects": objs}) + "\n")
                    jsonl.flush()
                if overlay is not None and not rev:
                    overlay.write(session.source.get(t), res.masks)
    finally:
        if jsonl is not None:
            jsonl.close()
        if overlay is not None:
            overlay.close()
        session.close()
    dt = time.perf_counter() - t0
    summary = {"model": model, "video": str(video), "frames": frames, "objects": sorted({o for _, o in prompts}),
               "seconds": round(dt, 3), "out": str(out), "formats": [f.value for f in formats]}
    if as_json:
        emit_json(summary)
    else:
        info(f"tracked {frames} frames of {len(summary['objects'])} object(s) in {dt:.1f} s -> {out}")
