"""samkit.checkpoint: safe reading of every supported container, remap dispatch, strict loads."""
from __future__ import annotations

import io
import os
import tracemalloc
import zipfile

import pytest
import torch
from safetensors.torch import save_file

import _tiny_models as tiny
from samkit import checkpoint as ck
from samkit import specs
from samkit.errors import CheckpointError


class NotAllowed:
    """A custom class: unpickling it needs an arbitrary global."""

    def __init__(self):
        self.payload = "anything"


@pytest.fixture(autouse=True)
def _tiny_family(monkeypatch):
    tiny.register(monkeypatch, "tiny_a")
    tiny.register(monkeypatch, "tiny_wide", tiny.build_tiny_wide)
    yield  # signatures are cached per builder function; tiny builders never collide with real ones


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_torch_files_and_wrappers(tmp_path, wrapper, suffix):
    sd = tiny.upstream_state_dict()
    obj = sd if wrapper is None else {wrapper: sd, "epoch": 3}
    path = tmp_path / f"w{suffix}"
    torch.save(obj, path)
    assert _equal(ck.read_state_dict(path), sd)


def test_legacy_torch_format(tmp_path):
    sd = tiny.upstream_state_dict()
    path = tmp_path / "old.pth"
    torch.save({"model": sd}, path, _use_new_zipfile_serialization=False)
    assert _equal(ck.read_state_dict(path), sd)


def test_safetensors(tmp_path):
    sd = tiny.upstream_state_dict()
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    out = ck.read_state_dict(path)
    assert _equal(out, sd) and all(v.device.type == "cpu" for v in out.values())


def test_module_prefix_is_stripped(tmp_path):
    sd = tiny.upstream_state_dict()
    path = tmp_path / "ddp.pt"
    torch.save({"module." + k: v for k, v in sd.items()}, path)
    assert _equal(ck.read_state_dict(path), sd)


def test_zip_holding_a_pt(tmp_path):
    """EfficientSAM ViT-S ships as efficient_sam_vits.pt.zip: an outer zip around a torch zip."""
    sd = tiny.upstream_state_dict(seed=3)
    buf = io.BytesIO()
    torch.save({"model": sd}, buf)
    path = tmp_path / "efficient_sam_vits.pt.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__MACOSX/._efficient_sam_vits.pt", b"junk")
        zf.writestr("weights/efficient_sam_vits.pt", buf.getvalue())
    assert _equal(ck.read_state_dict(path), sd)


def test_torch_archive_named_zip_is_not_mistaken_for_outer_zip(tmp_path):
    sd = tiny.upstream_state_dict()
    path = tmp_path / "plain.zip"
    torch.save(sd, path)  # a torch.save file is itself a zip with */data.pkl
    assert _equal(ck.read_state_dict(path), sd)


def test_zip_with_two_checkpoints_is_refused(tmp_path):
    path = tmp_path / "two.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.pt", b"1")
        zf.writestr("b.pt", b"2")
    with pytest.raises(CheckpointError, match="2 checkpoint members.*Fix: unzip"):
        ck.read_state_dict(path)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": tiny.upstream_state_dict(), "extra": NotAllowed()}, path)
    with pytest.raises(CheckpointError) as err:
        ck.read_state_dict(path)
    msg = str(err.value)
    assert "weights_only=True" in msg and "NotAllowed" in msg
    assert "safetensors" in msg and "Fix" in msg and str(path) in msg


