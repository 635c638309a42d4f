"""samkit against the peer users pick instead: Hugging Face transformers' SamModel, Sam2Model,
Sam2VideoModel, EdgeTamModel and EdgeTamVideoModel, on the same synthesized weights (converted
to transformers' layout by ``tests/_hf_peers.py``), the same inputs, in the same process, calls
interleaved.

    python benchmarks/bench_peers.py [--models sam_vit_b sam2.1_hiera_t edgetam] [--video-models sam2.1_hiera_t edgetam]
                                     [--runs 3] [--frames 4] [--clip blackswan]

Stages: image encoder (1200 x 1800 image, 1024 input), point -> full-resolution mask (decoder +
each side's own post-processing to the image size), and per tracked frame of one object on a
short DAVIS clip (``<davis>/JPEGImages/480p/<clip>``, first ``--frames`` frames; frame 0 is the
prompted frame and is not counted; both trackers see the same normalised frames). Before timing,
each pair is checked to compute the same thing: low-res logits max-abs difference and the IoU of
the full-resolution masks (video: the video-resolution logits of every frame). Ratio = ours /
transformers (< 1: samkit faster). transformers' EdgeTAM needs timm (RepViT trunk through its
TimmWrapper; ``pip install --no-deps timm==1.0.31``, or a ``--target`` folder named by
``SAMKIT_PEERS_TIMM``): without it its rows say so.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench_image import interleaved

IMAGE_MODELS = ["sam_vit_b", "sam2.1_hiera_t", "edgetam"]
VIDEO_MODELS = ["sam2.1_hiera_t", "edgetam"]
DAVIS = ROOT.parent / "shared" / "data" / "davis"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def bench_image(name: str, image: np.ndarray, warmup: int, runs: int) -> list:
    """Rows (stage, ours s, transformers s, agreement) for one image model."""
    import _hf_peers as P
    from parity import synth_state_dict

    from samkit import ImagePredictor
    from samkit.checkpoint import load_into
    from samkit.registry import build_model

    ours = build_model(name)
    load_into(ours, synth_state_dict(name), name)
    ours.eval()
    hf = P.load_hf(name)
    pred = ImagePredictor(ours, selection="native").set_image(image)
    x, t = ours.preprocess(image)
    h, w = image.shape[:2]
    point, label = np.array([[w * 0.4, h * 0.55]], np.float32), np.array([1], np.int32)
    p = t.coords_to_frame(torch.from_numpy(point.astype(np.float64))).float()
    lab = torch.from_numpy(label)
    with torch.inference_mode():
        emb = P.hf_encode(hf, x)
        low, _ = P.hf_decode(hf, emb, p, lab, False)
        full = P.hf_full_mask(hf, low, (h, w), t.input_size)
    mine = pred.predict(points=point, labels=label, multimask=False)
    agree = (f"low-res max-abs {np.abs(mine.low_res_logits - low.numpy()).max():.1e}, "
             f"mask IoU {_iou(mine.masks[0], full[0].numpy()):.4f}")
    enc = interleaved([lambda: ours.encode(x), lambda: P.hf_encode(hf, x)], warmup, runs)

    def hf_click():
        lo, _ = P.hf_decode(hf, emb, p, lab, False)
        return P.hf_full_mask(hf, lo, (h, w), t.input_size)

    dec = interleaved([lambda: pred.predict(points=point, labels=label, multimask=False), hf_click],
                      warmup + 2, runs * 4)
    return [(name, "image encoder", enc[0], enc[1], agree),
            (name, "point -> full mask", dec[0], dec[1], "")]


def load_clip(davis: Path, clip: str, frames: int) -> np.ndarray:
    from PIL import Image

    files = sorted((davis / "JPEGImages" / "480p" / clip).glob("*.jpg"))[:frames]
    if len(files) < 2:
        raise RuntimeError(f"no DAVIS clip {clip!r} under {davis}: pass --davis <folder with JPEGImages/480p>")
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def bench_video(name: str, vid: np.ndarray) -> list:
    """Per tracked frame time of one object, samkit and transformers stepped alternately frame
    by frame on the same frames; plus the largest logit difference over the clip."""
    import tempfile

    import _hf_peers as P
    from parity import synth_checkpoint_file

    from samkit.registry import load_model
    from samkit.video import VideoTracker
    from samkit.video.memory_tracker import preprocess_video_frame

    T, H, W = vid.shape[:3]
    point = np.array([[W * 0.5, H * 0.45]], np.float32)
    tr = VideoTracker(load_model(name, checkpoint=synth_checkpoint_file(name, Path(tempfile.mkdtemp()))),
                      keep_logits=True)
    hf = P.load_hf(name, video=True)
    frames = torch.cat([preprocess_video_frame(f, 1024, tr.mean, tr.std, torch.device("cpu")) for f in vid])
    s = tr.start(vid)
    tr.add_prompt(s, 0, 1, points=point, labels=[1])
    mine = tr.propagate(s)
    with torch.inference_mode():
        sess = P.hf_video_session(hf, frames, H, W)
        P.hf_video_prompt(hf, sess, 0, 1, torch.from_numpy(point) * torch.tensor([1024.0 / W, 1024.0 / H]),
                          torch.tensor([1]))
    theirs = P.hf_video_frames(hf, sess, H, W)
    times, worst, agree = ([], []), 0.0, 1.0
    with torch.inference_mode():
        next(mine), next(theirs)  # both yield the prompted frame first: not timed
        for _ in range(T - 1):
            t0 = time.perf_counter()
            f, res = next(mine)
            times[0].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            f_hf, lg_hf = next(theirs)
            times[1].append(time.perf_counter() - t0)
            a, b = res.logits[1], lg_hf[0].numpy()
            assert f == f_hf, (f, f_hf)
            worst = max(worst, float(np.abs(a - b).max()))
            agree = min(agree, float(((a > 0) == (b > 0)).mean()))
    note = f"{T - 1} tracked frames {W}x{H}; logits max-abs {worst:.1e}, sign agreement {agree:.5f}"
    return [(name, "video frame, 1 object", statistics.median(times[0]), statistics.median(times[1]), note)]


def format_rows(rows) -> str:
    lines = ["| model | stage | samkit | transformers | ours/transformers | same computation? |",
             "|---|---|---|---|---|---|"]
    for name, stage, a, b, note in rows:
        def fmt(v):
            return "-" if v is None else (f"{v:.3f} s" if v >= 0.1 else f"{1000 * v:.1f} ms")
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        lines.append(f"| {name} | {stage} | {fmt(a)} | {fmt(b)} | {ratio} | {note} |")
    return "\n".join(lines)


def run(models=None, video_models=None, warmup: int = 1, runs: int = 3, frames: int = 4,
        clip: str = "blackswan", davis: Path = DAVIS, image_size=(1200, 1800)) -> str:
    from PIL import Image

    from samkit.io import example_image_path

    img = Image.open(example_image_path()).convert("RGB").resize((image_size[1], image_size[0]), Image.BICUBIC)
    image = np.asarray(img)
    rows = []
    for name in IMAGE_MODELS if models is None else models:
        rows += _guarded(name, "image", lambda name=name: bench_image(name, image, warmup, runs))
        print("\n".join(format_rows(rows[-2:]).splitlines()[2:]), flush=True)
    vids = VIDEO_MODELS if video_models is None else video_models
    if vids and frames > 1:
        vid = load_clip(Path(davis), clip, frames)
        for name in vids:
            rows += _guarded(name, "video", lambda name=name: bench_video(name, vid))
            print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
    return format_rows(rows)


def _guarded(name: str, what: str, fn) -> list:
    """The rows of ``fn``, or one row saying why the peer could not run (EdgeTAM without timm)."""
    try:
        return fn()
    except ModuleNotFoundError as exc:
        return [(name, f"{what} (not run)", None, None, str(exc))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=IMAGE_MODELS)
    ap.add_argument("--video-models", nargs="*", default=VIDEO_MODELS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--frames", type=int, default=4, help="DAVIS frames, the first one prompted (0: no video)")
    ap.add_argument("--clip", default="blackswan")
    ap.add_argument("--davis", default=str(DAVIS))
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(run(args.models, args.video_models, args.warmup, args.runs, args.frames, args.clip, Path(args.davis)))


if __name__ == "__main__":
    main()
