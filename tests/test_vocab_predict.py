"""Open vocabulary end to end, with a synthetic DenseClip whose "red" and "blue" select known
regions: text -> masks (classic GrabCut and a tiny SAM), naming masks, everything mode with a
vocabulary, video by name, the native-text hook and the errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit import AutoMaskGenerator, ImagePredictor, VideoTracker, load_model
from samkit.errors import InputError
from samkit.masks import Masks
from _synthetic_clip import SyntheticClip, two_squares
from test_auto import ColorRegion
from tiny import tiny_sam


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def scene():
    return two_squares()


def iou(a, b):
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def classic():
    return load_model("classic")


# ----------------------------------------------------------------------------- text -> masks
@pytest.mark.parametrize("multimask", [True, False])
def test_predict_text_finds_the_red_region(scene, classic, multimask):
    img, red, blue = scene
    out = ImagePredictor(classic, clip=SyntheticClip()).set_image(img).predict(text="red", multimask=multimask)
    assert len(out) == 1 and out.labels == ["red"] and out.label_scores.dtype == np.float32
    assert iou(out.masks[0], red) > 0.9 and out.label_scores[0] > 0.9
    assert out.low_res_logits is not None and out.low_res_logits.shape == (1, 256, 256)


def test_predict_batch_texts_one_masks_per_text(scene, classic):
    img, red, blue = scene
    outs = ImagePredictor(classic, clip=SyntheticClip()).set_image(img).predict_batch(texts=["blue", "red"])
    assert [o.labels for o in outs] == [["blue"], ["red"]]
    assert iou(outs[0].masks[0], blue) > 0.9 and iou(outs[1].masks[0], red) > 0.9


def test_text_not_in_the_image_gives_no_masks(scene, classic):
    img, _, _ = scene
    out = ImagePredictor(classic, clip=SyntheticClip()).set_image(img).predict(text="zebra")
    assert len(out) == 0 and out.labels == [] and out.label_scores.shape == (0,) and out.masks.shape == (0, 96, 128)


def test_prompt_denoising_option_reaches_the_heat_map(scene, classic, monkeypatch):
    import samkit.vocab.heatmap as hm

    seen = []
    real = hm.probabilities
    monkeypatch.setattr(hm, "probabilities", lambda *a, **k: seen.append(a[3] if len(a) > 3 else k.get("denoise"))
                        or real(*a, **k))
    p = ImagePredictor(classic, clip=SyntheticClip()).set_image(scene[0])
    out = p.predict(text="red", denoise=0.5)
    assert seen == [0.5] and out.labels == ["red"] and iou(out.masks[0], scene[1]) > 0.9


def test_two_instances_of_one_text(classic):
    img, red, _ = two_squares()
    img[red] = (128, 128, 128)
    left, right = np.zeros(red.shape, bool), np.zeros(red.shape, bool)
    left[10:40, 8:40], right[50:86, 80:120] = True, True
    img[left | right] = (220, 30, 30)
    p = ImagePredictor(classic, clip=SyntheticClip()).set_image(img)
    out = p.predict(text="red")
    assert len(out) == 2 and out.labels == ["red", "red"]
    assert sorted(round(max(iou(m, left), iou(m, right)), 1) >= 0.9 for m in out.masks) == [True, True]
    assert len(p.predict(text="red", max_instances=1)) == 1
    assert np.all(np.diff(out.label_scores) <= 0)  # best label score first


def test_neural_models_decode_all_instances_in_one_batch(scene):
    img, _, _ = scene
    model = tiny_sam()
    calls = []
    decode = model.decode

    def counting(features, points, labels, boxes, mask_input, multimask):
        calls.append(None if points is None else tuple(points.shape))
        return decode(features, points, labels, boxes, mask_input, multimask)

    model.decode = counting
    outs = ImagePredictor(model, clip=SyntheticClip()).set_image(img).predict_batch(texts=["red", "blue"])
    assert calls == [(2, 1, 2)]  # both instances, one point each, one decoder call
    for text, o in zip(["red", "blue"], outs):  # random weights: masks anywhere (empty ones are dropped)
        assert o.labels == [text] * len(o) and o.label_scores.shape == (len(o),)
        assert o.low_res_logits.shape == (len(o), 32, 32) and o.areas.min(initial=1) > 0


def test_dense_features_once_per_image(scene, classic):
    img, _, _ = scene
    clip = SyntheticClip()
    p = ImagePredictor(classic, clip=clip).set_image(img)
    p.predict(text="red")
    p.predict(text="blue")
    assert clip.dense_calls == 1
    p.set_image(img)
    p.predict(text="red")
    assert clip.dense_calls == 2


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, words", [
    ({"text": "red", "points": [[5, 5]], "labels": [1]}, ["cannot be combined with points"]),
    ({"text": "red", "box": [0, 0, 5, 5]}, ["cannot be combined"]),
    ({"text": ""}, ["text prompt is empty"]),
    ({"text": "   "}, ["text prompt is empty"]),
    ({"text": 3}, ["text must be a string"]),
    ({"threshold": 0.3, "points": [[5, 5]], "labels": [1]}, ["threshold only apply to text prompts"]),
    ({"text": "red", "threshold": 1.5}, ["threshold must be in [0, 1)"]),
])
def test_predict_text_errors(scene, classic, kwargs, words):
    img, _, _ = scene
    p = ImagePredictor(classic, clip=SyntheticClip()).set_image(img)
    with pytest.raises(InputError) as e:
        p.predict(**kwargs)
    assert all(w in str(e.value) for w in words) and "Fix:" in str(e.value)


@pytest.mark.parametrize("texts, words", [("red", ["must be a list"]), ([], ["is empty"]),
                                          (["red", "RED"], ["twice"])])
def test_predict_batch_texts_errors(scene, classic, texts, words):
    p = ImagePredictor(classic, clip=SyntheticClip()).set_image(scene[0])
    with pytest.raises(InputError) as e:
        p.predict_batch(texts=texts)
    assert all(w in str(e.value) for w in words)


def test_text_without_clip_names_the_fix(scene, classic):
    p = ImagePredictor(classic).set_image(scene[0])
    with pytest.raises(InputError) as e:
        p.predict(text="red")
    assert "clip=" in str(e.value) and "--clip" in str(e.value) and "'classic'" in str(e.value)


def test_text_before_set_image(classic):
    with pytest.raises(InputError, match="no image is set"):
        ImagePredictor(classic, clip=SyntheticClip()).predict(text="red")


def test_wrong_clip_object_is_refused_at_once(classic):
    with pytest.raises(InputError, match="not a DenseClip"):
        ImagePredictor(classic, clip=torch.nn.Linear(2, 2))


def test_too_long_text_surfaces_the_tokenizer_error(scene, classic):
    class Tokenizing(SyntheticClip):
        def encode_text(self, texts):
            for t in texts:
                if len(t.split()) > 20:
                    raise InputError(f"text {t[:20]!r}... is longer than CLIP's context of 77 tokens. "
                                     "Fix: shorten the text.")
            return super().encode_text(texts)

    p = ImagePredictor(classic, clip=Tokenizing()).set_image(scene[0])
    with pytest.raises(InputError, match="77 tokens"):
        p.predict(text=" ".join(["very"] * 30) + " red")


# ----------------------------------------------------------------------------- native text
class NativeText:
    """A non-neural model that reads text itself: the whole image for every text."""

    spec = None

    def __init__(self, count=None):
        self.count = count
        self.seen = None

    def predict_image(self, *a, **k):  # pragma: no cover - not used with text
        raise AssertionError

    def predict_text(self, image, texts, features=None, transform=None):
        self.seen = (image.shape, list(texts), features, transform)
        full = np.ones((1,) + image.shape[:2], bool)
        return [Masks(full, np.array([0.5], np.float32)) for _ in range(self.count or len(texts))]


def test_native_text_model_is_used_instead_of_clip(scene):
    img = scene[0]
    model = NativeText()
    clip = SyntheticClip()
    outs = ImagePredictor(model, clip=clip).set_image(img).predict_batch(texts=["cat", "dog"])
    assert model.seen == ((96, 128, 3), ["cat", "dog"], None, None) and clip.calls == 0
    assert [o.labels for o in outs] == [["cat"], ["dog"]] and outs[0].label_scores.tolist() == [0.5]
    assert ImagePredictor(NativeText()).set_image(img).predict(text="cat").labels == ["cat"]  # no clip needed


def test_native_text_model_must_answer_every_text(scene):
    with pytest.raises(InputError, match="returned 1 results for 2 texts"):
        ImagePredictor(NativeText(count=1)).set_image(scene[0]).predict_batch(texts=["cat", "dog"])


# ----------------------------------------------------------------------------- naming masks
def test_masks_classify_names_both_regions(scene):
    img, red, blue = scene
    named = Masks(np.stack([blue, red]), np.array([0.9, 0.8])).classify(["red", "blue"], clip=SyntheticClip(),
                                                                       image=img)
    assert named.labels == ["blue", "red"] and named.label_scores.min() > 0.99
    assert named.scores.tolist() == pytest.approx([0.9, 0.8])  # the masks and scores are unchanged


def test_everything_with_a_two_word_vocabulary_labels_its_masks(scene):
    img, red, blue = scene
    gen = AutoMaskGenerator(ColorRegion(), points_per_side=8, stability_score_thresh=0.85,
                            vocabulary=["red", "blue"], clip=SyntheticClip())
    masks, info = gen.generate_with_info(img)
    assert masks.labels is not None and len(masks.labels) == len(masks) >= 2
    assert set(masks.labels) <= {"red", "blue"} and masks.label_scores.shape == (len(masks),)
    for gt, name in [(red, "red"), (blue, "blue")]:
        k = int(np.argmax([iou(m, gt) for m in masks.masks]))
        assert iou(masks.masks[k], gt) > 0.85 and masks.labels[k] == name and masks.label_scores[k] > 0.9
    recs = info.to_records()
    assert [r["label"] for r in recs] == masks.labels and recs[0]["label_score"] == pytest.approx(
        float(masks.label_scores[0]))


def test_everything_text_embeddings_once_per_generator(scene):
    clip = SyntheticClip()
    gen = AutoMaskGenerator(ColorRegion(), points_per_side=4, stability_score_thresh=0.85, vocabulary="red,blue",
                            clip=clip)
    gen.generate(scene[0])
    calls = clip.calls
    gen.generate(scene[0])
    assert clip.calls == calls


@pytest.mark.parametrize("kwargs, words", [
    ({"clip": SyntheticClip()}, ["without a vocabulary"]),
    ({"vocabulary": "coco"}, ["clip= is None"]),
    ({"vocabulary": "cocoo", "clip": SyntheticClip()}, ["unknown vocabulary"]),
    ({"vocabulary": [], "clip": SyntheticClip()}, ["empty"]),
])
def test_everything_vocabulary_errors(kwargs, words):
    with pytest.raises(InputError) as e:
        AutoMaskGenerator(ColorRegion(), **kwargs)
    assert all(w in str(e.value) for w in words)


# ----------------------------------------------------------------------------- video by name
def _video_models():
    from _tiny_video import build_tiny_video_model

    return {"classic": load_model("classic"), "tiny_sam2": build_tiny_video_model(64, 32, seed=0)}


@pytest.mark.parametrize("name", ["classic", "tiny_sam2"])
def test_track_by_text_keeps_labels(scene, name):
    pytest.importorskip("cv2")
    img, red, blue = scene
    tracker = VideoTracker(_video_models()[name])
    session = tracker.start(np.stack([img] * 3))
    tracker.add_prompt(session, frame=0, obj_id=5, box=[0, 0, 10, 10])
    added = tracker.add_text_prompt(session, 0, ["red", "blue"], clip=SyntheticClip())
    assert added == {6: "red", 7: "blue"} and session.labels == {6: "red", 7: "blue"}
    results = list(tracker.propagate(session))
    assert [t for t, _ in results] == [0, 1, 2]
    assert all(r.labels == {6: "red", 7: "blue"} for _, r in results)
    if name == "classic":  # the mask prompts are the found regions
        assert iou(results[0][1].masks[6], red) > 0.9 and iou(results[0][1].masks[7], blue) > 0.9
    tracker.remove_object(session, 6)
    assert session.labels == {7: "blue"}


def test_track_by_text_errors_and_not_found(scene, classic):
    img = scene[0]
    tracker = VideoTracker(classic)
    session = tracker.start(np.stack([img] * 2))
    assert tracker.add_text_prompt(session, 1, "zebra", clip=SyntheticClip()) == {}
    tracker.add_prompt(session, frame=0, obj_id=1, box=[0, 0, 10, 10])
    with pytest.raises(InputError, match="already in use"):
        tracker.add_text_prompt(session, 0, "red", clip=SyntheticClip(), first_obj_id=1)
    with pytest.raises(InputError, match="outside the video"):
        tracker.add_text_prompt(session, 5, "red", clip=SyntheticClip())
    with pytest.raises(InputError, match="clip="):
        tracker.add_text_prompt(session, 0, "red")
    results = dict(tracker.propagate(session))
    assert results[0].labels is None  # no object of this session has a label