@pytest.mark.parametrize("keep", [0.5, 0.05])
@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file(tmp_path, keep, legacy):
    path = tmp_path / "sam_vit_b_01ec64.pth"  # an official file name: the fix names the model
    torch.save({"model": tiny.upstream_state_dict()}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(CheckpointError) as err:
        ck.read_state_dict(path)
    msg = str(err.value)
    assert "truncated or corrupt" in msg and str(path) in msg
    assert "samkit models download sam_vit_b" in msg


def test_truncated_inner_member_of_zip(tmp_path):
    buf = io.BytesIO()
    torch.save(tiny.upstream_state_dict(), buf)
    path = tmp_path / "w.pt.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("w.pt", buf.getvalue()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ck.read_state_dict(path)


def _zip_of_zeros(path, n_bytes: int) -> None:
    """A zip bomb: ``n_bytes`` of zeros streamed into one deflated member (never in memory)."""
    block = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("weights/model.pt", "w") as dst:
            for start in range(0, n_bytes, len(block)):
                dst.write(block[: min(len(block), n_bytes - start)])


def test_zip_bomb_is_refused_by_size_limit_argument_and_env(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pt.zip"
    _zip_of_zeros(path, 8 << 20)  # 8 MiB of zeros in about 8 kB
    assert path.stat().st_size < 64 * 1024
    with pytest.raises(CheckpointError) as err:
        ck.read_state_dict(path, max_unzipped_bytes=1 << 20)
    msg = str(err.value)
    assert "refusing to unzip" in msg and str(8 << 20) in msg and str(1 << 20) in msg
    assert ck.MAX_UNZIPPED_ENV in msg and "Fix" in msg
    monkeypatch.setenv(ck.MAX_UNZIPPED_ENV, "2M")
    with pytest.raises(CheckpointError, match=f"limit of {2 << 20} bytes"):
        ck.read_state_dict(path)
    monkeypatch.setenv(ck.MAX_UNZIPPED_ENV, "lots")
    with pytest.raises(ValueError, match="is not a size.*Fix"):
        ck.read_state_dict(path)


def test_zip_bomb_is_refused_by_compression_ratio_under_the_default_limit(tmp_path, monkeypatch):
    monkeypatch.delenv(ck.MAX_UNZIPPED_ENV, raising=False)
    path = tmp_path / "bomb.pt.zip"
    _zip_of_zeros(path, 40 << 20)  # 40 MiB of zeros: far below 8 GiB, but ~1000x compressed
    with pytest.raises(CheckpointError, match="expands .* times.*zip bomb"):
        ck.read_state_dict(path)


def test_zip_member_longer_than_declared_is_corrupt(tmp_path):
    """A central directory that under-declares the member: extraction stops at the declared
    size and the archive is reported corrupt (never read past what it declares)."""
    buf = io.BytesIO()
    torch.save(tiny.upstream_state_dict(), buf)
    data = buf.getvalue()
    path = tmp_path / "liar.pt.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("w.pt", data)
    raw = bytearray(path.read_bytes())
    central = raw.rindex(b"PK\x01\x02")  # the one central-directory entry
    raw[central + 24: central + 28] = (100).to_bytes(4, "little")  # uncompressed size := 100
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ck.read_state_dict(path)


@pytest.mark.parametrize("content", ["random", "zeros"])
def test_garbage_inside_a_zip_is_corrupt_not_unsafe(tmp_path, content):
    data = os.urandom(200_000) if content == "random" else bytes(200_000)
    path = tmp_path / "efficient_sam_vits.pt.zip"  # the official archive name: the fix names the model
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("weights/efficient_sam_vits.pt", data)
    with pytest.raises(CheckpointError) as err:
        ck.read_state_dict(path)
    msg = str(err.value)
    assert "truncated or corrupt" in msg and "refusing" not in msg and "arbitrary" not in msg
    assert "samkit models download efficient_sam_vits" in msg


def test_garbage_file_is_corrupt_not_unsafe(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(os.urandom(100_000))
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        ck.read_state_dict(path)
    assert "arbitrary" not in str(err.value)


class CallsPrint:
    """Unpickling it calls builtins.print (torch reports the global as plain ``print``)."""

    def __reduce__(self):
        return (print, ("unpickled",))


@pytest.mark.parametrize("obj, name", [(NotAllowed(), "NotAllowed"), (CallsPrint(), "print")])
def test_real_pickle_with_an_arbitrary_global_inside_a_zip_is_unsafe(tmp_path, obj, name):
    buf = io.BytesIO()
    torch.save({"model": tiny.upstream_state_dict(), "extra": obj}, buf)
    path = tmp_path / "evil.pt.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("evil.pt", buf.getvalue())
    with pytest.raises(CheckpointError) as err:
        ck.read_state_dict(path)
    msg = str(err.value)
    assert "refusing to load" in msg and "Unsupported global" in msg and name in msg
    assert "corrupt" not in msg


def test_zip_member_is_streamed_not_held_in_memory(tmp_path, monkeypatch):
    """The member is never read whole (zf.read) and Python-side memory stays far below its size;
    the extracted copy lives in a private temporary folder that is removed afterwards."""
    gen = torch.Generator().manual_seed(0)
    sd = {"big": torch.randn(4 << 20, generator=gen)}  # 16 MiB of float32
    buf = io.BytesIO()
    torch.save(sd, buf)
    path = tmp_path / "big.pt.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("big.pt", buf.getvalue())
    del buf
    monkeypatch.setattr(zipfile.ZipFile, "read", lambda *a, **k: pytest.fail("member read whole"))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(ck.tempfile, "tempdir", str(scratch))
    tracemalloc.start()
    try:
        out = ck.read_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(out["big"], sd["big"])
    assert peak < (16 << 20) // 4, peak
    assert list(scratch.iterdir()) == []


def test_corrupt_safetensors_and_missing_and_empty(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        ck.read_state_dict(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.read_state_dict(tmp_path / "nope.pt")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        ck.read_state_dict(empty)


def test_html_instead_of_checkpoint(tmp_path):
    path = tmp_path / "mobile_sam.pt"
    path.write_bytes(b"\n<!DOCTYPE html>\n<html><head><title>404</title></head></html>")
    with pytest.raises(CheckpointError, match="web page.*samkit models download mobile_sam"):
        ck.read_state_dict(path)


def test_no_tensors(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="no tensors.*epoch"):
        ck.read_state_dict(path)


# ----------------------------------------------------------------------------- remap
def test_remap_dispatch_is_pure():
    sd = tiny.upstream_state_dict()
    before = dict(sd)
    out = ck.remap(sd, "tiny_a")
    assert set(out) == {"encoder.weight", "encoder.bias", "head.weight", "head.bias", "scale"}
    assert sd == before and out is not sd
    assert ck.remap(sd, "tiny").keys() == out.keys()  # by checkpoint format name too


def test_remap_identity_without_function(monkeypatch):
    monkeypatch.setitem(specs.MODELS, "tiny_plain", tiny.spec("tiny_plain", checkpoint_format="plain"))
    sd = tiny.upstream_state_dict()
    out = ck.remap(sd, "tiny_plain")
    assert out == sd and out is not sd


# ----------------------------------------------------------------------------- loading
def test_load_into_strict_ok():
    sd = tiny.upstream_state_dict(seed=5)
    model = tiny.build_tiny()
    report = ck.load_into(model, sd, "tiny_a")
    assert report == {"missing": [], "unexpected": [], "mismatched": []}
    assert torch.equal(model.encoder.weight, sd["backbone.weight"])
    assert torch.equal(model.scale, sd["scale"])


def test_strict_error_lists_keys():
    sd = tiny.upstream_state_dict()
    sd.pop("head.bias")
    sd["extra.thing"] = torch.zeros(1)
    sd.update({f"junk.{i}": torch.zeros(1) for i in range(12)})
    with pytest.raises(CheckpointError) as err:
        ck.load_into(tiny.build_tiny(), sd, "tiny_a", source="x.pt")
    msg = str(err.value)
    assert "x.pt does not fit model 'tiny_a'" in msg
    assert "missing (1): head.bias" in msg
    assert "unexpected (13)" in msg and "(+3 more)" in msg
    assert "strict=False" in msg and "looks like" not in msg


def test_strict_error_names_the_other_model():
    wide = tiny.upstream_state_dict(dim=8)
    model = tiny.build_tiny()
    with pytest.raises(CheckpointError) as err:
        ck.load_into(model, wide, "tiny_a", source="wide.pt")
    msg = str(err.value)
    assert "shape mismatch (4)" in msg and "encoder.weight checkpoint (8, 3) vs model (4, 3)" in msg
    assert "looks like a checkpoint of tiny_wide" in msg
    assert "load_model('tiny_wide', checkpoint='wide.pt')" in msg


def test_non_strict_loads_fitting_subset():
    sd = tiny.upstream_state_dict(seed=1)
    sd.pop("head.weight")
    sd["scale"] = torch.ones(7)  # wrong shape: skipped
    model = tiny.build_tiny()
    report = ck.load_into(model, sd, "tiny_a", strict=False)
    assert report["missing"] == ["head.weight"] and report["mismatched"] == ["scale"]
    assert torch.equal(model.head.bias, sd["head.bias"])


def test_identify_skips_unimportable_and_broken_builders(monkeypatch):
    tiny.register(monkeypatch, "ghost", build=None)
    monkeypatch.setitem(specs.MODELS, "ghost2", tiny.spec("ghost2", module="samkit_no_such_module"))
    assert ck.identify(tiny.upstream_state_dict(dim=8)) == ["tiny_wide"]
    assert ck.identify(tiny.upstream_state_dict(dim=4)) == ["tiny_a"]
    assert ck.model_signature("ghost") is None and ck.model_signature("ghost2") is None
    assert ck.model_signature("tiny_wide")["encoder.weight"] == (8, 3)
