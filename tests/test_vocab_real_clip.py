"""The open-vocabulary layer on a REAL CLIP: MaskCLIP over samkit's CLIP model (a reduced
configuration with random weights in OpenAI's key layout) behind the DenseClip protocol, through
the predictor, Masks.classify, everything mode and the command line. Random weights name nothing
meaningfully, so these tests check the wiring (shapes, labels from the vocabulary, files), not
quality; the synthetic DenseClip of tests/_synthetic_clip.py checks the answers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import _clip_oracle as co
from samkit import families, specs

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def tiny_clip():
    model = co.build("vit_tiny").eval()
    model.load_state_dict(co.synth_state_dict(model, seed=3))
    return model


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.full((48, 64, 3), 40, np.uint8)
    img[10:30, 8:30] = (220, 30, 30)
    img[20:44, 36:60] = (30, 30, 220)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


def test_maskclip_is_a_dense_clip_and_drives_predict_text(tiny_clip, image):
    from samkit import ImagePredictor
    from samkit.models.classic import GrabCutModel
    from samkit.vocab import check_dense_clip
    from samkit.vocab.maskclip import MaskClip

    clip = check_dense_clip(MaskClip(tiny_clip, short_side=64))
    feats = clip.dense_features(image)
    assert feats.ndim == 3 and feats.shape[0] == 32
    assert torch.allclose(feats.norm(dim=0), torch.ones(feats.shape[1:]), atol=1e-4)
    predictor = ImagePredictor(GrabCutModel(work_side=64, iters=1), clip=clip).set_image(image)
    out = predictor.predict(text="red square", threshold=0.0)
    assert len(out) >= 1 and out.labels is not None and all(label == "red square" for label in out.labels)
    assert out.label_scores is not None and out.label_scores.shape == (len(out),)
    assert out.masks.shape[1:] == image.shape[:2]


def test_masks_classify_with_maskclip_names_from_the_vocabulary(tiny_clip, image):
    from samkit import Masks
    from samkit.vocab.maskclip import MaskClip

    masks = Masks(np.stack([np.zeros((48, 64), bool), np.zeros((48, 64), bool)]))
    masks.masks[0, 10:30, 8:30] = True
    masks.masks[1, 20:44, 36:60] = True
    named = masks.classify(["red", "blue", "grey"], clip=MaskClip(tiny_clip, short_side=64), image=image)
    assert len(named.labels) == 2 and set(named.labels) <= {"red", "blue", "grey"}
    assert ((named.label_scores >= 0) & (named.label_scores <= 1)).all()


def test_segment_text_on_the_command_line_with_a_clip_file(tiny_clip, image, tmp_path, monkeypatch):
    """`samkit segment --text --clip NAME --clip-checkpoint FILE` loads the CLIP file through the
    registry (a reduced CLIP registered for this test) and writes labelled outputs."""
    from PIL import Image

    from samkit.cli.main import main

    spec = specs.ModelSpec(name="tiny_clip_cli", family="clip", module="samkit.models.clip", url=None,
                           filename="tiny_clip_cli.safetensors", license="MIT", paper="test",
                           checkpoint_format="openai_clip", kind="clip")
    monkeypatch.setitem(specs.MODELS, "tiny_clip_cli", spec)
    monkeypatch.setitem(families._BUILDERS, "tiny_clip_cli", lambda: co.build("vit_tiny"))
    ckpt = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.state_dict().items()}, str(ckpt))
    img_path = tmp_path / "scene.png"
    Image.fromarray(image).save(img_path)
    out = tmp_path / "out"
    code = main(["segment", str(img_path), "--model", "classic", "--text", "red square", "--clip", "tiny_clip_cli",
                 "--clip-checkpoint", str(ckpt), "--text-threshold", "0", "--out", str(out), "--format", "coco"])
    assert code == 0
    doc = json.loads((out / "scene_coco.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["red square"]
    assert doc["annotations"] and all(a["category_id"] == doc["categories"][0]["id"] for a in doc["annotations"])
