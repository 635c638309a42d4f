"""Access to ../shared/parity: manifests, golden tensors and the weight synthesizer."""
from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]


def parity_dir() -> Path:
    env = os.environ.get("SAMKIT_PARITY_DIR")
    return Path(env) if env else _REPO.parent / "shared" / "parity"


def require_parity() -> Path:
    d = parity_dir()
    if not (d / "synth_weights.py").exists():
        pytest.fail(f"parity data not found at {d}; set SAMKIT_PARITY_DIR to the shared/parity folder")
    return d


@functools.lru_cache(maxsize=None)
def _synth_module():
    path = require_parity() / "synth_weights.py"
    spec = importlib.util.spec_from_file_location("samkit_synth_weights", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def manifest(name: str) -> list:
    return json.loads((require_parity() / "manifests" / f"{name}.json").read_text())


def synth_state_dict(name: str, seed: int = 0) -> dict:
    """The exact random weights of the goldens, in the official checkpoint key layout."""
    return _synth_module().synth_state_dict(manifest(name), seed)


def golden(name: str):
    """(tensors dict, meta dict) of golden/<name>.safetensors/.json."""
    from safetensors.torch import load_file

    d = require_parity() / "golden"
    return load_file(str(d / f"{name}.safetensors")), json.loads((d / f"{name}.json").read_text())


_WRAPPED = ("efficient_sam", "sam2", "efficienttam", "edgetam")


def synth_checkpoint_file(name: str, directory: Path, seed: int = 0) -> Path:
    """Write the synthesized weights as the official file would look (wrapped under "model"
    for the families whose releases do that) and return its path."""
    import torch

    path = Path(directory) / f"{name}_synth_seed{seed}.pt"
    if not path.exists():
        sd = synth_state_dict(name, seed)
        wrapped = name.startswith(_WRAPPED)
        tmp = path.with_suffix(".part")
        torch.save({"model": sd} if wrapped else sd, tmp)
        tmp.replace(path)
    return path
