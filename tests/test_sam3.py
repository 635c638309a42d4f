"""SAM 3 in samkit: the released key lists, the API (text, exemplars, points/boxes), the
command line and the errors, on a reduced model loaded from synthesized released-layout weights
(parity with transformers: tests/test_sam3_parity.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "sam3"))

import oracle as O  # noqa: E402

from samkit import ImagePredictor  # noqa: E402
from samkit.checkpoint import load_into, remap  # noqa: E402
from samkit.errors import CheckpointError, InputError  # noqa: E402
from samkit.models.sam3 import Sam3Model  # noqa: E402


@pytest.fixture(scope="module")
def sam3():
    model = O.load_reduced()
    model.score_threshold = 0.0  # random weights: keep every query, so instances exist
    return model


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- released layouts
def _meta(manifest):
    return {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, s, d in manifest}


@pytest.mark.parametrize("layout", ["official", "hf"])
def test_released_key_lists_remap_to_the_model(layout):
    """The key lists (names, shapes) of the released ``sam3.pt`` and of the ``facebook/sam3``
    safetensors (tests/sam3/manifest_*.json) remap exactly to the full-size model (meta device)."""
    manifest = json.loads((O.HERE / f"manifest_{layout}.json").read_text())
    with torch.device("meta"):
        model = Sam3Model()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in remap(_meta(manifest), "sam3").items()}
    assert sorted(set(ours) ^ set(theirs)) == []
    assert [k for k in ours if ours[k] != theirs[k]] == []


def test_test_helper_layout_is_the_released_one():
    """``oracle.official_manifest`` (the files of the reduced tests) names keys as the released
    file does: at full size it equals tests/sam3/manifest_official.json."""
    from samkit.models.sam3 import Sam3Config

    released = {k: s for k, s, _ in json.loads((O.HERE / "manifest_official.json").read_text())}
    assert {k: s for k, s, _ in O.official_manifest(Sam3Config())} == released


def test_remap_is_pure():
    sd = O.synth_official(O.REDUCED)
    keys = list(sd)
    remap(sd, "sam3")
    assert list(sd) == keys


# ----------------------------------------------------------------------------- the API
def test_text_finds_instances_with_labels(sam3, image):
    predictor = ImagePredictor(sam3).set_image(image)
    out = predictor.predict(text="yellow school bus")
    assert len(out) == sam3.config.num_queries  # threshold 0: every query is an instance
    assert out.labels == ["yellow school bus"] * len(out)
    np.testing.assert_array_equal(out.label_scores, out.scores)
    assert (np.diff(out.scores) <= 0).all() and out.masks.shape[1:] == image.shape[:2]
    assert out.low_res_logits.shape[1:] == (72, 72)  # 4 x the 18 x 18 grid of the reduced model
    both = predictor.predict_batch(texts=["yellow school bus", "dog"])
    assert [m.labels[0] for m in both] == ["yellow school bus", "dog"]
    np.testing.assert_allclose(both[0].scores, out.scores, rtol=1e-5)


def test_threshold_keeps_only_confident_instances(sam3, image):
    predictor = ImagePredictor(sam3).set_image(image)
    scores = predictor.predict(text="dog").scores
    sam3.score_threshold = float(np.median(scores))
    try:
        kept = predictor.predict(text="dog")
    finally:
        sam3.score_threshold = 0.0
    assert 0 < len(kept) < len(scores) and (kept.scores > np.median(scores)).all()


def test_exemplars_find_instances(sam3, image):
    predictor = ImagePredictor(sam3).set_image(image)
    out = predictor.predict(exemplars=[[10, 20, 60, 80], [90, 10, 150, 50]], exemplar_labels=[1, 0])
    assert len(out) > 0 and out.labels == ["exemplar"] * len(out)
    with_text = predictor.predict(exemplars=[10, 20, 60, 80], text="dog")
    assert with_text.labels[0] == "dog"
    assert not np.allclose(with_text.scores[:5], out.scores[:5])


def test_exemplar_box_in_pixels_matches_the_normalised_prompt(sam3, image):
    predictor = ImagePredictor(sam3).set_image(image)
    out = predictor.predict(exemplars=[[16, 24, 80, 96]])
    h, w = image.shape[:2]
    box = torch.tensor([[[48 / w, 60 / h, 64 / w, 72 / h]]])  # cx, cy, w, h of the same box
    with torch.inference_mode():
        det = sam3.detect(predictor.features, texts=["visual"], boxes=box)
    np.testing.assert_allclose(out.scores, np.sort(det.scores[0].numpy())[::-1], rtol=1e-5)


def test_points_and_boxes_behave_like_sam2(sam3, image):
    predictor = ImagePredictor(sam3).set_image(image)
    out = predictor.predict(points=[[40, 50]], labels=[1])
    assert len(out) == 3 and out.low_res_logits.shape == (3, 72, 72) and out.labels is None
    again = predictor.predict(points=[[40, 50], [100, 60]], labels=[1, 0], mask_input=out.low_res_logits[0],
                              multimask=False)
    assert len(again) == 1
    assert len(predictor.predict(box=[10, 10, 100, 90], multimask=False)) == 1


@pytest.mark.parametrize("kwargs, words", [
    (dict(text=""), "empty"),
    (dict(text="   "), "empty"),
    (dict(text=" ".join(["word"] * 31)), "SAM 3 reads at most 30"),
    (dict(exemplars=[[10, 10, 170, 50]]), "exemplar box"),
    (dict(exemplars=[[50, 50, 40, 60]]), "inverted"),
    (dict(exemplars=[]), "empty"),
    (dict(exemplars=[[1, 2, 3]]), "N x 4"),
    (dict(exemplars=[[10, 10, 50, 50]], exemplar_labels=[1, 0]), "one label per"),
    (dict(exemplars=[[10, 10, 50, 50]], exemplar_labels=[2]), "1 (positive"),
    (dict(exemplar_labels=[1]), "without exemplars"),
    (dict(exemplars=[[10, 10, 50, 50]], points=[[5, 5]], labels=[1]), "cannot be combined"),
])
def test_prompt_errors(sam3, image, kwargs, words):
    predictor = ImagePredictor(sam3).set_image(image)
    with pytest.raises(InputError, match="Fix:") as exc:
        predictor.predict(**kwargs)
    assert words in str(exc.value)


def test_exemplars_need_a_concept_model(image):
    from tiny import tiny_sam

    predictor = ImagePredictor(tiny_sam()).set_image(image)
    with pytest.raises(InputError, match="cannot find objects from exemplar boxes"):
        predictor.predict(exemplars=[[10, 10, 50, 50]])


def test_sam2_checkpoint_given_as_sam3_names_what_it_fits(synth_checkpoint):
    from samkit.checkpoint import read_state_dict

    path = synth_checkpoint("sam2.1_hiera_t")
    with torch.device("meta"):
        model = Sam3Model(O.REDUCED)
    with pytest.raises(CheckpointError) as exc:
        load_into(model, read_state_dict(path), "sam3", source=path)
    text = str(exc.value)
    assert "does not fit model 'sam3'" in text and "sam2.1_hiera_t" in text and "Fix:" in text


def test_license_notice_is_warned_once(monkeypatch):
    from samkit import registry
    from samkit.specs import get_spec

    monkeypatch.setattr(registry, "_LICENSE_WARNED", set())
    spec = get_spec("sam3")
    assert spec.commercial_use and "SAM License" in spec.license and "gated" in spec.notes
    with pytest.warns(UserWarning, match="SAM License.*military"):
        registry._warn_license(spec)
    registry._warn_license(spec)  # once only: no second warning (pytest.warns above consumed the first)


# ----------------------------------------------------------------------------- command line
def test_cli_segment_text_reads_text_itself(sam3, image, tmp_path, monkeypatch, capsys):
    pytest.importorskip("typer")
    from PIL import Image

    import samkit.registry
    import samkit.vocab
    from samkit.cli.main import main

    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: sam3)
    monkeypatch.setattr(samkit.vocab, "load_clip", lambda *a, **k: pytest.fail("a CLIP was loaded for SAM 3"))
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    scores = ImagePredictor(sam3).set_image(image).predict(text="bus").scores
    sam3.score_threshold = float(scores[2] + scores[3]) / 2  # three instances of "bus"
    try:
        code = main(["segment", str(path), "--model", "sam3", "--text", "bus", "--text", "dog", "--out",
                     str(tmp_path / "out"), "--format", "png,coco,yolo,labelme,polygons,json"])
    finally:
        sam3.score_threshold = 0.0
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["clip"] is None and doc["prompts"] == {"text": ["bus", "dog"]}
    labels = [m["label"] for m in doc["masks"]]
    assert labels.count("bus") == 3 and set(labels) <= {"bus", "dog"}
    coco = json.loads((tmp_path / "out" / "img_coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "bus"}, {"id": 2, "name": "dog"}]
    assert (tmp_path / "out" / "classes.txt").read_text() == "bus\ndog\n"


def test_cli_segment_exemplars(sam3, image, tmp_path, monkeypatch, capsys):
    """``--exemplar X0,Y0,X1,Y1[,LABEL]`` (repeatable, with at most one --text) gives the same
    instances as ``predict(exemplars=..., exemplar_labels=..., text=...)``, labelled, in every format."""
    pytest.importorskip("typer")
    from PIL import Image

    import samkit.registry
    from samkit.cli.main import main

    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: sam3)
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    want = ImagePredictor(sam3).set_image(image).predict(exemplars=[[10, 20, 60, 80], [90, 10, 150, 50]],
                                                         exemplar_labels=[1, 0], text="dog")
    sam3.score_threshold = float(want.scores[3] + want.scores[4]) / 2  # four instances
    try:
        code = main(["segment", str(path), "--model", "sam3", "--exemplar", "10,20,60,80", "--exemplar",
                     "90,10,150,50,0", "--text", "dog", "--out", str(tmp_path / "out"), "--format", "coco,yolo,json"])
    finally:
        sam3.score_threshold = 0.0
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["prompts"] == {"exemplars": [[10, 20, 60, 80], [90, 10, 150, 50]], "exemplar_labels": [1, 0],
                              "text": "dog"}
    assert [m["label"] for m in doc["masks"]] == ["dog"] * 4
    np.testing.assert_allclose([m["score"] for m in doc["masks"]], want.scores[:4], rtol=1e-5)
    coco = json.loads((tmp_path / "out" / "img_coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "dog"}] and len(coco["annotations"]) == 4
    assert (tmp_path / "out" / "classes.txt").read_text() == "dog\n"


@pytest.mark.parametrize("args, words", [
    (["--exemplar", "10,20,60"], "expected X0,Y0,X1,Y1[,LABEL]"),
    (["--exemplar", "10,20,60,80,2"], "labels are 1"),
    (["--exemplar", "60,20,10,80"], "inverted"),
    (["--exemplar", "10,20,60,80", "--point", "5,5"], "--exemplar cannot be combined"),
    (["--exemplar", "10,20,60,80", "--text", "a", "--text", "b"], "at most one --text"),
    (["--exemplar", "10,20,500,80"], "exemplar box"),
])
def test_cli_segment_bad_exemplars(sam3, image, tmp_path, monkeypatch, capsys, args, words):
    pytest.importorskip("typer")
    from PIL import Image

    import samkit.registry
    from samkit.cli.main import main

    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: sam3)
    Image.fromarray(image).save(tmp_path / "img.png")
    code = main(["segment", str(tmp_path / "img.png"), "--model", "sam3", "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and words in lines[0] and "Fix:" in lines[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("img*"))


def test_cli_segment_exemplar_on_a_model_without_concepts(tmp_path, capsys):
    pytest.importorskip("typer")
    from PIL import Image

    from samkit.cli.main import main

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "img.png")
    code = main(["segment", str(tmp_path / "img.png"), "--model", "classic", "--exemplar", "5,5,20,20", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot find objects from exemplar boxes" in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------- lower input sizes
def test_load_model_at_a_lower_image_size(tmp_path, monkeypatch):
    """``load_model("sam3", image_size=...)`` builds the model at that size and loads the same
    file; the detections at 168 px differ from those at 252 px (parity at a lower size:
    tests/test_sam3_parity.py)."""
    import samkit.models.sam3 as sam3_module
    from samkit import load_model

    monkeypatch.setattr(sam3_module, "SAM3_CONFIG", O.REDUCED)
    path = tmp_path / "sam3_reduced.pt"
    torch.save(O.synth_official(O.REDUCED), path)
    small = load_model("sam3", checkpoint=path, image_size=168)
    full = load_model("sam3", checkpoint=path)
    assert (small.image_size, full.image_size) == (168, 252)
    assert small.prompt_encoder.image_embedding_size == (12, 12)
    img = np.random.default_rng(3).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    a = ImagePredictor(small).set_image(img).predict(points=[[40, 50]], labels=[1])
    b = ImagePredictor(full).set_image(img).predict(points=[[40, 50]], labels=[1])
    assert a.masks.shape == b.masks.shape == (3, 100, 90) and not np.allclose(a.scores, b.scores)


@pytest.mark.parametrize("name, size, words", [
    ("sam3", 500, "multiple of 14"),
    ("sam3", 322, "from 336"),
    ("sam3", 1022, "to 1008"),
    ("sam3", 672.0, "multiple of 14"),
    ("sam_vit_b", 512, "fixed input size of 1024 px"),
    ("classic", 512, "fixed input size"),
])
def test_image_size_refused(name, size, words):
    from samkit import load_model

    with pytest.raises(InputError, match=words):
        load_model(name, checkpoint="never-read.pt", image_size=size)


def test_cli_image_size_refused_before_any_work(tmp_path, capsys, monkeypatch):
    pytest.importorskip("typer")
    import samkit.registry
    from samkit.cli.main import main

    from PIL import Image

    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    (tmp_path / "frames").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "frames" / f"{i:05d}.png")
    for argv, words in ((["segment", "missing.png", "--model", "sam_vit_b", "--point", "1,1"], "fixed input size"),
                        (["track", str(tmp_path / "frames"), "--model", "sam3", "--text", "bus"], "multiple of 14")):
        code = main([*argv, "--image-size", "710", "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Fix:" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_tracker_neck_runs_only_for_points_and_boxes(sam3, image):
    """``encode`` runs the trunk and the detector neck; text prompts never run the tracker neck;
    the first point / box computes it, equal to what the video path (``forward_image``) gives."""
    predictor = ImagePredictor(sam3).set_image(image)
    feats = predictor._require().features
    assert feats.embed is None and feats.high_res is None and feats.trunk is not None
    predictor.predict(text="bus")
    assert feats.embed is None
    predictor.predict(points=[[40, 50]], labels=[1])
    assert feats.trunk is None
    x, _ = sam3.preprocess(image)
    with torch.inference_mode():
        ref = sam3.forward_image(x)
    torch.testing.assert_close(feats.embed, ref["vision_features"] + sam3.no_mem_embed.reshape(1, -1, 1, 1),
                               rtol=0, atol=0)
    for ours, theirs in zip(feats.high_res, ref["backbone_fpn"][:2]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
