"""The fast decoder pair of an export folder (``samkit.export.fast_decoder``: ``decoder_image``
once per image, ``prompt_decoder_fast`` per click) gives the reference decoder graph's low-res
masks and IoU in onnxruntime, for random prompts of every layout, and ``OnnxImagePredictor``'s
masks with it equal the reference decoder's. (``tests/test_export.py::test_runtime_matches_torch``
checks the runtime, now on the fast pair, against torch for every family.)"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _session(folder, entry):
    return ort.InferenceSession(str(folder / entry["file"]), providers=["CPUExecutionProvider"])


def _encoded(folder, doc, rng):
    """The encoder graph's outputs (name -> array) on a random image."""
    enc = doc["graphs"]["image_encoder"]
    s = doc["image"]["input_size"]
    x = (rng.random((s * 3 // 4, s, 3)) * 255 if doc["image"]["layout"] == "sam" else rng.standard_normal((1, 3, s, s)))
    sess = _session(folder, enc)
    outs = sess.run(None, {enc["inputs"][0]["name"]: x.astype(np.float32)})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def _prompts(layout, rng, s, n_prompts, n_points, box):
    """Random clicks (and a box) in the model frame, ordered and padded as the layout wants."""
    coords = rng.random((n_prompts, n_points, 2)).astype(np.float32) * s
    labels = rng.integers(0, 2, (n_prompts, n_points)).astype(np.float32)
    labels[:, 0] = 1
    if box:
        corners = np.sort(rng.random((n_prompts, 2, 2)).astype(np.float32) * s, axis=1)
        cl = np.tile(np.array([[2.0, 3.0]], np.float32), (n_prompts, 1))
        if layout == "sam2":
            coords, labels = np.concatenate([corners, coords], 1), np.concatenate([cl, labels], 1)
        else:
            coords, labels = np.concatenate([coords, corners], 1), np.concatenate([labels, cl], 1)
    elif layout == "sam":
        coords = np.concatenate([coords, np.zeros((n_prompts, 1, 2), np.float32)], 1)
        labels = np.concatenate([labels, -np.ones((n_prompts, 1), np.float32)], 1)
    return coords, labels


@pytest.mark.parametrize("family", ["sam", "efficient_sam", "sam2"])
def test_fast_graphs_equal_the_reference_decoder(family, tiny_export):
    _, folder = tiny_export(family)
    doc = json.loads((folder / "samkit-export.json").read_text())
    layout, s = doc["image"]["layout"], doc["image"]["input_size"]
    assert doc["pipelines"]["image_fast"] == {"encoder": "image_encoder", "decoder_image": "decoder_image",
                                              "decoder": "prompt_decoder_fast"}
    for gid in ("decoder_image", "prompt_decoder_fast"):
        assert doc["graphs"][gid]["file"] in doc["files"]  # listed with its sha256
    rng = np.random.default_rng(0)
    feats = _encoded(folder, doc, rng)
    ref = _session(folder, doc["graphs"]["prompt_decoder"])
    image = _session(folder, doc["graphs"]["decoder_image"])
    fast = _session(folder, doc["graphs"]["prompt_decoder_fast"])
    emb = feats["image_embed" if layout == "sam2" else "image_embeddings"]
    first = dict(zip([o.name for o in image.get_outputs()], image.run(None, {"image_embeddings": emb})))
    mh, mw = doc["image"]["mask_input_size"]
    checked = 0
    for n_prompts, n_points, box in [(1, 1, False), (3, 3, False), (2, 2, True), (1, 12, True)]:
        coords, labels = _prompts(layout, rng, s, n_prompts, n_points, box)
        feed = {"point_coords": coords, "point_labels": labels, "mask_input": np.zeros((1, 1, mh, mw), np.float32),
                "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array([s * 3 // 4, s], np.float32),
                **feats}
        names = {i.name for i in ref.get_inputs()}
        want = dict(zip([o.name for o in ref.get_outputs()], ref.run(None, {k: v for k, v in feed.items()
                                                                         if k in names})))
        want_low = want["masks" if layout == "sam2" else "low_res_masks"]
        fast_names = {i.name for i in fast.get_inputs()}
        got_low, got_iou = fast.run(None, {k: v for k, v in {**feed, **first}.items() if k in fast_names})
        assert got_low.shape == want_low.shape and got_iou.shape == want["iou_predictions"].shape
        scale = float(np.abs(want_low).max())
        assert np.abs(got_low - want_low).max() <= 1e-4 * scale, (family, n_points, box)
        assert np.abs(got_iou - want["iou_predictions"]).max() <= 1e-4 * max(1.0, np.abs(got_iou).max())
        sure = np.abs(want_low) >= 1e-3
        assert np.array_equal((got_low > 0)[sure], (want_low > 0)[sure])
        checked += int(sure.sum())
    assert checked > 1000


@pytest.mark.parametrize("family", ["sam", "efficienttam"])
def test_runtime_uses_the_fast_pair_with_the_same_masks(family, tiny_export):
    """``OnnxImagePredictor`` decodes prompts without a mask input with the fast pair (numpy
    postprocessing), and gives the reference decoder's masks (``fast=False``)."""
    from samkit.runtime import OnnxImagePredictor

    _, folder = tiny_export(family)
    img = np.random.default_rng(4).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    fast = OnnxImagePredictor(folder).set_image(img)
    ref = OnnxImagePredictor(folder, fast=False).set_image(img)
    assert fast.fast and not ref.fast
    for kw in (dict(points=[[40, 50], [90, 20]], labels=[1, 0]), dict(box=[10, 10, 80, 70], multimask=False),
               dict(box=[0, 5, 139, 89], points=[[60, 40]], labels=[1])):
        a, b = fast.predict(**kw), ref.predict(**kw)
        scale = float(np.abs(b.low_res_logits).max())
        np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, atol=1e-4 * scale, rtol=0)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4, rtol=0)
        assert a.masks.shape == b.masks.shape == (len(b), 90, 140) and (a.masks != b.masks).mean() < 1e-3
    assert fast._state.first is not None and ref._state.first is None  # the per-image graph ran once, for the fast one
