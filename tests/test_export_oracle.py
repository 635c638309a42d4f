"""The exported SAM-family decoder against segment-anything's own ONNX export, driven exactly as
its ``notebooks/onnx_model_example.ipynb`` feeds it.

The official decoder is exported here like ``scripts/export_onnx_model.py`` does
(``SamOnnxModel``, opset 17, dynamic ``num_points``, outputs masks / iou_predictions /
low_res_masks) from an official ``Sam`` holding the same weights as samkit's model; the image
embedding comes from the official ``SamPredictor``. Both graphs run in onnxruntime on the same
inputs: a click plus the padding point at (0, 0), two clicks with the previous low-res logits as
mask input, a box with a negative click and no padding point.

With torch 2.13's TorchScript exporter, the official export bakes the crop of the padding into
the graph (``int(prepadded_size[0])`` is traced as a constant from the dummy ``orig_im_size``
1500 x 2250), so its ``masks`` output is right only for images of that aspect ratio (3:2
landscape); samkit's graph keeps the crop dynamic. The official ONNX graph is therefore compared
on a 3:2 image, and on other shapes the reference is ``SamOnnxModel`` itself, run in torch.
"""
from __future__ import annotations

import io
import warnings
from functools import partial

import numpy as np
import pytest
import torch

from conftest import official_import_path

pytestmark = pytest.mark.oracle
pytest.importorskip("onnxruntime")


def _official_sam(state_dict, size: int, embed_dim: int, depth: int, heads: int, out: int, window: int,
                  global_idx, decoder_dim: int, decoder_heads: int, mlp: int, iou_hidden: int, eps: float = 1e-6):
    with official_import_path():
        from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                               TwoWayTransformer)
    enc = ImageEncoderViT(img_size=size, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=heads,
                          out_chans=out, window_size=window, global_attn_indexes=tuple(global_idx), qkv_bias=True,
                          use_rel_pos=True, norm_layer=partial(torch.nn.LayerNorm, eps=eps), mlp_ratio=4.0,
                          use_abs_pos=True)
    grid = size // 16
    pe = PromptEncoder(embed_dim=out, image_embedding_size=(grid, grid), input_image_size=(size, size),
                       mask_in_chans=16)
    md = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=decoder_dim,
                                                                            mlp_dim=mlp, num_heads=decoder_heads),
                     transformer_dim=decoder_dim, iou_head_depth=3, iou_head_hidden_dim=iou_hidden)
    sam = Sam(enc, pe, md, pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])
    sam.load_state_dict(state_dict, strict=True)
    return sam.eval()


def _official_decoder(sam, single: bool):
    """``scripts/export_onnx_model.py``'s ``export_decoder``, into memory, as an onnxruntime session."""
    import onnxruntime

    with official_import_path():
        from segment_anything.utils.onnx import SamOnnxModel
    model = SamOnnxModel(model=sam, return_single_mask=single)
    embed_size = sam.prompt_encoder.image_embedding_size
    dummy = {
        "image_embeddings": torch.randn(1, sam.prompt_encoder.embed_dim, *embed_size, dtype=torch.float),
        "point_coords": torch.randint(low=0, high=1024, size=(1, 5, 2), dtype=torch.float),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float),
        "mask_input": torch.randn(1, 1, *[4 * x for x in embed_size], dtype=torch.float),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([1500, 2250], dtype=torch.float),
    }
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(dummy.values()), buf, export_params=True, verbose=False, opset_version=17,
                          do_constant_folding=True, input_names=list(dummy.keys()),
                          output_names=["masks", "iou_predictions", "low_res_masks"],
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                          dynamo=False)
    return onnxruntime.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


def _notebook_runs(predictor, image, single: bool):
    """The notebook's three examples as decoder inputs (mask input: the previous low-res logits,
    of the mask the single-mask decoder returned, or of token 0 of an all-masks decoder)."""
    emb = predictor.get_image_embedding().cpu().numpy()
    size = np.array(image.shape[:2], dtype=np.float32)
    t = predictor.transform

    def feeds(points, labels, mask=None):
        return {"image_embeddings": emb, "point_coords": t.apply_coords(points, image.shape[:2]).astype(np.float32),
                "point_labels": labels.astype(np.float32), "orig_im_size": size,
                "mask_input": mask if mask is not None else np.zeros((1, 1, 32, 32), np.float32),
                "has_mask_input": np.ones(1, np.float32) if mask is not None else np.zeros(1, np.float32)}

    pt, lb = np.array([[50, 37]]), np.array([1])
    first = feeds(np.concatenate([pt, np.array([[0.0, 0.0]])], 0)[None], np.concatenate([lb, [-1]], 0)[None])
    pts2, lb2 = np.array([[50, 37], [112, 62]]), np.array([1, 1])
    second = lambda low: feeds(np.concatenate([pts2, np.array([[0.0, 0.0]])], 0)[None],  # noqa: E731
                               np.concatenate([lb2, [-1]], 0)[None], low if single else low[:, :1])
    box, pt3, lb3 = np.array([42, 60, 70, 87]), np.array([[57, 75]]), np.array([0])
    third = feeds(np.concatenate([pt3, box.reshape(2, 2)], 0)[None], np.concatenate([lb3, [2, 3]], 0)[None])
    return first, second, third


