"""Open-Vocabulary SAM vs the official code (goldens of tests/ovsam/, made by make_goldens.py).

Weights are synthesized from the official files' key layouts (``tests/ovsam/manifests``), written
as the four files upstream reads and loaded through ``load_model`` (companion files, remaps,
strict load). ``tiny``: reduced widths, same code paths (default suite); ``full``: the released
sizes (slow). Tolerance: max-abs 1e-4 times each tensor's scale.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "ovsam"))

import ovsam_cases as cases  # noqa: E402

from ovsam_cases import load_ovsam  # noqa: E402

from samkit import ImagePredictor  # noqa: E402
from samkit.models.ovsam import preprocess_longest_side_bilinear  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "ovsam"
REL = 1e-4


def golden(cfg_name: str):
    from safetensors.torch import load_file

    return (load_file(str(GOLDEN / f"golden_{cfg_name}.safetensors")),
            json.loads((GOLDEN / f"golden_{cfg_name}.json").read_text()))


def close(actual, expected, what):
    actual, expected = actual.float(), expected.float()
    assert actual.shape == expected.shape, what
    scale = max(float(expected.abs().max()), 1.0)
    err = float((actual - expected).abs().max())
    assert err <= REL * scale, f"{what}: max-abs error {err:.3g} > {REL * scale:.3g}"


def check(model, cfg_name, feats=None):
    """Compare every stored tensor; ``feats``: the image's features if already encoded."""
    g, meta = golden(cfg_name)
    x, transform = cases.input_tensor()
    with torch.inference_mode():
        feats = model.encode(x) if feats is None else feats
        close(feats.embed[..., ::cases.EMBED_STEP, ::cases.EMBED_STEP], g["embed_s"], "SAM2CLIP embedding")
        for name, case in cases.CASES.items():
            boxes = torch.tensor(case["boxes"])
            pts = torch.tensor(case["points"])[:, None] if case["kind"] == "point" else None
            lab = torch.ones(pts.shape[:2], dtype=torch.long) if pts is not None else None
            out = model.decode(feats, pts, lab, boxes if pts is None else None, None, False)
            low = out.low_res
            close(low[..., ::cases.LOW_STEP, ::cases.LOW_STEP], g[f"{name}.lowres_s"], f"{name}: mask logits")
            query = model.head_logits(feats, low[:, 0])
            close(query, g[f"{name}.query"], f"{name}: CLIP2SAM class logits")
            close(model.clip_logits(feats, boxes), g[f"{name}.clip"], f"{name}: CLIP branch class logits")
            ens = model.label_logits(feats, low[:, 0], boxes)
            close(ens, g[f"{name}.ensemble"], f"{name}: ensembled logits")
            assert out.label_ids[:, 0].tolist() == g[f"{name}.labels"].tolist() == meta["cases"][name]["labels"] \
                or pts is not None  # points: samkit's CLIP branch pools the mask's box, upstream the given one
            assert ens[:, :-1].softmax(-1).argmax(-1).tolist() == g[f"{name}.labels"].tolist()
        masks = cases.head_masks()[:, 0]
        close(model.head_logits(feats, masks), g["head.query"], "head on given masks")
        close(model.label_logits(feats, masks, torch.tensor(cases.head_boxes())), g["head.ensemble"],
              "ensemble on given masks")
    return g, meta, transform


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An ImagePredictor on the tiny OVSAM with the golden image set (encoded once)."""
    return ImagePredictor(load_ovsam("tiny", tmp_path_factory.mktemp("ovsam"))).set_image(cases.image())


def test_tiny_matches_the_official_code(tiny):
    check(tiny.model, "tiny", tiny.features)


def test_tiny_masks_through_the_image_predictor(tiny):
    g, meta, transform = golden("tiny") + (cases.input_tensor()[1],)
    h, w = transform.original_size
    nh, nw = transform.input_size
    predictor = tiny
    for name, case in cases.CASES.items():
        n = meta["cases"][name]["n"]
        expected = np.unpackbits(g[f"{name}.masks_packed"].numpy())[:n * h * w].reshape(n, h, w).astype(bool)
        scale = np.array([nw / w, nh / h])
        if case["kind"] == "point":
            outs = predictor.predict_batch(points=np.array(case["points"])[:, None] / scale,
                                           labels=np.ones((n, 1), dtype=int))
        else:
            outs = predictor.predict_batch(boxes=np.array(case["boxes"]) / np.tile(scale, 2))
        names = predictor.model.label_names
        for i, out in enumerate(outs):
            assert out.masks.shape == (1, h, w)
            agree = (out.masks[0] == expected[i]).mean()
            assert agree > 0.9999, f"{name}[{i}]: {agree:.6f} of the pixels agree"
            # the official label of the mask, by name, with its probability
            assert out.labels == [names[int(g[f"{name}.labels"][i])]], (name, i, out.labels)
            assert out.label_scores.shape == (1,) and 0.0 < float(out.label_scores[0]) <= 1.0


def test_preprocessing_matches_cv2_within_one_grey_level():
    cv2 = pytest.importorskip("cv2")
    img = cases.image()
    x, t = preprocess_longest_side_bilinear(img, 1024, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), torch.device("cpu"))
    nh, nw = t.input_size
    ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    ours = x[0, :, :nh, :nw].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref.astype(np.float32)).max() <= 1.0
    assert (x[0, :, nh:, :] == 0).all() and (x[0, :, :, nw:] == 0).all()


@pytest.mark.slow
def test_full_size_matches_the_official_code(tmp_path):
    check(load_ovsam("full", tmp_path), "full")


def test_segment_command_writes_the_models_own_labels(tiny, tmp_path, monkeypatch):
    """`samkit segment --model ovsam_*` with a click: every output carries OVSAM's names (COCO
    categories from the model's vocabulary, YOLO classes.txt)."""
    from PIL import Image

    import samkit.registry
    from samkit.cli.main import main

    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: tiny.model)
    img = tmp_path / "scene.png"
    Image.fromarray(cases.image()).save(img)
    h, w = cases.image().shape[:2]
    out = tmp_path / "out"
    code = main(["segment", str(img), "--model", "ovsam_coco_rn50x16", "--point", f"{w // 2},{h // 2}",
                 "--out", str(out), "--format", "coco,yolo"])
    assert code == 0
    names = tiny.model.label_names
    doc = json.loads((out / "scene_coco.json").read_text())
    assert [c["name"] for c in doc["categories"]] == names
    (ann,) = doc["annotations"]
    assert 1 <= ann["category_id"] <= len(names) and 0 < ann["label_score"] <= 1
    assert (out / "classes.txt").read_text().splitlines() == names
