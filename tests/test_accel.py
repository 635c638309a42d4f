"""samkit.accel: ONNX Runtime / torch.compile / channels-last image encoders keep the numbers.

Small configurations of the real encoder classes (SAM ViT with relative positions, TinyViT,
RepViT, Hiera + FPN) are compared against their plain torch output; one test runs the golden
sam_vit_b parity through the onnxruntime backend.
"""
from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_structure

import samkit
import samkit.errors
from samkit import accel
from samkit.errors import InputError, MissingExtraError
from tiny import tiny_sam

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class Holder(nn.Module):
    """The part of a PromptableModel that accel touches: ``image_encoder`` and ``image_size``."""

    def __init__(self, encoder: nn.Module, image_size: int) -> None:
        super().__init__()
        self.image_encoder = encoder
        self.image_size = image_size


def _vit_sam():
    return tiny_sam(seed=0, image_size=128).image_encoder, 128


def _vit_sam_global():
    """33 x 33 tokens: the global block takes the chunked attention path, windows are padded."""
    return tiny_sam(seed=0, image_size=528).image_encoder, 528


def _tiny_vit():
    from samkit.backbones.tiny_vit import TinyViT

    return TinyViT(embed_dims=(16, 32, 40, 48), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2),
                   window_sizes=(7, 7, 14, 7), out_chans=32), 224


def _rep_vit():
    from samkit.backbones.rep_vit import RepViT

    cfgs = ((3, 2, 16, 1, 0, 1), (3, 2, 32, 0, 0, 2), (3, 2, 32, 1, 1, 1), (3, 2, 48, 0, 1, 2), (3, 2, 64, 1, 1, 2))
    return RepViT(cfgs, out_chans=32), 128


def _hiera_fpn():
    from samkit.backbones.fpn_neck import FpnNeck, ImageEncoder
    from samkit.backbones.hiera import Hiera

    trunk = Hiera(embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
                  window_pos_embed_bkg_spatial_size=(7, 7))
    neck = FpnNeck(32, trunk.channel_list, fpn_top_down_levels=(2, 3), fpn_interp_model="nearest")
    return ImageEncoder(trunk, neck, scalp=1), 128


ENCODERS = {"vit_sam": _vit_sam, "vit_sam_global": _vit_sam_global, "tiny_vit": _tiny_vit, "rep_vit": _rep_vit, "hiera_fpn": _hiera_fpn}


def _model(kind: str, seed: int = 0) -> Holder:
    torch.manual_seed(seed)
    encoder, size = ENCODERS[kind]()
    return Holder(encoder.eval(), size).eval()


def _run(model: Holder, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, model.image_size, model.image_size, generator=gen)
    with torch.inference_mode():
        return model.image_encoder(x)


def _max_diff(a, b) -> float:
    assert tree_structure(a) == tree_structure(b)
    return max((p - q).abs().max().item() for p, q in zip(tree_leaves(a), tree_leaves(b)))


@pytest.fixture()
def cache(tmp_path):
    return tmp_path / "onnx"