class _TorchDecoder:
    """``SamOnnxModel`` run in torch, with an onnxruntime-like ``run``."""

    def __init__(self, sam, single: bool) -> None:
        with official_import_path():
            from segment_anything.utils.onnx import SamOnnxModel
        self.model = SamOnnxModel(sam, return_single_mask=single).eval()

    def run(self, _names, feeds):
        with torch.no_grad():
            return [t.numpy() for t in self.model(*(torch.from_numpy(feeds[k]) for k in (
                "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")))]


@pytest.fixture(scope="module")
def tiny_pair(tiny_export):
    """(samkit's tiny SAM, the official Sam with the same weights)."""
    model, _ = tiny_export("sam")
    return model, _official_sam(model.state_dict(), 128, 32, 2, 2, 32, 4, (1,), 32, 2, 64, 32, eps=1e-5)


@pytest.mark.parametrize("hw, reference", [((96, 144), "onnx"), ((96, 140), "torch"), ((140, 97), "torch")])
@pytest.mark.parametrize("single", [False, True])
def test_decoder_equals_segment_anything_onnx_decoder(single, hw, reference, tiny_pair, tiny_export):
    import onnxruntime

    from samkit.runtime import OnnxImagePredictor, read_export

    with official_import_path():
        from segment_anything import SamPredictor
    _, sam = tiny_pair
    folder = tiny_export("sam", single_mask=True)[1] if single else tiny_export("sam")[1]
    image = np.random.default_rng(7).integers(0, 255, (*hw, 3), dtype=np.uint8)
    predictor = SamPredictor(sam)
    with torch.no_grad():
        predictor.set_image(image)
    ours_pred = OnnxImagePredictor(folder).set_image(image)  # our encoder graph and numpy preprocessing
    np.testing.assert_allclose(ours_pred.features["image_embeddings"], predictor.get_image_embedding().numpy(),
                               atol=1e-4, rtol=0)
    export = read_export(folder)
    ours = onnxruntime.InferenceSession(str(export.path(export.graph("prompt_decoder"))),
                                        providers=["CPUExecutionProvider"])
    official = _official_decoder(sam, single) if reference == "onnx" else _TorchDecoder(sam, single)
    first, second, third = _notebook_runs(predictor, image, single)
    results = []
    for run in (first, third):
        a, b = ours.run(None, run), official.run(None, run)
        results.append(b)
        for x, y in zip(a, b):
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, atol=1e-4, rtol=0)
        assert np.array_equal(a[0] > 0.0, b[0] > 0.0) or (np.abs(b[0]) < 1e-4)[(a[0] > 0) != (b[0] > 0)].all()
    run = second(results[0][2])  # the first run's low_res_masks as mask input, has_mask_input 1
    for x, y in zip(ours.run(None, run), official.run(None, run)):
        np.testing.assert_allclose(x, y, atol=1e-4, rtol=0)
    assert results[0][0].shape == (1, 1 if single else 4, *hw)


@pytest.mark.slow
def test_sam_vit_b_decoder_equals_segment_anything_onnx_decoder(synth_checkpoint, tmp_path):
    """Full size, parity weights: samkit's sam_vit_b export (encoder and decoder) against the
    official predictor's embedding and the official ONNX decoder."""
    import onnxruntime

    from parity import synth_state_dict
    from samkit.export import export_onnx
    from samkit.registry import load_model
    from samkit.runtime import OnnxImagePredictor

    with official_import_path():
        import segment_anything as sa
    model = load_model("sam_vit_b", checkpoint=synth_checkpoint("sam_vit_b"))
    folder = export_onnx(model, tmp_path / "sam_vit_b")
    sam = sa.sam_model_registry["vit_b"]()
    sam.load_state_dict(synth_state_dict("sam_vit_b"), strict=True)
    sam.eval()
    image = np.random.default_rng(3).integers(0, 255, (400, 600, 3), dtype=np.uint8)  # 3:2, see the module docstring
    predictor = sa.SamPredictor(sam)
    with torch.no_grad():
        predictor.set_image(image)
    ours = OnnxImagePredictor(folder).set_image(image)
    np.testing.assert_allclose(ours.features["image_embeddings"], predictor.get_image_embedding().numpy(),
                               atol=1e-4, rtol=0)
    dec = onnxruntime.InferenceSession(str(folder / "sam_vit_b.decoder.onnx"), providers=["CPUExecutionProvider"])
    official = _official_decoder(sam, False)
    emb = predictor.get_image_embedding().numpy()
    coords = predictor.transform.apply_coords(np.array([[[500.0, 375.0], [0.0, 0.0]]]), image.shape[:2])
    run = {"image_embeddings": emb, "point_coords": coords.astype(np.float32),
           "point_labels": np.array([[1, -1]], np.float32), "mask_input": np.zeros((1, 1, 256, 256), np.float32),
           "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array(image.shape[:2], np.float32)}
    for x, y in zip(dec.run(None, run), official.run(None, run)):
        np.testing.assert_allclose(x, y, atol=1e-4, rtol=0)
