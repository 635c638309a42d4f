"""``samkit track VIDEO``: track prompted objects through a video.

Prompts name their frame and object: ``--point FRAME,X,Y,OBJ[,LABEL]`` and
``--box FRAME,X0,Y0,X1,Y1,OBJ``; ``--text "dog"`` (repeatable) finds the objects on frame
``--text-frame`` (default 0) by name with the CLIP of ``--clip`` and tracks each instance as an
object of its own, numbered after the highest OBJ of the point/box prompts, with the text as
its label (``VideoTracker.add_text_prompt``); with ``--model sam3`` the model reads the text
itself, detects on every frame from ``--text-frame`` on and adds instances as they appear
(no CLIP). Outputs (``--format``, repeatable or comma-separated):
* ``png``: ``OUT/masks/{frame:05d}_obj{id}.png`` (0/255) per frame and object,
* ``coco``: ``OUT/tracks.jsonl``, one line per frame: ``{"frame", "objects": [{"id",
  "score", "segmentation": COCO RLE}]}`` plus ``"label"`` for objects found by text (written
  and flushed frame by frame),
* ``overlay``: ``OUT/overlay.mp4`` (PyAV, H.264 or MPEG-4) with the masks blended in.

Everything is checked before any file is written: ``--out``, the prompt syntax, and the prompt
frames and coordinates against the video's frame count and size (the frame source is opened
first, which is cheap), then the model is loaded and the prompts placed. Results are written
frame by frame into a staging folder and published as one set when the video is done
(``samkit.io.outputs``, key ``track``): the files of the previous run in ``OUT`` stay until
then, and its frames that this run did not produce are removed afterwards. A video that fails
mid-way (or Ctrl-C) keeps every finished frame: they are moved to ``OUT/track-partial/`` (with
``partial.json``, the reason), which the error message names, while the previous complete
output in ``OUT`` stays untouched; the next successful run removes ``track-partial/``.
"""
from __future__ import annotations

import enum
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import InputError, SamkitError, require
from .common import (Command, _numbers, build_clip, check_clip_name, check_image_size, check_out_dir,
                     check_segmenter, clip_checkpoint_option, clip_option, emit_json, format_option,
                     image_size_option, info, is_export_path,
                     parse_formats, typer)

EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit track clip.mp4 --point 0,500,375,1 --out tracks/\n\n"
    "  samkit track frames/ --box 0,75,275,1725,850,1 --point 12,900,400,2 --format png,coco,overlay\n\n"
    "  samkit track clip.mp4 --text dog --text-frame 0 --clip clip_vit_b16 --format coco\n\n"
    "Files: OUT/masks/{frame:05d}_obj{id}.png, OUT/tracks.jsonl (coco: one line per frame, COCO RLE), "
    "OUT/overlay.mp4. A rerun replaces the previous files as a set once the video is done; a run that fails "
    "mid-way keeps its finished frames in OUT/track-partial/ and leaves the previous output untouched."
)


class TrackFormat(str, enum.Enum):
    """Output formats of ``samkit track``."""

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


def collect_prompts(points: List[str], boxes: List[str], allow_none: bool = False) -> Dict[Tuple[int, int], dict]:
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
    if not out and not allow_none:
        raise InputError("no prompt given. Fix: add --point FRAME,X,Y,OBJ, --box FRAME,X0,Y0,X1,Y1,OBJ or --text.")
    return out


def check_prompts_fit(prompts: Dict[Tuple[int, int], dict], num_frames: Optional[int], height: int,
                      width: int) -> None:
    """Every prompt on an existing frame (0..num_frames-1; any frame when the length is unknown)
    and inside the W x H frame ([0, W] x [0, H] pixels)."""
    for (f, o), d in sorted(prompts.items()):
        if num_frames is not None and f >= num_frames:
            raise InputError(f"the prompt of object {o} is on frame {f}, but the video has {num_frames} frames "
                             f"(0..{num_frames - 1}). Fix: prompt on an existing frame.")
        coords = [("point", p) for p in d["points"]] + ([("box", d["box"])] if d["box"] is not None else [])
        for kind, xy in coords:
            xs, ys = xy[0::2], xy[1::2]
            if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
                shown = ",".join(f"{v:g}" for v in xy)
                raise InputError(f"{kind} {shown} of object {o} on frame {f} lies outside the {width}x{height} "
                                 f"video. Fix: use pixels of the video frame, x in [0, {width}] and "
                                 f"y in [0, {height}].")


