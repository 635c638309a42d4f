"""Shared fixtures: synthesized official-layout checkpoints and the official oracles."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from oracle_shims import shim_on_path as official_import_path  # noqa: E402,F401  (used by oracle tests)
from parity import synth_checkpoint_file  # noqa: E402


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny tensors: threads only add overhead)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty weights cache (so the CLI's default model is classic) and no network: tests of the
    command line use it (``pytestmark = pytest.mark.usefixtures("empty_cache")``)."""
    home = tmp_path / "cache"
    monkeypatch.setenv("SAMKIT_HOME", str(home))
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    return home


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


@pytest.fixture(scope="module")
def sam2_family(request, synth_checkpoint):
    """One SAM 2-family model with image goldens (``sam2.1_hiera_t``, ``edgetam``,
    ``efficienttam_ti``), loaded through the registry from its official-layout synthesized file,
    with its goldens. The name is the indirect parameter (test_sam2_family_image.py runs every
    family) or the test module's ``NAME``. Fields: ``name``, ``model``, ``g`` (golden tensors),
    ``meta`` (their description), ``features0`` (``model.encode`` of golden image 0) and
    ``report`` (max-abs differences, printed with ``-s``)."""
    import torch

    from parity import golden
    from samkit.registry import load_model

    name = getattr(request, "param", None) or request.module.NAME
    torch.manual_seed(0)
    model = load_model(name, checkpoint=synth_checkpoint(name))
    g, meta = golden(name)
    x, _ = model.preprocess(g["image_0"].numpy())
    with torch.inference_mode():
        features0 = model.encode(x)
    report: dict = {}
    yield SimpleNamespace(name=name, model=model, g=g, meta=meta, features0=features0, report=report)
    if report:
        print(f"\n{name} max-abs differences:", {k: f"{v:.2e}" if isinstance(v, float) else v
                                                 for k, v in report.items()})


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """``tiny_export(family, **options) -> (model, folder)``: a reduced model of the family
    (``tests/_tiny_families.py``) exported once per session with ``samkit.export.export_onnx``."""
    cache: dict = {}

    def get(family: str, **options):
        key = (family, tuple(sorted(options.items())))
        if key not in cache:
            from _tiny_families import tiny_family
            from samkit.export import export_onnx

            model = tiny_family(family)
            folder = tmp_path_factory.mktemp(f"export_{family}")
            cache[key] = (model, export_onnx(model, folder, name=family, **options))
        return cache[key]

    return get
