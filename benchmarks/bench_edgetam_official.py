"""samkit's EdgeTAM against the official EdgeTAM code, which lives in its own virtual
environment (PyPI ``edgetam-dimos``; its module is named ``sam2`` like the official SAM 2 in
ours, so the two cannot share one environment).

    python benchmarks/bench_edgetam_official.py --edgetam-venv /tmp/edgetam_venv [--frames 4] [--runs 3]

(or ``SAMKIT_EDGETAM_VENV=/tmp/edgetam_venv``). Creating that environment (CPU torch only, no
torchvision: the test-only stand-in ``tests/oracle_shims`` is put on its PYTHONPATH):

    python -m venv /tmp/edgetam_venv
    /tmp/edgetam_venv/bin/pip install torch==2.13.0 numpy pillow tqdm hydra-core omegaconf iopath pyyaml safetensors
    /tmp/edgetam_venv/bin/pip install --no-deps edgetam-dimos==1.0.1 timm==1.0.31

(check first with ``pip install --dry-run torch==2.13.0`` that the CPU wheel is the one chosen.)
The official code runs in a child process (``_edgetam_official_child.py``) on the SAME
synthesized weights (the official checkpoint layout, ``tests/parity.py``) and the same DAVIS
JPEG frames; the two environments run alternately (A B A B ...): encoder passes one by one, then
video frames one by one. Before timing, the prompt and every tracked frame's logits are
compared. Ratio = ours / official (< 1: samkit faster).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DAVIS = ROOT.parent / "shared" / "data" / "davis"
CHILD = Path(__file__).resolve().parent / "_edgetam_official_child.py"


def venv_python(venv) -> Path:
    """The interpreter of the EdgeTAM environment (argument, else SAMKIT_EDGETAM_VENV)."""
    venv = venv or os.environ.get("SAMKIT_EDGETAM_VENV")
    if not venv:
        raise RuntimeError("no EdgeTAM environment. Fix: pass --edgetam-venv DIR or set SAMKIT_EDGETAM_VENV "
                         "(see this script's docstring for how to create it).")
    py = Path(venv) / "bin" / "python"
    if not py.exists():
        raise RuntimeError(f"{py} does not exist. Fix: create the environment as this script's docstring says.")
    return py


class Official:
    """The child process running the official code; ``ask`` sends one command, returns the answer."""

    def __init__(self, py: Path, ckpt: Path, frames_dir: Path, out_dir: Path, threads: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "tests" / "oracle_shims"))
        self.err = open(out_dir / "child_stderr.log", "w")
        self.proc = subprocess.Popen([str(py), str(CHILD), "--ckpt", str(ckpt), "--frames-dir", str(frames_dir),
                                      "--out-dir", str(out_dir), "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True, env=env)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the official EdgeTAM process ended; see {self.err.name}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        self.err.close()


def _diff(a: np.ndarray, b: np.ndarray) -> tuple:
    return float(np.abs(a - b).max()), float(((a > 0) == (b > 0)).mean())


def run(venv=None, davis: Path = DAVIS, clip: str = "blackswan", frames: int = 4, runs: int = 3,
        threads: int = 0) -> str:
    from parity import synth_checkpoint_file
    from PIL import Image

    from samkit.registry import load_model
    from samkit.video import VideoTracker
    from samkit.video.memory_tracker import preprocess_video_frame

    py = venv_python(venv)
    threads = threads or torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="samkit_edgetam_"))
    files = sorted((Path(davis) / "JPEGImages" / "480p" / clip).glob("*.jpg"))[:frames]
    if len(files) < 2:
        raise RuntimeError(f"no DAVIS clip {clip!r} under {davis}. Fix: pass --davis <folder with JPEGImages/480p>.")
    (work / "frames").mkdir()
    for i, f in enumerate(files):  # the same JPEG bytes for both sides, named as the official loader wants
        shutil.copyfile(f, work / "frames" / f"{i:05d}.jpg")
    vid = np.stack([np.asarray(Image.open(work / "frames" / f"{i:05d}.jpg").convert("RGB")) for i in range(len(files))])
    T, H, W = vid.shape[:3]
    ckpt = synth_checkpoint_file("edgetam", work)
    model = load_model("edgetam", checkpoint=ckpt)
    tr = VideoTracker(model, keep_logits=True)
    off = Official(py, ckpt, work / "frames", work, threads)
    try:
        from parity import require_parity

        golden = off.ask(op="golden", path=str(require_parity() / "golden" / "edgetam.safetensors"))["maxabs"]
        x = preprocess_video_frame(vid[0], 1024, tr.mean, tr.std, torch.device("cpu"))
        enc = ([], [])
        with torch.inference_mode():
            model.forward_image(x), off.ask(op="encode")  # warm-up
            for _ in range(runs):
                t0 = time.perf_counter()
                model.forward_image(x)
                enc[0].append(time.perf_counter() - t0)
                enc[1].append(off.ask(op="encode")["s"])
        point = [[W * 0.5, H * 0.45]]
        s = tr.start(vid)
        r0 = tr.add_prompt(s, 0, 1, points=point, labels=[1])
        ans = off.ask(op="prompt", points=point, labels=[1])  # not timed: the official init_state encoded frame 0
        worst, agree = _diff(r0.logits[1], np.load(ans["logits"]))
        steps = tr.propagate(s)
        next(steps), off.ask(op="step")  # both yield the prompted frame first: not timed
        per = ([], [])
        for _ in range(T - 1):
            t0 = time.perf_counter()
            f, res = next(steps)
            per[0].append(time.perf_counter() - t0)
            ans = off.ask(op="step")
            per[1].append(ans["s"])
            assert ans["frame"] == f, (ans, f)
            d, g = _diff(res.logits[1], np.load(ans["logits"]))
            worst, agree = max(worst, d), min(agree, g)
    finally:
        off.close()
    rows = [("image encoder (forward_image)", statistics.median(enc[0]), statistics.median(enc[1])),
            ("video frame, 1 object", statistics.median(per[0]), statistics.median(per[1]))]
    lines = [f"EdgeTAM, samkit vs official edgetam-dimos ({off.ready.get('torch')}, {off.ready.get('threads')} threads "
             f"in its own environment), alternating; DAVIS {clip} {W}x{H}, {T - 1} tracked frames, {runs} encoder runs; "
             f"same computation: video-resolution logits max-abs {worst:.1e}, sign agreement {agree:.5f} "
             f"(prompt + every tracked frame); the official loader decodes and resizes all frames up front, "
             f"outside its per-frame times, ours inside them. The environment reproduces the stored official "
             f"image golden (p0a low-res logits) to max-abs {golden:.1e}",
             "", "| stage | samkit | official | ours/official |", "|---|---|---|---|"]
    for stage, a, b in rows:
        lines.append(f"| {stage} | {a:.3f} s | {b:.3f} s | {a / b:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edgetam-venv", default=None, help="the EdgeTAM virtual environment (or SAMKIT_EDGETAM_VENV)")
    ap.add_argument("--davis", default=str(DAVIS))
    ap.add_argument("--clip", default="blackswan")
    ap.add_argument("--frames", type=int, default=4, help="DAVIS frames, the first one prompted")
    ap.add_argument("--runs", type=int, default=3, help="encoder passes per side")
    ap.add_argument("--threads", type=int, default=0, help="torch threads on both sides (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        print(run(a.edgetam_venv, Path(a.davis), a.clip, a.frames, a.runs, a.threads))
    except RuntimeError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