def default_video_model() -> Tuple[str, str]:
    """(name, reason): the first video model whose weights are cached, else ``classic``."""
    from .. import hub
    from ..specs import MODELS

    for name, spec in MODELS.items():
        if spec.kind == "segmenter" and spec.neural and spec.video and hub.cached_path(spec) is not None:
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
        container, self.container = self.container, None
        if container is not None:
            for packet in self.stream.encode():
                container.mux(packet)
            container.close()


class _FrameWriters:
    """The per-frame writers of the chosen formats, all writing into the staging folder of
    ``outs`` (``samkit.io.outputs.OutputSet``)."""

    def __init__(self, outs, formats: List[TrackFormat], fps: float) -> None:
        self.outs = outs
        self.png = TrackFormat.png in formats
        self.jsonl = open(outs.path("tracks.jsonl"), "w") if TrackFormat.coco in formats else None
        self.overlay = _OverlayWriter(outs.path("overlay.mp4"), fps) if TrackFormat.overlay in formats else None

    def write(self, t: int, res, frame=None) -> None:
        """Masks of frame ``t`` (a FrameResult); ``frame`` (H x W x 3) for the overlay, or None."""
        import io

        import numpy as np
        from PIL import Image

        from ..io.atomic import atomic_write_bytes
        from ..masks import rle_encode

        if self.png:
            for oid, m in res.masks.items():
                buf = io.BytesIO()
                Image.fromarray((m * 255).astype(np.uint8)).save(buf, format="PNG")
                atomic_write_bytes(self.outs.path(f"masks/{t:05d}_obj{oid}.png"), buf.getvalue())
        if self.jsonl is not None:
            objs = [{"id": oid, "score": res.scores[oid], "segmentation": rle_encode(m)}
                    for oid, m in res.masks.items()]
            for o in objs if res.labels else []:
                if o["id"] in res.labels:
                    o["label"] = res.labels[o["id"]]
            self.jsonl.write(json.dumps({"frame": t, "objects": objs}) + "\n")
            self.jsonl.flush()
        if self.overlay is not None and frame is not None:
            self.overlay.write(frame, res.masks)

    def close(self) -> None:
        """Close every file (the overlay video is finalised); the first error is raised."""
        errors = []
        for closer in (self.jsonl, self.overlay):
            if closer is None:
                continue
            try:
                closer.close()
            except Exception as exc:  # noqa: BLE001 - close the others first
                errors.append(exc)
        if errors:
            raise errors[0]




