"""Opt-in dynamic int8 (``samkit.quant``, ``load_model(quantize="int8")``, ``--int8``) on reduced
models: the model really holds quantized linears, its outputs stay close to float32 (a loose
plumbing check on random weights, not a quality claim), bad values are refused clearly."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from samkit import ImagePredictor
from samkit.errors import InputError
from samkit.quant import quantize, quantized_linears

from _tiny_families import tiny_family


def _image(h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.clip(60 + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    img[20:70, 30:90] = [230, 200, 60]
    return img


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _compare(fp32, int8, img):
    """(mask IoU of one point prompt, max-abs embedding difference / max-abs fp32 embedding)."""
    with torch.inference_mode():
        x, _ = fp32.preprocess(img)
        e0, e1 = fp32.encode(x).embed, int8.encode(x).embed
    pts, lab = [[64.0, 45.0]], [1]
    m0 = ImagePredictor(fp32).set_image(img).predict(points=pts, labels=lab, multimask=False).masks[0]
    m1 = ImagePredictor(int8).set_image(img).predict(points=pts, labels=lab, multimask=False).masks[0]
    return _iou(np.asarray(m0), np.asarray(m1)), float((e1 - e0).abs().max() / e0.abs().max())


@pytest.mark.parametrize("family", ["mobile_sam", "sam2", "efficienttam"])
def test_int8_quantizes_encoder_linears_and_stays_close(family):
    fp32, int8 = tiny_family(family), tiny_family(family)
    n_linear = sum(type(m) is torch.nn.Linear for m in int8.image_encoder.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the torch.ao deprecation warnings are silenced inside
        quantize(int8)
    assert n_linear > 0 and quantized_linears(int8) == n_linear
    assert quantized_linears(int8.mask_decoder) == 0  # the decoder stays float32 by default
    assert int8.quantized == "int8"
    iou, rel = _compare(fp32, int8, _image())
    assert iou >= 0.9 and rel < 0.1, (iou, rel)


def test_int8_vit_with_padded_windows():
    """SAM's windowed ViT pads the qkv projections with the qkv bias; a quantized Linear has
    ``bias()`` (a method), which the padding path must read (regression: AttributeError)."""
    from tiny import tiny_sam

    fp32, int8 = tiny_sam(image_size=96), tiny_sam(image_size=96)  # 6 x 6 tokens, window 4: padded
    quantize(int8)
    iou, rel = _compare(fp32, int8, _image(96, 96))
    assert iou >= 0.9 and rel < 0.1, (iou, rel)


def test_int8_decoder_part_keeps_attention_projections_float():
    model = tiny_family("sam")
    quantize(model, parts=("image_encoder", "mask_decoder"))
    from samkit.layers import Attention

    dec = model.mask_decoder
    attn = [m for m in dec.modules() if isinstance(m, Attention)]
    assert attn and all(type(m.q_proj) is torch.nn.Linear for m in attn)  # read by the exact fast path
    assert quantized_linears(dec) > 0
    iou, _ = _compare(tiny_family("sam"), model, _image())
    assert iou >= 0.9


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="int4"), "unknown quantize value 'int4'"),
    (dict(parts=("prompt_encoder",)), "unknown parts"),
])
def test_quantize_refuses_bad_values(kwargs, match):
    with pytest.raises(InputError, match=match) as err:
        quantize(tiny_family("sam"), **kwargs)
    assert "Fix:" in str(err.value)


def _register_tiny_sam(monkeypatch, tmp_path):
    from tiny import tiny_sam

    from _tiny_models import register

    register(monkeypatch, "tiny_sam_q", build=lambda: tiny_sam(image_size=128))
    path = tmp_path / "tiny_sam_q.pt"
    torch.save(tiny_sam(image_size=128).state_dict(), path)
    return path


def test_load_model_quantize(monkeypatch, tmp_path):
    from samkit.registry import load_model

    ckpt = _register_tiny_sam(monkeypatch, tmp_path)
    model = load_model("tiny_sam_q", checkpoint=ckpt, quantize="int8")
    assert quantized_linears(model.image_encoder) > 0
    assert quantized_linears(load_model("tiny_sam_q", checkpoint=ckpt)) == 0  # fp32 stays the default


@pytest.mark.parametrize("kwargs,match", [
    (dict(quantize="int4"), "unknown quantize value"),
    (dict(quantize="int8", backend="onnxruntime"), "does not combine"),
    (dict(quantize="int8", compile=True), "does not combine"),
    (dict(quantize="int8", device="cuda"), "CPU only"),
])
def test_load_model_refuses_bad_quantize_before_reading(monkeypatch, tmp_path, kwargs, match):
    from samkit.registry import load_model

    _register_tiny_sam(monkeypatch, tmp_path)
    with pytest.raises(InputError, match=match):
        load_model("tiny_sam_q", checkpoint=tmp_path / "missing.pt", **kwargs)  # refused before the file


@pytest.mark.parametrize("command", ["segment", "everything"])
def test_cli_int8(capsys, monkeypatch, tmp_path, command):
    pytest.importorskip("typer")
    from PIL import Image

    import samkit.quant
    from samkit.cli.main import main

    ckpt = _register_tiny_sam(monkeypatch, tmp_path)
    image = tmp_path / "img.png"
    Image.fromarray(_image()).save(image)
    calls = []
    real = samkit.quant.quantize
    monkeypatch.setattr(samkit.quant, "quantize",
                        lambda m, mode="int8", **kw: calls.append(mode) or real(m, mode, **kw))
    base = [command, str(image), "--model", "tiny_sam_q", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    base += (["--point", "60,40", "--format", "json"] if command == "segment" else
             ["--points-per-side", "4", "--quiet", "--json"])
    assert main(base + ["--int8"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert calls == ["int8"] and doc["count"] >= (1 if command == "segment" else 0)  # random weights
    code = main(base + ["--int8", "--backend", "onnxruntime"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and "--int8" in err[0] and "Fix:" in err[0]
