"""samkit label --engine ray, run in a pytest subprocess (see ``label_ray_cases.py``: a Ray driver
whose stalled job was abandoned is ended by Ray about a minute after ``ray.shutdown()``, which
would take a test worker and whatever test it runs then with it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _run_cases(marker: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS.parent), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-m", marker,
           str(TESTS / "label_ray_cases.py")]
    done = subprocess.run(cmd, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    tail = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"the Ray cases failed (exit {done.returncode}):\n{tail}"
    assert " passed" in done.stdout and " failed" not in done.stdout, tail


def test_ray_engine_cases():
    """Ray == serial on the tiny neural model, and a stalled Ray job stops with StallError."""
    _run_cases("not slow")


@pytest.mark.slow
def test_ray_engine_slow_cases():
    """Ray == serial on the classic engine (2 actors, 2 images per batch)."""
    _run_cases("slow")