def track(
    video: Path = typer.Argument(..., metavar="VIDEO", help="Video file or folder of frames.", show_default=False),
    point: Optional[List[str]] = typer.Option(None, "--point", "-p", metavar="FRAME,X,Y,OBJ[,LABEL]",
                                              help="Prompt point on frame FRAME for object OBJ; repeatable. "
                                                   "LABEL 1 = object (default), 0 = background."),
    box: Optional[List[str]] = typer.Option(None, "--box", "-b", metavar="FRAME,X0,Y0,X1,Y1,OBJ",
                                            help="Prompt box on frame FRAME for object OBJ; repeatable."),
    text: Optional[List[str]] = typer.Option(None, "--text", "-t", metavar="TEXT",
                                             help="Find every TEXT instance on --text-frame and track each one, "
                                                  "labelled (repeatable); needs a CLIP (--clip) unless the "
                                                  "model reads text itself (--model sam3: every frame)."),
    text_frame: int = typer.Option(0, "--text-frame", min=0, help="The frame where --text objects are found."),
    text_threshold: float = typer.Option(0.5, "--text-threshold", help="Heat-map probability above which a text counts "
                                         "as found."),
    clip: str = clip_option(),
    clip_checkpoint: Optional[Path] = clip_checkpoint_option(),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Video model (`samkit models ls`) or a "
                                        "folder written by `samkit export` (run with onnxruntime). "
                                        "Default: the first one with cached weights, else classic."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file (default: the cache)."),
    out: Path = typer.Option(Path("track_out"), "--out", "-o", help="Output folder (created). A rerun replaces "
                             "the previous files there as a set once the video is done."),
    fmt: Optional[List[str]] = format_option(TrackFormat, [TrackFormat.png]),
    reverse: bool = typer.Option(False, "--reverse", help="Also track backwards from the earliest prompt."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames."),
    fps: float = typer.Option(24.0, "--fps", min=0.001, help="Frame rate of the overlay video."),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu, cuda, cuda:0, mps."),
    image_size: Optional[int] = image_size_option(),
    object_batch: Optional[str] = typer.Option(None, "--object-batch", metavar="N", show_default=False,
                                               help="Objects stepped together on a frame, sharing its "
                                                    "object-independent work (same masks); 1 = one at a time. "
                                                    "Default 8."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Track objects prompted on any frame (or found by --text); writes mask PNGs, COCO RLE JSONL or an overlay
    video."""
    from ..vocab import check_texts

    formats = parse_formats(fmt, default=[TrackFormat.png], choices=TrackFormat, command="samkit track")
    texts = check_texts(text, "--text") if text else None
    prompts = collect_prompts(point, box, allow_none=bool(texts))
    batch = parse_object_batch(object_batch)
    check_out_dir(out)
    check_image_size(model, image_size)
    if texts:
        check_clip_name(clip)
    if TrackFormat.overlay in formats:
        require("av", "video", "The overlay video of `samkit track`")
    from ..io.video import open_frames

    source = open_frames(str(video))
    try:
        first = source.get(source.first_available())
        check_prompts_fit(prompts, source.num_frames, int(first.shape[0]), int(first.shape[1]))
        if texts and source.num_frames is not None and text_frame >= source.num_frames:
            raise InputError(f"--text-frame {text_frame} is outside the video ({source.num_frames} frames, "
                             f"0..{source.num_frames - 1}). Fix: pick an existing frame.")
        if is_export_path(model):
            tracker = _export_tracker(Path(model), checkpoint, device, texts, batch)
        else:
            if model is None:
                model, why = default_video_model()
                info(f"model: {model} ({why})")
            else:
                from ..specs import get_spec

                check_segmenter(get_spec(model))
            from ..registry import load_model
            from ..video import VideoTracker

            tracker = VideoTracker(load_model(model, checkpoint=checkpoint, device=device, image_size=image_size),
                                   object_batch=8 if batch is None else batch)
        session = tracker.start(source)
    except BaseException:
        source.close()
        raise
    try:
        for (f, o), d in sorted(prompts.items()):
            tracker.add_prompt(session, frame=f, obj_id=o, points=d["points"] or None,
                               labels=d["labels"] or None, box=d["box"])
        if texts:
            _add_text_objects(tracker, session, texts, text_frame, text_threshold, (clip, clip_checkpoint, device))
        t0 = time.perf_counter()
        frames = track_into(out, formats, tracker, session, reverse=reverse, max_frames=max_frames, fps=fps)
        dt = time.perf_counter() - t0
    finally:
        session.close()
    summary = {"model": model, "video": str(video), "frames": frames, "objects": sorted(session.objects),
               "seconds": round(dt, 3), "out": str(out), "formats": [f.value for f in formats]}
    if session.labels:
        summary["labels"] = {str(k): v for k, v in sorted(session.labels.items())}
    if as_json:
        emit_json(summary)
    else:
        info(f"tracked {frames} frames of {len(summary['objects'])} object(s) in {dt:.1f} s -> {out}")


def parse_object_batch(text: Optional[str]) -> Optional[int]:
    """``--object-batch N`` -> N (a positive integer), or None when not given."""
    if text is None:
        return None
    try:
        n = int(text.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--object-batch must be a positive whole number of objects, got {text!r}. "
                         "Fix: pass e.g. --object-batch 8 (1 tracks the objects one at a time).")
    return n


def _export_tracker(folder: Path, checkpoint, device: str, texts, object_batch: Optional[int] = None):
    """``OnnxVideoTracker`` of an export folder (no torch import); torch-only options refused."""
    if checkpoint is not None or device != "cpu" or texts or object_batch is not None:
        raise InputError(f"--model {folder} is an export folder: onnxruntime runs its graphs, so --checkpoint, "
                         "--device, --text and --object-batch do not apply. Fix: drop those options (or pass a "
                         "model name to run it in torch).")
    from ..runtime import OnnxVideoTracker

    tracker = OnnxVideoTracker(folder)
    info(f"model: {tracker.model_name} (ONNX export {folder}, onnxruntime)")
    return tracker


def _add_text_objects(tracker, session, texts: List[str], frame: int, threshold: float, clip_args: tuple) -> None:
    """Add the objects of ``texts`` found on ``frame``; refuse a run where none is found."""
    name, checkpoint, device = clip_args
    if getattr(tracker, "concepts", None) is not None:  # SAM 3: detects on every frame from `frame` on
        added = tracker.add_text_prompt(session, frame, texts)
        for t in texts:
            info(f"  {t!r} from frame {frame}: {sum(lab == t for lab in added.values())} instance(s) on that "
                 "frame; new instances join as they appear")
        return
    native = callable(getattr(tracker.model, "predict_text", None))
    dense = None if native else build_clip(name, checkpoint, device, offline=False)
    added = tracker.add_text_prompt(session, frame, texts, clip=dense, threshold=threshold)
    for t in texts:
        ids = [o for o, lab in added.items() if lab == t]
        info(f"  {t!r} on frame {frame}: {len(ids)} object(s) {ids}")
    if not added:
        raise InputError(f"none of the texts {texts} was found on frame {frame}. Fix: try another --text-frame, a "
                         "lower --text-threshold, or other words.")


def track_into(out: Path, formats: List[TrackFormat], tracker, session, reverse: bool = False,
               max_frames: Optional[int] = None, fps: float = 24.0) -> int:
    """Propagate the prompted ``session`` and write every frame's masks in ``formats``; publish
    them as one set in ``out`` when done; with ``reverse`` a backward pass from the earliest
    prompt follows (each frame is written once). Returns the number of frames written. On any
    failure the finished frames go to ``out/track-partial/`` (named in the error) and ``out``
    keeps the previous run's files."""
    from ..io.outputs import OutputSet

    outs = OutputSet(out, "track").open()
    done: set = set()
    try:
        writers = _FrameWriters(outs, formats, fps)
        try:
            for rev in ([False, True] if reverse else [False]):
                for t, res in tracker.propagate(session, reverse=rev, max_frames=max_frames):
                    if t in done:  # the backward pass starts on a prompted frame already written
                        continue
                    writers.write(t, res, None if rev or writers.overlay is None else session.source.get(t))
                    done.add(t)
        finally:
            writers.close()
    except BaseException as exc:
        reported = _kept_partial(outs, exc, len(done), out)
        if reported is exc:
            raise
        raise reported from exc
    outs.commit()
    return len(done)


def _kept_partial(outs, exc: BaseException, frames: int, out: Path) -> BaseException:
    """Keep the finished frames of a failed run in ``out/track-partial/``; return the exception to
    raise: a samkit error that also names that folder, or ``exc`` itself (bugs, Ctrl-C) after a
    note on stderr."""
    from ..io.outputs import is_write_failure, write_error

    if outs.staging is not None and is_write_failure(exc, outs.staging):
        outs.discard()  # the disk refuses writes: nothing worth keeping, nothing changed in out
        return write_error(out, exc)
    folder = outs.keep_partial(reason=" ".join(str(exc).split()) or type(exc).__name__) if frames else None
    if folder is None:
        outs.discard()
        return exc
    note = (f"The {frames} finished frame(s) of this run are in {folder}/; the files of earlier runs in {out} "
            "are unchanged.")
    if isinstance(exc, SamkitError):
        try:
            return type(exc)(f"{exc} {note}")
        except Exception:  # noqa: BLE001 - an error type with another signature: keep it, note aside
            pass
    info(note)
    return exc


COMMAND = track
app = typer.Typer(name="track", add_completion=False, rich_markup_mode="rich", no_args_is_help=True)
app.command("track", epilog=EPILOG, cls=Command)(track)
