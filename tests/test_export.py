"""samkit.export: export folders of every image family, their contracts, and parity of
samkit.runtime (onnxruntime) with samkit's torch ImagePredictor.

Default suite: reduced configurations of every family (tests/_tiny_families.py), exported once
per session (conftest ``tiny_export``). Slow: the full-size models on the parity weights.
The torch-free runs are in tests/test_runtime.py, the segment-anything oracle in
tests/test_export_oracle.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _tiny_families import FAMILIES

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from samkit import ImagePredictor  # noqa: E402
from samkit.errors import AccelerationError, CheckpointError, InputError  # noqa: E402
from samkit.runtime import MANIFEST, OnnxImagePredictor, read_export  # noqa: E402

ATOL = 1e-4
LAYOUT = {"sam": "sam", "mobile_sam": "sam", "edge_sam": "sam", "efficient_sam": "efficient_sam", "sam2": "sam2",
          "edgetam": "sam2", "efficienttam": "sam2"}


def _image(h=100, w=140, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _embed(pred: OnnxImagePredictor) -> np.ndarray:
    f = pred.features
    return f["image_embeddings"] if "image_embeddings" in f else f["image_embed"]


def _same(a, b, atol=ATOL):
    """Low-res logits and scores within ``atol``; full masks equal wherever the torch logits are
    not within ``atol`` of the threshold."""
    assert len(a) == len(b)
    np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=atol, rtol=0)
    np.testing.assert_allclose(a.scores, b.scores, atol=atol, rtol=0)
    np.testing.assert_allclose(a.stability, b.stability, atol=1e-3, rtol=0)
    assert a.masks.shape == b.masks.shape
    assert (a.masks != b.masks).mean() < 1e-3


PROMPTS = [
    dict(points=[[40, 50], [90, 20]], labels=[1, 0]),
    dict(box=[10, 10, 80, 90]),
    dict(box=[10, 10, 80, 90], points=[[40, 50]], labels=[1], multimask=False),
    dict(points=[[40.5, 50.25]], labels=[1], multimask=False),
    dict(points=[[140, 100], [0, 0], [70, 30]], labels=[1, 1, 0], multimask=False),  # both image corners
]


@pytest.mark.parametrize("family", FAMILIES)
def test_runtime_matches_torch(family, tiny_export):
    model, folder = tiny_export(family)
    img = _image()
    ours = OnnxImagePredictor(folder).set_image(img)
    ref = ImagePredictor(model).set_image(img)
    np.testing.assert_allclose(_embed(ours), ref.features.embed.numpy(), atol=ATOL, rtol=0)
    if ref.features.high_res is not None:
        for k, t in enumerate(ref.features.high_res):
            np.testing.assert_allclose(ours.features[f"high_res_feats_{k}"], t.numpy(), atol=ATOL, rtol=0)
    for prompt in PROMPTS:
        _same(ours.predict(**prompt), ref.predict(**prompt))
    for selection in ("iou", "stability"):
        a = OnnxImagePredictor(folder, selection=selection).set_image(img).predict(points=[[60, 40]], labels=[1],
                                                                                   multimask=False)
        _same(a, ImagePredictor(model, selection=selection).set_image(img).predict(points=[[60, 40]], labels=[1],
                                                                                   multimask=False))


@pytest.mark.parametrize("family", FAMILIES)
def test_batches_of_prompts_and_mask_refinement(family, tiny_export):
    """predict_batch: 3 prompts of 4 points and boxes in one decoder run; a previous mask as input."""
    model, folder = tiny_export(family)
    img = _image(90, 60, seed=1)
    ours = OnnxImagePredictor(folder).set_image(img)
    ref = ImagePredictor(model).set_image(img)
    rng = np.random.default_rng(2)
    pts = rng.uniform(0, [60, 90], (3, 4, 2))
    labels = rng.integers(0, 2, (3, 4))
    boxes = np.array([[5, 5, 50, 80], [0, 0, 60, 90], [20, 30, 30, 40]], np.float32)
    for kw in (dict(points=pts, labels=labels), dict(boxes=boxes), dict(boxes=boxes, points=pts, labels=labels)):
        for multimask in (False, True):
            for a, b in zip(ours.predict_batch(multimask=multimask, **kw), ref.predict_batch(multimask=multimask, **kw)):
                _same(a, b)
    if not ours.spec["supports_mask_input"]:
        with pytest.raises(InputError, match="no mask_input"):
            ours.predict(points=[[10, 10]], labels=[1], mask_input=np.zeros((1, 4 * 4, 4 * 4)))
        return
    first = ref.predict(points=[[30, 40]], labels=[1])
    prev = first.low_res_logits[int(np.argmax(first.scores))][None]
    kw = dict(points=[[30, 40], [10, 70]], labels=[1, 0], mask_input=prev, multimask=False)
    _same(ours.predict(**kw), ref.predict(**kw))
    _same(ours.predict(mask_input=prev), ref.predict(mask_input=prev))  # a mask alone: no sparse token at all
    batch = dict(points=pts[:, :2], labels=labels[:, :2], mask_input=np.repeat(prev[None], 3, 0))
    for a, b in zip(ours.predict_batch(**batch), ref.predict_batch(**batch)):
        _same(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_folder_layout_and_contracts(family, tiny_export):
    _, folder = tiny_export(family)
    export = read_export(folder)
    m = export.manifest
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    anylabeling = family not in ("efficient_sam", "efficienttam")
    want = [f"{family}.decoder.onnx", f"{family}.encoder.onnx", f"{family}.decoder_image.onnx",
            f"{family}.decoder_fast.onnx", MANIFEST] + (["config.yaml"] if anylabeling else [])
    assert names == sorted(want)
    assert set(m["files"]) == set(want) - {MANIFEST}  # every file but the manifest itself is checksummed
    assert m["format"] == "samkit-onnx-export" and m["format_version"] == 1 and m["opset"] == 17
    assert m["image"]["layout"] == LAYOUT[family] and m["model"]["name"] == family
    enc, dec = export.graph("image_encoder"), export.graph("prompt_decoder")
    io = lambda entry, key: [x["name"] for x in entry[key]]  # noqa: E731
    if LAYOUT[family] == "sam2":
        hr = ["high_res_feats_0", "high_res_feats_1"] if family != "efficienttam" else []
        assert io(enc, "inputs") == ["image"] and io(enc, "outputs") == hr + ["image_embed"]
        assert io(dec, "inputs") == ["image_embed", *hr, "point_coords", "point_labels", "mask_input",
                                     "has_mask_input"]
        assert io(dec, "outputs") == ["masks", "iou_predictions"]
    else:
        assert io(enc, "inputs") == (["input_image"] if family != "efficient_sam" else ["image"])
        assert io(enc, "outputs") == ["image_embeddings"]
        assert io(dec, "inputs") == ["image_embeddings", "point_coords", "point_labels", "mask_input",
                                     "has_mask_input", "orig_im_size"]
        assert io(dec, "outputs") == ["masks", "iou_predictions", "low_res_masks"]
    coords = next(x for x in dec["inputs"] if x["name"] == "point_coords")
    assert coords["shape"] == ["num_prompts", "num_points", 2] and coords["dtype"] == "float32"
    if anylabeling:
        cfg = dict(line.split(": ", 1) for line in (folder / "config.yaml").read_text().splitlines())
        assert json.loads(cfg["type"]) == "segment_anything"
        assert json.loads(cfg["encoder_model_path"]) == enc["file"]
        assert json.loads(cfg["decoder_model_path"]) == dec["file"]
        assert {"name", "display_name", "input_size", "max_width", "max_height"} <= set(cfg)
    import onnx

    proto = onnx.load(str(folder / dec["file"]))
    assert {p.key: p.value for p in proto.metadata_props}["samkit.role"] == "prompt_decoder"


# ----------------------------------------------------------------------------- numpy = torch
@pytest.mark.parametrize("hw", [(100, 140), (300, 170), (7, 500), (128, 128)])
@pytest.mark.parametrize("rule", ["longest_side", "stretch_aa", "stretch"])
def test_numpy_preprocessing_equals_torch(rule, hw):
    from samkit.models.base import preprocess_longest_side, preprocess_stretch
    from samkit.runtime import imageops

    img = _image(*hw, seed=hw[0])
    mean, std = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)) if rule == "longest_side" else \
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    spec = {"input_size": 128, "preprocess": {"rule": "longest_side" if rule == "longest_side" else "stretch",
                                              "antialias": rule == "stretch_aa", "mean": mean, "std": std}}
    feeds, input_hw = imageops.preprocess(img, spec, "x")
    if rule == "longest_side":
        ref, t = preprocess_longest_side(img, 128, mean, std, torch.device("cpu"))
        x = torch.from_numpy(feeds["x"])  # the graph's part: normalise, pad
        x = torch.nn.functional.pad(((x - torch.tensor(mean)) / torch.tensor(std)).permute(2, 0, 1),
                                    (0, 128 - x.shape[1], 0, 128 - x.shape[0]))[None]
    else:
        ref, t = preprocess_stretch(img, 128, mean, std, torch.device("cpu"), antialias=rule == "stretch_aa")
        x = torch.from_numpy(feeds["x"])
    assert tuple(input_hw) == tuple(t.input_size)
    assert (x - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(300, 170), (64, 64), (1000, 9), (20, 500)])
def test_numpy_upsampling_equals_torch(size, mode):
    from samkit.runtime import imageops

    low = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 5
    ref = torch.nn.functional.interpolate(low, size, mode=mode, align_corners=False)
    out = (imageops.resize_bilinear if mode == "bilinear" else imageops.resize_bicubic)(low.numpy(), size)
    assert np.abs(out - ref.numpy()).max() <= 1e-4


def test_numpy_stability_and_dynamic_multimask_equal_torch():
    from samkit.heads.mask_decoder import MaskDecoder
    from samkit.heads.transformer import TwoWayTransformer
    from samkit.ops import stability_score
    from samkit.runtime import imageops

    g = torch.Generator().manual_seed(0)
    low = torch.randn(6, 4, 16, 16, generator=g) * 3
    low[0] = -5.0  # empty masks: stability 0, SAM 2 keeps an empty single mask
    low[1, 0] = low[1, 0].abs() + 2.0  # a confident (stable) single mask
    iou = torch.rand(6, 4, generator=g)
    for off in (1.0, 0.05):
        np.testing.assert_array_equal(imageops.stability_score(low.numpy(), 0.0, off), stability_score(low, 0.0, off))
    dec = MaskDecoder(transformer_dim=8, transformer=TwoWayTransformer(depth=1, embedding_dim=8, num_heads=1,
                                                                       mlp_dim=8), dynamic_multimask_via_stability=True)
    ref_masks, ref_iou = dec._dynamic_multimask(low, iou)
    idx = imageops.dynamic_multimask_index(low.numpy(), iou.numpy(), 0.05, 0.98)
    rows = np.arange(6)
    np.testing.assert_array_equal(low.numpy()[rows, idx], ref_masks[:, 0].numpy())
    np.testing.assert_array_equal(iou.numpy()[rows, idx], ref_iou[:, 0].numpy())
    assert set(idx.tolist()) >= {0} and len(set(idx.tolist())) > 1  # both branches taken


# ----------------------------------------------------------------------------- options
def test_single_mask_decoder(tiny_export):
    model, folder = tiny_export("sam", single_mask=True)
    pred = OnnxImagePredictor(folder).set_image(_image())
    assert [x["name"] for x in read_export(folder).graph("prompt_decoder")["outputs"]] == \
        ["masks", "iou_predictions", "low_res_masks"]
    with pytest.raises(InputError, match="returns one mask.*multimask=False"):
        pred.predict(points=[[40, 50]], labels=[1])
    ref = ImagePredictor(model).set_image(_image())
    one = pred.predict(points=[[40, 50]], labels=[1], multimask=False)  # 1 click + padding: best multimask token
    multi = ref.predict(points=[[40, 50]], labels=[1], multimask=True)
    k = int(np.argmax(multi.scores))
    np.testing.assert_allclose(one.low_res_logits[0], multi.low_res_logits[k], atol=ATOL)
    three = pred.predict(points=[[40, 50], [90, 20]], labels=[1, 0], multimask=False)  # 3 points: token 0
    _same(three, ref.predict(points=[[40, 50], [90, 20]], labels=[1, 0], multimask=False))


def test_int8_dynamic_and_static_encoders(tiny_export):
    """Plumbing: both int8 encoders are written, listed, chosen by ``precision`` and close to fp32."""
    _, folder = tiny_export("edgetam", quantize=("int8", "int8-static"))
    export = read_export(folder)
    q, st = export.graph("image_encoder", "int8"), export.graph("image_encoder", "int8-static")
    assert q["file"] == "edgetam.encoder.quant.onnx" and q["quantized_from"] == "edgetam.encoder.onnx"
    assert st["file"] == "edgetam.encoder.int8-static.onnx"
    assert export.manifest["image"]["default_precision"] == "int8"
    assert "edgetam.encoder.quant.onnx" in (folder / "config.yaml").read_text()  # AnyLabeling gets the default
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(
        ["config.yaml", MANIFEST, "edgetam.decoder.onnx", "edgetam.encoder.onnx", "edgetam.encoder.quant.onnx",
         "edgetam.encoder.int8-static.onnx", "edgetam.decoder_image.onnx", "edgetam.decoder_fast.onnx"])
    img = _image()
    fp32 = OnnxImagePredictor(folder, precision="fp32").set_image(img)
    for precision, predictor in (("int8", OnnxImagePredictor(folder)),
                                 ("int8-static", OnnxImagePredictor(folder, precision="int8-static"))):
        assert predictor.precision == precision
        a, b = _embed(predictor.set_image(img)), _embed(fp32)
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert 0 < rel < 0.5, (precision, rel)  # quantised, and still the same function
        predictor.predict(points=[[40, 50]], labels=[1])
    _, plain = tiny_export("sam")
    with pytest.raises(InputError, match="no int8 image_encoder graph \\(it has: fp32\\).*--quantize int8"):
        OnnxImagePredictor(plain, precision="int8")


# ----------------------------------------------------------------------------- bad input
def test_classic_and_foreign_models_are_refused(tmp_path):
    from samkit import load_model
    from samkit.export import export_onnx

    with pytest.raises(InputError, match="not a neural samkit model.*Fix"):
        export_onnx(load_model("classic"), tmp_path / "out")
    with pytest.raises(InputError, match="Fix"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs, match", [(dict(opset=99), "opset 99 cannot be exported.*Fix: pass --opset 17"),
                                           (dict(opset=9), "opset 9 cannot be exported"),
                                           (dict(quantize="int4"), "unknown quantization 'int4'.*Fix"),
                                           (dict(opset="x"), "not a number")])
def test_bad_options_are_refused_before_work(kwargs, match, tmp_path):
    from _tiny_families import tiny_family
    from samkit.export import export_onnx

    with pytest.raises(InputError, match=match):
        export_onnx(tiny_family("sam"), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_opset_onnxruntime_cannot_run_is_refused(tmp_path, monkeypatch):
    from _tiny_families import tiny_family
    from samkit.export import export_onnx, onnx_io

    monkeypatch.setattr(onnx_io, "_runs_in_onnxruntime", lambda opset: opset < 17)
    with pytest.raises(InputError, match="opset 17 cannot be run by onnxruntime .* up to 16.*Fix: pass --opset 16"):
        export_onnx(tiny_family("sam"), tmp_path / "out")
    with pytest.raises(InputError, match="single_mask applies to the segment-anything decoder"):
        export_onnx(tiny_family("sam2"), tmp_path / "out", single_mask=True)


def _copy(folder, tmp_path):
    import shutil

    dest = tmp_path / "copy"
    shutil.copytree(folder, dest)
    return dest


def test_damaged_folders_are_one_clear_error(tiny_export, tmp_path):
    _, folder = tiny_export("sam")
    bad = _copy(folder, tmp_path)
    (bad / "sam.decoder.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"damaged \(missing: sam.decoder.onnx\).*Fix: copy the whole folder"):
        OnnxImagePredictor(bad)
    bad = _copy(folder, tmp_path / "b")
    data = bytearray((bad / "sam.encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside the weights
    (bad / "sam.encoder.onnx").write_bytes(bytes(data))
    (bad / "config.yaml").write_text("type: other\n")
    with pytest.raises(CheckpointError, match=r"altered .*: config.yaml, sam.encoder.onnx\)"):
        OnnxImagePredictor(bad)
    with pytest.raises(InputError, match="not a samkit export folder.*Fix"):
        OnnxImagePredictor(tmp_path)
    with pytest.raises(InputError, match="is not a folder"):
        OnnxImagePredictor(tmp_path / "nowhere")
    bad = _copy(folder, tmp_path / "c")
    doc = json.loads((bad / MANIFEST).read_text())
    doc["format_version"] = 2
    (bad / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="format_version 2.*Fix: upgrade samkit"):
        OnnxImagePredictor(bad)
    (bad / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot be read as JSON"):
        OnnxImagePredictor(bad)


def test_graph_with_an_opset_onnxruntime_cannot_run(tiny_export, tmp_path):
    """A folder whose decoder is stamped with an opset onnxruntime does not know (checksums
    consistent): one AccelerationError naming the file, its opset and the fix."""
    import onnx

    from samkit.runtime.manifest import sha256_file

    _, folder = tiny_export("sam")
    bad = _copy(folder, tmp_path)
    proto = onnx.load(str(bad / "sam.decoder.onnx"))
    for op in proto.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = 99
    onnx.save(proto, str(bad / "sam.decoder.onnx"))
    doc = json.loads((bad / MANIFEST).read_text())
    doc["opset"] = 99
    doc["files"]["sam.decoder.onnx"] = {"sha256": sha256_file(bad / "sam.decoder.onnx"),
                                        "bytes": (bad / "sam.decoder.onnx").stat().st_size}
    (bad / MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(AccelerationError, match=r"cannot load sam.decoder.onnx \(opset 99\).*Fix: re-export"):
        OnnxImagePredictor(bad)


def test_failed_export_keeps_the_previous_folder(tiny_export, tmp_path, monkeypatch):
    from _tiny_families import tiny_family
    from samkit.export import exporter, export_onnx

    _, folder = tiny_export("efficienttam")
    dest = _copy(folder, tmp_path)
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    real = exporter._export_graph

    def fail_on_decoder(plan, *args, **kwargs):
        if plan.role == "prompt_decoder":
            raise RuntimeError("disk died")
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(exporter, "_export_graph", fail_on_decoder)
    with pytest.raises(RuntimeError, match="disk died"):
        export_onnx(tiny_family("efficienttam"), dest, name="other")
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == before
    assert [p.name for p in (dest / ".samkit").iterdir()] == ["export.json"]  # no staging left behind
    monkeypatch.setattr(exporter, "_export_graph", real)
    export_onnx(tiny_family("efficienttam"), dest, name="other")  # a new export replaces the previous set
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == sorted([
        MANIFEST, "other.decoder.onnx", "other.encoder.onnx", "other.decoder_image.onnx", "other.decoder_fast.onnx"])
    read_export(dest)


def test_cli_export(tmp_path, monkeypatch):
    from _tiny_families import tiny_family
    from samkit import registry
    from samkit.cli.main import main

    built = []
    monkeypatch.setattr(registry, "load_model",
                        lambda name, **kw: built.append((name, kw)) or tiny_family("efficienttam"))
    out = tmp_path / "edgetam-onnx"
    assert main(["export", "edgetam", "--format", "onnx", "--out", str(out), "--offline"]) == 0
    assert built == [("edgetam", {"checkpoint": None, "download": False})]
    export = read_export(out)
    assert export.model == "edgetam" and export.graph("prompt_decoder")["file"] == "edgetam.decoder.onnx"
    assert main(["export", "classic", "--format", "onnx", "--out", str(tmp_path / "c")]) == 2
    assert main(["export", "edgetam", "--format", "png", "--out", str(tmp_path / "c")]) == 2
    assert main(["export", "edgetam", "--out", str(tmp_path / "c"), "--opset", "99"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["export", "edgetam", "--out", str(tmp_path / "file")]) == 2
    assert len(built) == 1  # every refusal came before the model was loaded


# ----------------------------------------------------------------------------- full size (slow)
FULL = ["mobile_sam", "edge_sam", "efficient_sam_vitt", "sam2.1_hiera_t", "edgetam", "efficienttam_ti", "sam_vit_b"]


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_parity_on_the_parity_weights(name, synth_checkpoint, tmp_path):
    """The released architecture with the golden weights: onnxruntime vs samkit torch on golden
    image 0 (embeddings, then low-res logits of point / box prompts) within 1e-4."""
    from parity import golden
    from samkit.export import export_onnx
    from samkit.registry import load_model

    model = load_model(name, checkpoint=synth_checkpoint(name))
    folder = export_onnx(model, tmp_path / name)
    g, _ = golden(name)
    img = g["image_0"].numpy()
    ours = OnnxImagePredictor(folder).set_image(img)
    ref = ImagePredictor(model).set_image(img)
    np.testing.assert_allclose(_embed(ours), ref.features.embed.numpy(), atol=ATOL, rtol=0)
    h, w = img.shape[:2]
    for prompt in (dict(points=[[w * 0.4, h * 0.5]], labels=[1]), dict(box=[w * 0.2, h * 0.1, w * 0.7, h * 0.9]),
                   dict(points=[[w * 0.4, h * 0.5], [w * 0.1, h * 0.2]], labels=[1, 0], multimask=False)):
        a, b = ours.predict(**prompt), ref.predict(**prompt)
        np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=ATOL, rtol=0)
        np.testing.assert_allclose(a.scores, b.scores, atol=ATOL, rtol=0)
