"""samkit.registry.load_model with a tiny fake family (no real weights, no network)."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from safetensors.torch import save_file

import _tiny_models as tiny
from samkit import registry, specs
from samkit.errors import CheckpointError, DownloadError


@pytest.fixture(autouse=True)
def _tiny_family(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SAMKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    tiny.register(monkeypatch, "tiny_a", url="http://127.0.0.1:9/tiny_a.pt")
    tiny.register(monkeypatch, "tiny_wide", tiny.build_tiny_wide)
    tiny.register(monkeypatch, "tiny_nc", commercial_use=False, license="Test Licence (non-commercial use only)")
    tiny.register(monkeypatch, "tiny_classic", tiny.build_classic_tiny, url=None, filename=None, neural=False,
                  checkpoint_format="none")
    monkeypatch.setattr(registry, "_LICENSE_WARNED", set())
    yield  # signatures are cached per builder function; tiny builders never collide with real ones


def test_load_model_from_file(tmp_path):
    sd = tiny.upstream_state_dict(seed=2)
    path = tmp_path / "w.pt"
    torch.save({"model": sd}, path)
    model = registry.load_model("tiny_a", checkpoint=path)
    assert not model.training
    assert model.spec is specs.MODELS["tiny_a"]
    assert torch.equal(model.encoder.weight, sd["backbone.weight"])
    x = torch.ones(1, 3)
    expected = (x @ sd["backbone.weight"].T + sd["backbone.bias"]) * sd["scale"]
    expected = expected @ sd["head.weight"].T + sd["head.bias"]
    assert torch.allclose(model(x), expected)


def test_load_model_safetensors_by_spec(tmp_path):
    sd = tiny.upstream_state_dict(dim=8)
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    model = registry.load_model(specs.MODELS["tiny_wide"], checkpoint=str(path))
    assert model.encoder.weight.shape == (8, 3)


def test_load_model_uses_the_cache(tmp_path):
    from samkit import hub

    dest = hub.cache_dir() / "tiny_a.pt"
    dest.parent.mkdir(parents=True)
    sd = tiny.upstream_state_dict(seed=9)
    torch.save(sd, dest)
    model = registry.load_model("tiny_a", download=False)
    assert torch.equal(model.head.weight, sd["head.weight"])


def test_download_false_fails_fast_when_missing():
    from samkit import hub

    with pytest.raises(DownloadError) as err:
        registry.load_model("tiny_a", download=False)
    assert str(hub.cache_dir() / "tiny_a.pt") in str(err.value)
    assert "http://127.0.0.1:9/tiny_a.pt" in str(err.value)


def test_wrong_model_is_identified(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(tiny.upstream_state_dict(dim=8), path)
    with pytest.raises(CheckpointError, match=r"looks like a checkpoint of tiny_wide; call load_model\('tiny_wide'"):
        registry.load_model("tiny_a", checkpoint=path)
    model = registry.load_model("tiny_a", checkpoint=path, strict=False)
    assert torch.equal(model.scale, torch.ones(4))  # mis-shaped keys were skipped


def test_unknown_name_lists_models():
    with pytest.raises(KeyError) as err:
        registry.load_model("tiny_b")
    assert "tiny_a" in str(err.value) and "Did you mean" in str(err.value)


def test_classic_needs_no_checkpoint():
    engine = registry.load_model("tiny_classic")
    assert isinstance(engine, tiny.TinyClassic)
    assert engine.spec.name == "tiny_classic"


def test_non_commercial_warning_once(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(tiny.upstream_state_dict(), path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.load_model("tiny_nc", checkpoint=path)
        registry.load_model("tiny_nc", checkpoint=path)
        registry.load_model("tiny_a", checkpoint=path)
    texts = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(texts) == 1 and "non-commercial" in texts[0] and "tiny_nc" in texts[0]


def test_edge_sam_specs_are_non_commercial():
    for name in ("edge_sam", "edge_sam_3x"):
        spec = specs.get_spec(name)
        assert spec.commercial_use is False and "non-commercial" in spec.license


def test_build_model_errors(monkeypatch):
    tiny.register(monkeypatch, "tiny_gone", build=None)
    with pytest.raises(ImportError, match="registers no builder for model 'tiny_gone'"):
        registry.build_model("tiny_gone")
    spec = dataclasses.replace(tiny.spec("tiny_mod"), module="samkit_missing_mod")
    with pytest.raises(ImportError, match="samkit_missing_mod"):
        registry.build_model(spec)
    model = registry.build_model("tiny_a")
    assert model.training and model.spec.name == "tiny_a"


def test_bad_device_is_input_error(tmp_path):
    from samkit.errors import InputError

    with pytest.raises(InputError, match="not a valid torch device"):
        registry.load_model("tiny_a", checkpoint=tmp_path / "x.pt", device="gpu0")