# ----------------------------------------------------------------------------- onnxruntime
@pytest.mark.parametrize("kind", list(ENCODERS))
def test_onnxruntime_matches_torch(kind, cache):
    model = _model(kind)
    ref = _run(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    out = _run(model)
    assert _max_diff(out, ref) <= 1e-4
    # exporting leaves the module as it was (eval mode, BatchNorm statistics untouched)
    assert not model.image_encoder.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    info = accel.accel_info(model)
    assert info.backend == "onnxruntime" and len(info.onnx_paths) == 1
    assert all(p.parent == cache and p.exists() for p in info.onnx_paths.values())
    assert not any(p.name.startswith(".") for p in cache.iterdir())  # no leftover temporary files


def test_onnxruntime_keeps_structure_batch_and_keys(cache):
    model = _model("hiera_fpn")
    keys = list(model.state_dict())
    x = torch.randn(2, 3, 128, 128)
    with torch.inference_mode():
        ref = model.image_encoder(x)
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    with torch.inference_mode():
        out = model.image_encoder(x)
    assert isinstance(out, dict) and set(out) == {"vision_features", "vision_pos_enc", "backbone_fpn"}
    assert out["vision_features"].shape[0] == 2
    assert _max_diff(out, ref) <= 1e-4
    assert list(model.state_dict()) == keys  # checkpoints still load / save unchanged
    accel.accelerate(model)  # back to plain torch
    assert "forward" not in vars(model.image_encoder) and accel.accel_info(model).backend == "torch"


def test_onnx_cache_is_reused(cache, monkeypatch):
    model = _model("vit_sam")
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    (path,) = accel.accel_info(model).onnx_paths.values()
    stamp = path.stat().st_mtime_ns
    calls = []
    real = accel._export
    monkeypatch.setattr(accel, "_export", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = _model("vit_sam")  # same weights: same file
    accel.accelerate(again, backend="onnxruntime", cache_dir=cache)
    assert calls == [] and path.stat().st_mtime_ns == stamp
    assert accel.accel_info(again).onnx_paths == {(1, 3, 128, 128): path}
    other = _model("vit_sam")
    with torch.no_grad():
        other.image_encoder.neck[0].weight.add_(0.01)  # other weights: another file
    accel.accelerate(other, backend="onnxruntime", cache_dir=cache)
    assert len(calls) == 1 and accel.accel_info(other).onnx_paths[(1, 3, 128, 128)] != path


def test_onnx_new_input_size_is_exported_on_demand(cache):
    model = _model("rep_vit")
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    x = torch.randn(1, 3, 96, 96)
    accel.accelerate(model)
    with torch.inference_mode():
        ref = model.image_encoder(x)
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    with torch.inference_mode():
        out = model.image_encoder(x)
    assert (out - ref).abs().max().item() <= 1e-4
    assert set(accel.accel_info(model).onnx_paths) == {(1, 3, 128, 128), (1, 3, 96, 96)}


def test_large_models_keep_weights_beside_the_file(cache, monkeypatch):
    monkeypatch.setattr(accel, "EXTERNAL_DATA_ABOVE", 0)
    model = _model("rep_vit")
    ref = _run(model)
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    (path,) = accel.accel_info(model).onnx_paths.values()
    assert (path.parent / (path.name + ".data")).stat().st_size > path.stat().st_size
    assert _max_diff(_run(model), ref) <= 1e-4


def test_missing_onnxruntime_names_the_extra(cache, monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(__import__("sys").modules, "onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    model = _model("vit_sam")
    with pytest.raises(MissingExtraError, match=r"samkit\[onnx\]"):
        accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    assert accel.accel_info(model).backend == "torch"


@pytest.mark.parametrize("kwargs", [dict(backend="tensorrt"), dict(backend="onnxruntime", compile=True),
                                    dict(backend="onnxruntime", channels_last=True)])
def test_bad_options_are_input_errors(kwargs, cache):
    with pytest.raises(InputError, match="Fix:"):
        accel.accelerate(_model("vit_sam"), cache_dir=cache, **kwargs)


def test_model_without_encoder_is_refused():
    with pytest.raises(InputError, match="image_encoder"):
        accel.accelerate(nn.Linear(2, 2), backend="onnxruntime")


def test_failed_export_names_the_problem(cache):
    class Bad(nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x[0, 0])[0].real  # complex eig has no ONNX export

    model = Holder(Bad(), 8)
    model.image_encoder.register_parameter("w", nn.Parameter(torch.zeros(1)))
    with pytest.raises(samkit.AccelerationError, match="ONNX export .* failed.*Fix") as info:
        accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    assert isinstance(info.value, samkit.SamkitError) and isinstance(info.value, RuntimeError)
    assert accel.AccelerationError is samkit.errors.AccelerationError


# ----------------------------------------------------------------------------- channels-last / compile
@pytest.mark.parametrize("kind", list(ENCODERS))
def test_channels_last_matches_torch(kind):
    model = _model(kind)
    ref = _run(model)
    accel.accelerate(model, channels_last=True)
    out = _run(model)
    assert _max_diff(out, ref) <= 1e-5
    assert all(t.is_contiguous() for t in tree_leaves(out))
    accel.accelerate(model)
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.slow
def test_compile_matches_torch():
    """One compiled encoder (inductor on CPU: tens of seconds cold, cached afterwards)."""
    model = _model("rep_vit")
    ref = _run(model)
    accel.accelerate(model, compile=True, channels_last=True)
    assert _max_diff(_run(model), ref) <= 1e-4
    assert _max_diff(_run(model), ref) <= 1e-4  # second call: the compiled code


def test_compile_without_a_compiler_fails_at_once(monkeypatch):
    monkeypatch.setattr(accel.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(accel.AccelerationError, match="C\\+\\+ compiler.*Fix"):
        accel.accelerate(_model("vit_sam"), compile=True)


def test_compile_failure_is_reported_not_hidden(monkeypatch):
    from torch._dynamo.exc import TorchDynamoException

    def broken(fn, *args, **kwargs):
        def call(*a, **k):
            raise TorchDynamoException("backend 'inductor' failed: no cl.exe")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    model = _model("vit_sam")
    accel.accelerate(model, compile=True)
    with pytest.raises(accel.AccelerationError, match="torch.compile could not compile.*Fix"):
        _run(model)


# ----------------------------------------------------------------------------- whole models
def _predict(model, image, **prompt):
    from samkit import ImagePredictor

    return ImagePredictor(model).set_image(image).predict(**prompt)


def test_predictor_masks_unchanged_with_onnxruntime(cache):
    image = np.random.default_rng(0).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    prompt = dict(points=[[40, 50], [90, 20]], labels=[1, 0], multimask=True)
    model = tiny_sam(seed=3)
    ref = _predict(model, image, **prompt)
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    out = _predict(model, image, **prompt)
    np.testing.assert_allclose(out.scores, ref.scores, atol=1e-5)
    np.testing.assert_allclose(out.low_res_logits, ref.low_res_logits, atol=1e-4)
    confident = np.abs(ref.low_res_logits) > 1e-3
    assert np.array_equal(out.low_res_logits[confident] > 0, ref.low_res_logits[confident] > 0)


def test_sam2_model_image_path_with_onnxruntime(cache):
    from samkit.backbones.fpn_neck import FpnNeck, ImageEncoder
    from samkit.backbones.hiera import Hiera
    from samkit.models.sam2 import Sam2Model

    torch.manual_seed(0)
    trunk = Hiera(embed_dim=16, num_heads=1, stages=(1, 1, 2, 1), global_att_blocks=(3,),
                  window_pos_embed_bkg_spatial_size=(7, 7))
    neck = FpnNeck(256, trunk.channel_list, fpn_top_down_levels=(2, 3), fpn_interp_model="nearest")
    model = Sam2Model(ImageEncoder(trunk, neck, scalp=1), image_size=128).eval()
    image = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    prompt = dict(box=[10, 10, 80, 70], multimask=False)
    ref = _predict(model, image, **prompt)
    with torch.inference_mode():
        ref_video = model.forward_image(torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2)))
    accel.accelerate(model, backend="onnxruntime", cache_dir=cache)
    out = _predict(model, image, **prompt)
    np.testing.assert_allclose(out.low_res_logits, ref.low_res_logits, atol=1e-4)
    with torch.inference_mode():  # the video path (forward_image) runs the session too
        video = model.forward_image(torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2)))
    assert _max_diff(video, ref_video) <= 1e-4


def test_load_model_accepts_the_options(tmp_path, monkeypatch):
    import samkit

    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path))
    with pytest.raises(InputError, match="not a neural model"):
        samkit.load_model("classic", backend="onnxruntime")
    with pytest.raises(InputError, match="unknown backend"):
        samkit.load_model("sam_vit_b", backend="tensorrt", download=False)
    with pytest.raises(InputError, match="backend='torch' only"):  # refused before looking for weights
        samkit.load_model("sam_vit_b", backend="onnxruntime", compile=True, download=False)


