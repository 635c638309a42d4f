"""Bad input to ImagePredictor and load_model: each a clear error naming the problem and the fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit import ImagePredictor
from samkit.errors import CheckpointError, InputError
from samkit.models.base import DecoderOutput
from tiny import tiny_sam


@pytest.fixture(scope="module")
def predictor():
    p = ImagePredictor(tiny_sam())
    rng = np.random.default_rng(0)
    return p.set_image(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))  # H=60, W=80


def test_tiny_model_predicts(predictor):
    out = predictor.predict(points=[[40, 30]], labels=[1])
    assert out.masks.shape == (3, 60, 80) and out.scores.shape == (3,)
    single = predictor.predict(box=[5, 5, 70, 50], multimask=False)
    assert single.masks.shape == (1, 60, 80)
    refined = predictor.predict(points=[[40, 30]], labels=[1], mask_input=out.low_res_logits[:1], multimask=False)
    assert refined.low_res_logits.shape == (1, 32, 32)


@pytest.mark.parametrize("image, words", [
    (np.zeros((20, 20, 3), np.float32), "uint8"),
    (np.zeros((20, 20, 2), np.uint8), "channel"),
    (np.zeros((2, 20, 20, 3), np.uint8), "shape"),
    (np.zeros((0, 20, 3), np.uint8), "zero size"),
])
def test_bad_image_arrays(image, words):
    with pytest.raises(InputError) as err:  # ImageError is an InputError
        ImagePredictor(tiny_sam()).set_image(image)
    assert words in str(err.value).lower()


@pytest.mark.parametrize("kwargs, words", [
    (dict(points=[[81, 10]], labels=[1]), "outside the image"),
    (dict(points=[[10, -1]], labels=[1]), "outside the image"),
    (dict(points=[[10, 10], [20, 20]], labels=[1]), "one label per point"),
    (dict(points=[[10, 10]]), "without labels"),
    (dict(labels=[1]), "without points"),
    (dict(points=[[10, 10]], labels=[3]), "labels must be 1"),
    (dict(points=[10, 10], labels=[1]), "shape"),
    (dict(points=[[float("nan"), 10]], labels=[1]), "nan"),
    (dict(box=[50, 10, 20, 40]), "inverted"),
    (dict(box=[10, 40, 50, 20]), "inverted"),
    (dict(box=[10, 10, 90, 40]), "outside the image"),
    (dict(box=[10, 10, 40]), "shape"),
    (dict(points=[[10, 10]], labels=[1], mask_input=np.zeros((64, 64), np.float32)), "mask_input"),
    (dict(points=[[10, 10]], labels=[1], mask_input=np.zeros((2, 1, 32, 32), np.float32)), "mask_input"),
    (dict(points=[[10, 10]], labels=[1], mask_input=np.full((1, 32, 32), np.nan, np.float32)), "nan"),
    (dict(), "no prompt"),
    (dict(points=np.zeros((0, 2)), labels=np.zeros(0)), "no prompt"),  # empty arrays are no prompt
    (dict(points=[], labels=[]), "no prompt"),
    (dict(points=[[10, 10], [0, 0]], labels=[1, -1]), "padding label -1"),
    (dict(points=[[80.5, 60]], labels=[1]), "outside the image"),
    (dict(box=[10, 10, 10, 40]), "inverted or empty"),  # zero width
    (dict(box=[-5, 10, 50, 40]), "box=[0, 10, 50, 40]"),  # the fix gives the clipped box
    (dict(box=[10, float("inf"), 50, 40]), "nan or infinity"),
])
def test_bad_prompts(predictor, kwargs, words):
    with pytest.raises(InputError) as err:
        predictor.predict(**kwargs)
    msg = str(err.value)
    assert words in msg.lower()
    assert "Fix:" in msg


@pytest.mark.parametrize("kwargs", [
    dict(points=[[80, 60]], labels=[1]),  # the far corner (W, H): continuous pixel coordinates
    dict(points=[[0, 0], [80, 60]], labels=[1, 0]),
    dict(box=[0, 0, 80, 60]),  # the whole image
    dict(points=np.zeros((0, 2)), labels=[], box=[5, 5, 70, 50]),  # empty points beside a box
])
def test_image_edges_are_valid(predictor, kwargs):
    out = predictor.predict(**kwargs)
    assert out.masks.shape == (3, 60, 80)


def test_predict_batch_prompt_rules(predictor):
    with pytest.raises(InputError, match="needs boxes and/or points"):
        predictor.predict_batch(points=np.zeros((2, 0, 2)), labels=np.zeros((2, 0)))
    with pytest.raises(InputError, match="B x P x 2"):
        predictor.predict_batch(points=np.ones((2, 2)), labels=np.ones(2))
    with pytest.raises(InputError, match=r"box \[1, 1, 90, 10\] extends outside the image"):
        predictor.predict_batch(boxes=[[1, 1, 10, 10], [1, 1, 90, 10]])
    out = predictor.predict_batch(boxes=[[0, 0, 80, 60]], points=[[[80, 60]]], labels=[[1]])
    assert len(out) == 1 and out[0].masks.shape == (1, 60, 80)


def test_predict_before_set_image():
    with pytest.raises(InputError, match="set_image"):
        ImagePredictor(tiny_sam()).predict(points=[[1, 1]], labels=[1])


def test_batch_size_mismatch(predictor):
    with pytest.raises(InputError, match="different batch sizes"):
        predictor.predict_batch(boxes=np.array([[1, 1, 10, 10]] * 2, np.float32),
                                points=np.ones((3, 1, 2), np.float32), labels=np.ones((3, 1), np.int32))


def test_unknown_selection():
    with pytest.raises(InputError, match="selection"):
        ImagePredictor(tiny_sam(), selection="largest")


@pytest.mark.parametrize("selection", ["iou", "stability"])
def test_selection_picks_among_all_candidates(predictor, selection):
    from samkit.ops import stability_score

    p = ImagePredictor(predictor.model, selection=selection)
    p._state = predictor._state
    one = p.predict(points=[[40, 30]], labels=[1], multimask=False)
    t = p._state.transform
    pts = t.coords_to_frame(torch.tensor([[[40.0, 30.0]]], dtype=torch.float64)).float()
    low, iou = p.predict_torch(pts, torch.tensor([[1]]), None, None, "all")
    assert low.shape[1] == 4  # every mask token is a candidate
    key = iou[0] if selection == "iou" else stability_score(low[0], 0.0, 1.0)
    best = int(torch.argmax(key))
    assert np.allclose(one.low_res_logits[0], low[0, best].numpy(), atol=1e-6)
    assert one.masks.shape[0] == 1


def test_stability_selection_never_prefers_an_empty_mask(predictor, monkeypatch):
    """An empty candidate has stability 0 (samkit.ops.stability_score): "stability" picks a
    non-empty one, even when the empty one has the best predicted IoU."""
    p = ImagePredictor(predictor.model, selection="stability")
    p._state = predictor._state
    low = torch.full((1, 4, 32, 32), -5.0)
    low[0, 1, 4:20, 4:20] = 3.0  # stable-ish square with a soft rim
    low[0, 1, 4:20, 19] = 0.5
    low[0, 2, 8:12, 8:12] = 0.5  # unstable: nothing above +1
    low[0, 3, 2:6, 2:6] = 4.0
    iou = torch.tensor([[0.99, 0.5, 0.6, 0.4]])  # the empty token 0 has the best IoU
    monkeypatch.setattr(p, "decode_torch", lambda *a: DecoderOutput(low, iou))
    out = p.predict(points=[[40, 30]], labels=[1], multimask=False)
    assert out.masks[0].any() and out.stability[0] == pytest.approx(1.0)
    assert np.array_equal(out.low_res_logits[0], low[0, 3].numpy())
    every = ImagePredictor(predictor.model, selection="iou")
    every._state = predictor._state
    monkeypatch.setattr(every, "decode_torch", lambda *a: DecoderOutput(low, iou))
    empty = every.predict(points=[[40, 30]], labels=[1], multimask=False)
    assert not empty.masks[0].any() and empty.stability[0] == 0.0  # 0, not NaN


def test_truncated_checkpoint(tmp_path, synth_checkpoint):
    from samkit import load_model

    src = synth_checkpoint("sam_vit_b").read_bytes()
    bad = tmp_path / "sam_vit_b_01ec64.pth"
    bad.write_bytes(src[: len(src) // 3])
    with pytest.raises(CheckpointError) as err:
        load_model("sam_vit_b", checkpoint=bad)
    assert "sam_vit_b_01ec64.pth" in str(err.value) and "download" in str(err.value)
