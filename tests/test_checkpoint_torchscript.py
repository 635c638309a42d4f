"""TorchScript archives (OpenAI's CLIP files) are read without executing them: the state dict equals
``torch.jit.load(f).state_dict()``, and anything but tensors and inert module records is refused."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import _clip_oracle as co
from samkit import families, specs
from samkit.checkpoint import read_state_dict
from samkit.errors import CheckpointError
from samkit.registry import load_model


class _Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4)
        self.half_linear = nn.Linear(4, 2).half()  # a second Linear class: a mangled name in code/
        self.bn = nn.BatchNorm2d(3)  # running stats and num_batches_tracked are buffers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.half_linear(self.norm(x).half()).float()


class _Scripted(nn.Module):
    """Parameters, buffers, a plain tensor attribute (not in the state dict, like OpenAI's
    ``attn_mask``), nested modules, half tensors, a MultiheadAttention (None parameters) and a
    buffer that is a strided view of a parameter's storage."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.scale = nn.Parameter(torch.linspace(0, 1, 5))
        self.register_buffer("resolution", torch.tensor(224))
        self.register_buffer("view", self.linear.weight.detach()[:, ::2])
        self.mask = torch.full((2, 2), float("-inf")).triu(1)
        self.inner = nn.Sequential(_Inner(), nn.Identity())
        self.attn = nn.MultiheadAttention(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(self.linear(x))
        return y.sum() + self.mask.sum() + self.scale.sum() + self.view.sum()


def _equal(got: dict, ref: dict) -> None:
    assert list(got) == list(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape, k
        assert torch.equal(got[k], ref[k]), k


def test_scripted_archive_reads_like_jit_load(tmp_path):
    torch.manual_seed(0)
    module = _Scripted()
    module.inner[0].bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    ref = torch.jit.load(str(path)).state_dict()
    got = read_state_dict(path)
    _equal(got, ref)
    assert "mask" not in got and "resolution" in got and got["inner.0.half_linear.weight"].dtype == torch.float16
    assert "attn.q_proj_weight" not in got  # a None parameter is no entry


def _traced_clip(name: str, seed: int, half: bool) -> torch.jit.ScriptModule:
    """A traced ClipModel with the three non-weight entries of OpenAI's archives as buffers."""
    model = co.build(name).eval()
    model.load_state_dict(co.synth_state_dict(model, seed))
    for key, value in (("input_resolution", model.input_size), ("context_length", 77), ("vocab_size", 49408)):
        model._buffers[key] = torch.tensor(value)  # beside the Python attributes of the same names
    s = model.input_size
    ids = torch.zeros(1, 77, dtype=torch.long)
    ids[0, :2] = torch.tensor([49406, 49407])
    traced = torch.jit.trace(model, (torch.zeros(1, 3, s, s), ids), check_trace=False)
    return traced.half() if half else traced


def _register_tiny_clip(monkeypatch, name: str, config: str) -> specs.ModelSpec:
    spec = specs.ModelSpec(name=name, family="clip", module="samkit.models.clip", url=None, filename=f"{name}.pt",
                           license="MIT", paper="test", checkpoint_format="openai_clip", kind="clip",
                           input_size=co.CONFIGS[config]["input_size"], pixel_mean=specs.CLIP_MEAN,
                           pixel_std=specs.CLIP_STD)
    monkeypatch.setitem(specs.MODELS, name, spec)
    monkeypatch.setitem(families._BUILDERS, name, lambda: co.build(config))
    return spec


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("config", ["vit_tiny", "rn_tiny"])
def test_traced_half_clip_archive_loads_through_load_model(tmp_path, monkeypatch, config):
    path = tmp_path / f"{config}.pt"
    torch.jit.save(_traced_clip(config, seed=3, half=True), str(path))
    got = read_state_dict(path)
    _equal(got, torch.jit.load(str(path)).state_dict())
    assert {"input_resolution", "context_length", "vocab_size"} <= set(got)
    _register_tiny_clip(monkeypatch, "tiny_clip", config)
    model = load_model("tiny_clip", checkpoint=path)
    synth = co.synth_state_dict(co.build(config), 3)
    for k, v in model.state_dict().items():  # the archive's half weights, as float32
        assert v.dtype == synth[k].dtype and torch.equal(v, synth[k].half().to(v.dtype)), k
    expected = co.build(config).eval()
    expected.load_state_dict({k: v.half().to(v.dtype) for k, v in synth.items()})
    s = model.input_size
    x = torch.randn(1, 3, s, s)
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), expected.encode_image(x))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_clip_file_of_another_model_names_it(tmp_path, monkeypatch):
    path = tmp_path / "RN-tiny.pt"
    torch.jit.save(_traced_clip("rn_tiny", seed=0, half=False), str(path))
    _register_tiny_clip(monkeypatch, "tiny_clip_vit", "vit_tiny")
    _register_tiny_clip(monkeypatch, "tiny_clip_rn", "rn_tiny")
    with pytest.raises(CheckpointError, match=r"does not fit model 'tiny_clip_vit'(.|\n)*looks like a checkpoint "
                                              r"of tiny_clip_rn; call load_model\('tiny_clip_rn'"):
        load_model("tiny_clip_vit", checkpoint=path)


def _rewrite(src: Path, dst: Path, replace: dict) -> None:
    """Copy a zip, replacing (bytes) or dropping (None) members whose name ends with a key."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            key = next((k for k in replace if info.filename.endswith(k)), None)
            if key is None:
                zout.writestr(info, zin.read(info))
            elif replace[key] is not None:
                zout.writestr(info, replace[key])


@pytest.fixture
def scripted(tmp_path) -> Path:
    path = tmp_path / "ok.pt"
    torch.jit.save(torch.jit.script(_Scripted()), str(path))
    return path


def test_a_global_outside_the_allowed_set_is_refused_and_never_run(scripted, tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Payload(str(marker)), protocol=2)
    bad = tmp_path / "ViT-B-16.pt"
    _rewrite(scripted, bad, {"/data.pkl": payload})
    with pytest.raises(CheckpointError, match=r"refusing to load .*Unsupported global (posix|os)\.system"):
        read_state_dict(bad)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_an_unknown_torch_global_is_refused(scripted, tmp_path):
    data = zipfile.ZipFile(scripted).read("ok/data.pkl")
    assert b"torch._utils\n_rebuild_tensor_v2" in data
    bad = tmp_path / "bad.pt"
    _rewrite(scripted, bad, {"/data.pkl": data.replace(b"torch._utils\n_rebuild_tensor_v2",
                                                        b"torch._utils\n_rebuild_qtensor_x")})
    with pytest.raises(CheckpointError, match="refusing to load .*_rebuild_qtensor_x"):
        read_state_dict(bad)


@pytest.mark.parametrize("member,content,why", [
    ("/data/0", None, "KeyError"),
    ("/data/0", b"\x00\x01", "storage 0 holds 2 bytes"),
    ("/data.pkl", b"\x80\x02garbage", "UnpicklingError"),
])
def test_missing_or_short_storage_is_corrupt(scripted, tmp_path, member, content, why):
    bad = tmp_path / "bad.pt"
    _rewrite(scripted, bad, {member: content})
    with pytest.raises(CheckpointError, match=f"truncated or corrupt.*{why}"):
        read_state_dict(bad)


def test_plain_torch_zip_is_not_taken_for_torchscript(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert list(read_state_dict(path)) == ["w"]
