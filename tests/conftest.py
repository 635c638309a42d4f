"""Shared fixtures: synthesized official-layout checkpoints and the official oracles."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from oracle_shims import shim_on_path as official_import_path  # noqa: E402,F401  (used by oracle tests)
from parity import synth_checkpoint_file  # noqa: E402


@pytest.fixture(scope="session")
def synth_ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synth_ckpts")


@pytest.fixture(scope="session")
def synth_checkpoint(synth_ckpt_dir):
    """``synth_checkpoint("sam_vit_b") -> Path`` of an official-layout file with seed-0 weights."""
    return lambda name, seed=0: synth_checkpoint_file(name, synth_ckpt_dir, seed)


@pytest.fixture(scope="session")
def sam_vit_b(synth_checkpoint):
    """samkit's sam_vit_b loaded through the official-checkpoint loader with the golden weights."""
    from samkit.registry import load_model

    return load_model("sam_vit_b", checkpoint=synth_checkpoint("sam_vit_b"))