@pytest.mark.slow
def test_sam_vit_b_golden_parity_with_onnxruntime(synth_checkpoint, tmp_path, monkeypatch):
    """The golden sam_vit_b embedding and masks through the exported encoder (export + check: 1-2 min)."""
    from parity import golden
    from samkit.registry import load_model

    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path))
    g, meta = golden("sam_vit_b")
    model = load_model("sam_vit_b", checkpoint=synth_checkpoint("sam_vit_b"), backend="onnxruntime")
    (path,) = accel.accel_info(model).onnx_paths.values()
    assert path.parent == tmp_path / "onnx"
    from samkit import ImagePredictor

    pred = ImagePredictor(model).set_image(g["image_0"].numpy())
    atol = max(meta["tensors"]["embed_0"]["suggested_atol"], 1e-4)
    assert (pred.features.embed - g["embed_0"]).abs().max().item() <= atol
    key = "p0a"
    pc, pl, box = (g.get(f"{key}.{k}") for k in ("point_coords", "point_labels", "box"))
    out = pred.predict(points=None if pc is None else pc.numpy(), labels=None if pl is None else pl.numpy(),
                       box=None if box is None else box.numpy().reshape(4),
                       multimask=meta["tensors"][key]["multimask_output"])
    ref = g[f"{key}.lowres_logits"].float()
    assert (torch.from_numpy(out.low_res_logits) - ref).abs().max().item() <= max(
        meta["tensors"][f"{key}.lowres_logits"]["suggested_atol"], 1e-4)
