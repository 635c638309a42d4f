"""samkit.masks: validation, selection, geometry, and round trips through every export format."""
from __future__ import annotations

import dataclasses
import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from samkit.errors import InputError, MissingExtraError
from samkit.masks import Masks, mask_color, mask_to_polygons, polygons_to_mask, rle_decode, rle_encode

mask_utils = pytest.importorskip("pycocotools.mask")
cv2 = pytest.importorskip("cv2")


# --------------------------------------------------------------------------- fixtures


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _noise(seed: int, k: int = 3, h: int | None = None, w: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = h or int(rng.integers(1, 40))
    w = w or int(rng.integers(1, 40))
    return rng.random((k, h, w)) < rng.uniform(0.2, 0.8)


def _blob(seed: int, h: int = 60, w: int = 80) -> np.ndarray:
    """A smooth random shape: thresholded, upsampled low-frequency noise (may have holes/parts)."""
    rng = np.random.default_rng(seed)
    low = rng.random((6, 8)).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC) > 0.55


def _shapes(h: int = 90, w: int = 120) -> dict:
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - 45, xx - 60)
    rect = np.zeros((h, w), bool)
    rect[10:50, 20:90] = True
    tri = (yy > 10) & (yy < 80) & (np.abs(xx - 60) < (yy - 10) * 0.6)
    return {
        "disc": r < 30,
        "rect": rect,
        "ellipse": ((yy - 45) / 25.0) ** 2 + ((xx - 60) / 50.0) ** 2 < 1,
        "triangle": tri,
        "annulus_island": ((r < 40) & (r >= 18)) | (r < 6),
    }


SHAPES = _shapes()


def _masks(k: int = 3, h: int = 20, w: int = 30, seed: int = 0, **fields) -> Masks:
    m = _noise(seed, k, h, w)
    scores = np.random.default_rng(seed).random(k).astype(np.float32)
    return Masks(m, scores, **fields)


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"masks": np.zeros((4, 5), bool)}, "K x H x W"),
        ({"masks": np.zeros((1, 4, 5), np.float32)}, "threshold"),
        ({"masks": np.zeros((1, 0, 5), bool)}, "zero image size"),
        ({"masks": np.zeros((2, 4, 5), bool), "scores": np.zeros(3)}, r"scores.*\(2,\)"),
        ({"masks": np.zeros((2, 4, 5), bool), "scores": np.array(["a", "b"])}, "numbers"),
        ({"masks": np.zeros((2, 4, 5), bool), "ids": np.array([1.0, 2.0])}, "integers"),
        ({"masks": np.zeros((2, 4, 5), bool), "labels": ["a"]}, "2 strings"),
        ({"masks": np.zeros((2, 4, 5), bool), "labels": "ab"}, "2 strings"),
        ({"masks": np.zeros((2, 4, 5), bool), "labels": ["a", 3]}, "strings"),
        ({"masks": np.zeros((2, 4, 5), bool), "low_res_logits": np.zeros((3, 256, 256))}, "low_res_logits"),
        ({"masks": np.zeros((2, 4, 5), bool), "stability": np.zeros((2, 1))}, "stability"),
        ({"masks": np.zeros((2, 4, 5), bool), "labels": ["a", "b"], "label_scores": [0.5]}, r"label_scores.*\(2,\)"),
        ({"masks": np.zeros((2, 4, 5), bool), "labels": ["a", "b"], "label_scores": ["x", "y"]}, "numbers"),
        ({"masks": np.zeros((2, 4, 5), bool), "label_scores": [0.5, 0.6]}, "without labels"),
    ],
)
def test_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        Masks(**kwargs)


def test_coercion_and_defaults():
    m = Masks(np.array([[[0, 2], [1, 0]]], np.uint8), ids=np.array([7], np.int32),
              low_res_logits=np.zeros((1, 256, 256), np.float64), stability=[0.5])
    assert m.masks.dtype == bool and m.masks.tolist() == [[[False, True], [True, False]]]
    assert m.scores.dtype == np.float32 and m.scores.tolist() == [1.0]
    assert m.ids.dtype == np.int64 and m.low_res_logits.dtype == np.float32 and m.stability.dtype == np.float32
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.scores = np.zeros(1)  # type: ignore[misc]
    assert "K=1" in repr(m)


# --------------------------------------------------------------------------- selection


def test_getitem_variants():
    m = _masks(5, ids=np.arange(10, 15), labels=list("abcde"), stability=np.linspace(0, 1, 5),
               low_res_logits=np.random.default_rng(0).random((5, 256, 256)))
    one = m[1]
    assert len(one) == 1 and one.labels == ["b"] and one.ids.tolist() == [11]
    np.testing.assert_array_equal(one.masks[0], m.masks[1])
    np.testing.assert_array_equal(m[-1].low_res_logits[0], m.low_res_logits[4])
    assert m[1:4].ids.tolist() == [11, 12, 13]
    assert m[::-2].labels == ["e", "c", "a"]
    sel = np.array([True, False, True, False, False])
    assert m[sel].labels == ["a", "c"] and m[np.array([4, 0])].scores.tolist() == [m.scores[4], m.scores[0]]
    assert len(m[[]]) == 0 and m[[]].masks.shape == (0, 20, 30)
    assert [x.labels[0] for x in m] == list("abcde")
    with pytest.raises(IndexError):
        m[5]
    with pytest.raises(IndexError):
        m[np.array([True, False])]
    with pytest.raises(InputError):
        m["a"]


def test_best_sorted_empty_concatenate():
    m = Masks(np.stack([np.eye(4, dtype=bool), np.ones((4, 4), bool), np.zeros((4, 4), bool)]),
              scores=[0.2, 0.9, 0.5])
    assert m.best().scores.tolist() == [pytest.approx(0.9)] and m.best().areas.tolist() == [16]
    assert m.sorted().scores.tolist() == pytest.approx([0.9, 0.5, 0.2])
    assert m.sorted("area").areas.tolist() == [16, 4, 0]
    assert m.sorted("area", descending=False).areas.tolist() == [0, 4, 16]
    with pytest.raises(InputError, match="score, area"):
        m.sorted("stability")
    e = Masks.empty(4, 6)
    assert len(e) == 0 and e.masks.shape == (0, 4, 6) and e.boxes.shape == (0, 4) and len(e.best()) == 0
    assert e.to_coco_rle() == [] and e.to_json()["count"] == 0
    both = Masks.concatenate([m, Masks.empty(4, 4), m[0]])
    assert len(both) == 4 and both.scores.tolist() == pytest.approx([0.2, 0.9, 0.5, 0.2])
    with pytest.raises(InputError):
        Masks.concatenate([m, Masks.empty(5, 5)])


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("seed", range(6))
def test_areas_and_boxes_match_pycocotools(seed):
    m = Masks(_noise(seed, 4) & (np.random.default_rng(seed).random((4, 1, 1)) < 0.8))
    np.testing.assert_array_equal(m.areas, m.masks.reshape(len(m), -1).sum(1))
    xywh = mask_utils.toBbox(m.to_coco_rle())
    expected = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    np.testing.assert_array_equal(m.boxes, expected)  # empty masks: [0, 0, 0, 0] in both


def test_box_convention_exclusive_end():
    a = np.zeros((1, 10, 12), bool)
    a[0, 2:5, 3:9] = True  # rows 2..4, cols 3..8
    assert Masks(a).boxes.tolist() == [[3, 2, 9, 5]]


# --------------------------------------------------------------------------- RLE


@pytest.mark.parametrize("seed", range(8))
def test_rle_numpy_equals_pycocotools(seed):
    masks = _noise(seed, 3)
    masks[0] = True  # all ones starts with a zero-length run
    masks[1] = False
    m = Masks(masks)
    plain, packed = m.to_coco_rle(compressed=False), m.to_coco_rle()
    json.dumps(plain), json.dumps(packed)
    for k in range(len(m)):
        h, w = plain[k]["size"]
        assert mask_utils.frPyObjects(plain[k], h, w)["counts"].decode() == packed[k]["counts"]
        np.testing.assert_array_equal(rle_decode(plain[k]), masks[k])
        np.testing.assert_array_equal(rle_decode(packed[k]), masks[k])
        np.testing.assert_array_equal(mask_utils.decode({"size": [h, w], "counts": packed[k]["counts"]}), masks[k])
    for rles in (plain, packed):
        back = Masks.from_coco_rle(rles, scores=m.scores)
        np.testing.assert_array_equal(back.masks, masks)
        np.testing.assert_array_equal(back.scores, m.scores)


def test_rle_single_pixel_and_errors():
    assert rle_encode(np.ones((1, 1), bool)) == {"size": [1, 1], "counts": [0, 1]}
    assert rle_encode(np.array([[0, 1], [1, 1]], bool))["counts"] == [1, 3]  # column-major
    with pytest.raises(InputError, match="sum to"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(InputError, match="COCO RLE"):
        rle_decode({"counts": [4]})
    with pytest.raises(InputError, match="empty"):
        Masks.from_coco_rle([])
    with pytest.raises(InputError, match="different sizes"):
        Masks.from_coco_rle([rle_encode(np.ones((2, 2))), rle_encode(np.ones((3, 2)))])


def test_rle_without_pycocotools(monkeypatch):
    m = _masks()
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(MissingExtraError, match=r"samkit\[coco\].*"):
        m.to_coco_rle()
    plain = m.to_coco_rle(compressed=False)
    np.testing.assert_array_equal(Masks.from_coco_rle(plain).masks, m.masks)
    summary = m.to_json()
    assert isinstance(summary["masks"][0]["rle"]["counts"], list)
    json.dumps(summary)


# --------------------------------------------------------------------------- polygons


@pytest.mark.parametrize("seed", range(10))
def test_polygons_exact_at_zero_tolerance(seed):
    masks = _noise(seed, 2) if seed % 2 else _blob(seed)[None]
    m = Masks(masks)
    back = Masks.from_polygons(m.to_polygons(tolerance=0), m.height, m.width)
    np.testing.assert_array_equal(back.masks, masks)


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("tolerance", [0.5, 1.0, 2.0])
def test_polygons_with_tolerance(name, tolerance):
    """Tolerance contract: smooth shapes keep IoU >= 0.95 up to 2 px of simplification."""
    mask = SHAPES[name]
    rings = mask_to_polygons(mask, tolerance)
    assert all(r.ndim == 2 and r.shape[1] == 2 and r.dtype == np.float64 for r in rings)
    assert _iou(polygons_to_mask(rings, *mask.shape), mask) >= 0.95


def test_holes_and_winding():
    mask = SHAPES["annulus_island"]
    with_holes = mask_to_polygons(mask, 0)
    assert len(with_holes) == 3  # annulus outer, its hole, the island inside the hole
    signs = sorted(np.sign(0.5 * np.sum(r[:, 0] * np.roll(r[:, 1], -1) - np.roll(r[:, 0], -1) * r[:, 1]))
                   for r in with_holes)
    assert signs == [-1, 1, 1]
    filled = polygons_to_mask(mask_to_polygons(mask, 0, holes=False), *mask.shape)
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    np.testing.assert_array_equal(filled, np.hypot(yy - 45, xx - 60) < 40)
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []


def test_polygons_without_opencv(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingExtraError, match=r"samkit\[cv\]"):
        _masks().to_polygons()


# --------------------------------------------------------------------------- YOLO


def test_yolo_format_and_round_trip(tmp_path):
    m = Masks(np.stack([SHAPES["disc"], SHAPES["rect"], SHAPES["triangle"]]), labels=["a", "b", "a"])
    path = tmp_path / "labels" / "img.txt"
    text = m.to_yolo(path, names=["b", "a"])
    assert path.read_text() == text and text.endswith("\n")
    lines = text.splitlines()
    assert [ln.split()[0] for ln in lines] == ["1", "0", "1"]
    for ln in lines:
        vals = np.array(ln.split()[1:], float)
        assert len(vals) >= 6 and len(vals) % 2 == 0 and (vals >= 0).all() and (vals <= 1).all()
    back = Masks.from_yolo(path, m.height, m.width, names=["b", "a"])
    assert back.labels == ["a", "b", "a"]
    assert all(_iou(back.masks[k], m.masks[k]) >= 0.95 for k in range(3))
    exact = Masks.from_yolo(m.to_yolo(tolerance=0), m.height, m.width)
    np.testing.assert_array_equal(exact.masks, m.masks)
    assert exact.labels == ["0", "0", "0"]


def test_yolo_parts_classes_and_errors():
    two = np.zeros((1, 40, 40), bool)
    two[0, 2:10, 2:10] = two[0, 20:30, 20:35] = True
    assert len(Masks(two).to_yolo(class_ids=3).splitlines()) == 2  # one line per connected part
    assert Masks(two).to_yolo(class_ids=[5]).startswith("5 ")
    with pytest.raises(InputError, match="not in names"):
        Masks(two, labels=["cat"]).to_yolo(names=["dog"])
    with pytest.raises(InputError, match="even number"):
        Masks.from_yolo("0 0.1 0.2 0.3\n", 10, 10)


# --------------------------------------------------------------------------- LabelMe


def test_labelme_format_and_round_trip(tmp_path):
    m = Masks(np.stack([SHAPES["ellipse"], SHAPES["rect"]]), ids=[4, 9], labels=["car", "road"])
    out = tmp_path / "img.json"
    data = m.to_labelme("img.jpg", image_size=(m.height, m.width), path=out)
    assert json.loads(out.read_text()) == data
    assert set(data) == {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}
    assert data["imagePath"] == "img.jpg" and data["imageData"] is None
    assert (data["imageHeight"], data["imageWidth"]) == (90, 120)
    assert [s["label"] for s in data["shapes"]] == ["car", "road"]
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 3 for s in data["shapes"])
    assert [s["group_id"] for s in data["shapes"]] == [4, 9]
    back = Masks.from_labelme(out)
    assert back.labels == ["car", "road"] and back.ids.tolist() == [4, 9]
    assert all(_iou(back.masks[k], m.masks[k]) >= 0.95 for k in range(2))
    exact = Masks.from_labelme(m.to_labelme("img.jpg", tolerance=0))
    np.testing.assert_array_equal(exact.masks, m.masks)
    with pytest.raises(InputError, match="does not match"):
        m.to_labelme("img.jpg", image_size=(120, 90))


def test_labelme_multi_part_and_rectangle():
    two = np.zeros((1, 40, 40), bool)
    two[0, 2:10, 2:10] = two[0, 20:30, 20:35] = True
    data = Masks(two).to_labelme("x.png", tolerance=0)
    assert len(data["shapes"]) == 2 and len({s["group_id"] for s in data["shapes"]}) == 1
    np.testing.assert_array_equal(Masks.from_labelme(data).masks, two)
    rect = {"imageHeight": 10, "imageWidth": 10, "shapes": [
        {"label": "r", "points": [[1, 2], [4, 6]], "shape_type": "rectangle", "group_id": None}]}
    expected = np.zeros((10, 10), bool)
    expected[2:7, 1:5] = True
    np.testing.assert_array_equal(Masks.from_labelme(rect).masks[0], expected)
    rect["shapes"][0]["shape_type"] = "circle"
    with pytest.raises(InputError, match="circle"):
        Masks.from_labelme(rect)


# --------------------------------------------------------------------------- PNG, overlay


def test_save_png_exact(tmp_path):
    a = np.zeros((3, 20, 30), bool)
    a[0, 2:18, 2:28] = True  # big
    a[1, 5:10, 5:10] = True  # small, inside the big one
    a[2, 15:19, 25:29] = True  # overlaps the big one's corner
    m = Masks(a)
    paths = m.save_png(tmp_path / "out", stem="cat")
    assert [p.name for p in paths] == ["cat_000.png", "cat_001.png", "cat_002.png", "cat_index.png"]
    for k in range(3):
        im = Image.open(paths[k])
        assert im.mode == "L"
        arr = np.asarray(im)
        assert set(np.unique(arr)) <= {0, 255}
        np.testing.assert_array_equal(arr > 127, a[k])
    index = Image.open(paths[3])
    assert index.mode == "P"
    idx = np.asarray(index)
    assert idx[7, 7] == 2 and idx[3, 3] == 1 and idx[16, 26] == 3 and idx[0, 0] == 0 and idx[18, 27] == 3
    palette = np.array(index.getpalette()[:12]).reshape(4, 3)
    np.testing.assert_array_equal(palette[1:], np.stack([mask_color(k) for k in range(3)]))
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_save_png_many_masks_16bit(tmp_path):
    k = 300
    a = np.zeros((k, 10, 30), bool)
    for i in range(k):
        a[i].flat[i] = True
    index = np.asarray(Image.open(Masks(a).save_png(tmp_path)[-1]))
    assert index.dtype.itemsize == 2 or index.max() > 255
    assert index.reshape(-1)[:k].tolist() == list(range(1, k + 1))


def test_overlay():
    img = np.full((20, 30, 3), 100, np.uint8)
    a = np.zeros((2, 20, 30), bool)
    a[0, 2:12, 2:12] = True
    a[1, 5:8, 20:25] = True
    m = Masks(a)
    out = m.overlay(img, alpha=0.25)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~a.any(0)], img[~a.any(0)])  # untouched outside masks
    c0 = mask_color(0).astype(float)
    np.testing.assert_array_equal(out[6, 6], np.floor(100 * 0.75 + c0 * 0.25 + 0.5).astype(np.uint8))
    np.testing.assert_array_equal(out[2, 5], mask_color(0))  # outline
    np.testing.assert_array_equal(out[5, 22], mask_color(1))  # top row of a 3-row mask: outline
    c1 = mask_color(1).astype(float)
    np.testing.assert_array_equal(out[6, 22], np.floor(100 * 0.75 + c1 * 0.25 + 0.5).astype(np.uint8))
    no_line = m.overlay(img, alpha=0.25, outline=False)
    assert not np.array_equal(no_line[2, 5], mask_color(0))
    with pytest.raises(InputError, match="predicted on"):
        m.overlay(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="alpha"):
        m.overlay(img, alpha=1.5)


def test_overlay_smaller_mask_on_top():
    img = np.zeros((30, 30, 3), np.uint8)
    a = np.zeros((2, 30, 30), bool)
    a[0, 10:20, 10:20] = True  # small, listed first
    a[1] = True  # whole image
    out = Masks(a).overlay(img, alpha=1.0, outline=False)
    np.testing.assert_array_equal(out[15, 15], mask_color(0))
    np.testing.assert_array_equal(out[2, 2], mask_color(1))
    lined = Masks(a).overlay(img, alpha=0.0)
    np.testing.assert_array_equal(lined[10, 15], mask_color(0))  # border of the small region
    np.testing.assert_array_equal(lined[9, 15], mask_color(1))  # big region next to it
    np.testing.assert_array_equal(lined[5, 5], [0, 0, 0])  # interior, alpha 0: image unchanged


# --------------------------------------------------------------------------- JSON, supervision


def test_to_json():
    m = _masks(3, ids=[1, 2, 3], labels=["x", "y", "z"], stability=[0.1, 0.2, 0.3])
    d = json.loads(json.dumps(m.to_json()))
    assert (d["height"], d["width"], d["count"]) == (20, 30, 3)
    for k, item in enumerate(d["masks"]):
        assert item["index"] == k and item["id"] == k + 1 and item["label"] == "xyz"[k]
        assert item["area"] == int(m.masks[k].sum()) and item["box"] == m.boxes[k].tolist()
        assert item["score"] == pytest.approx(float(m.scores[k])) and item["stability"] == pytest.approx(0.1 * (k + 1))
        np.testing.assert_array_equal(rle_decode(item["rle"]), m.masks[k])
    assert isinstance(m.to_json(rle="uncompressed")["masks"][0]["rle"]["counts"], list)
    with pytest.raises(InputError):
        m.to_json(rle="zip")


def test_to_supervision(monkeypatch):
    m = _masks(2, ids=[5, 6], labels=["a", "b"])
    monkeypatch.setitem(sys.modules, "supervision", None)
    with pytest.raises(MissingExtraError, match="supervision"):
        m.to_supervision()
    seen = {}
    fake = types.ModuleType("supervision")
    fake.Detections = lambda **kw: seen.update(kw) or "detections"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "supervision", fake)
    assert m.to_supervision() == "detections"
    np.testing.assert_array_equal(seen["xyxy"], m.boxes)
    np.testing.assert_array_equal(seen["mask"], m.masks)
    np.testing.assert_array_equal(seen["confidence"], m.scores)
    assert seen["tracker_id"].tolist() == [5, 6] and seen["data"]["class_name"].tolist() == ["a", "b"]


# --------------------------------------------------------------------------- label scores (open vocabulary)


def test_label_scores_are_kept_through_selection_joins_sorting_and_json():
    m = _masks(4, labels=["cat", "dog", "cat", "cow"], label_scores=np.array([0.2, 0.9, 0.5, 0.7], np.float64))
    assert m.label_scores.dtype == np.float32 and "label_scores" in repr(m)
    assert m[1].label_scores.tolist() == [pytest.approx(0.9)] and m[[3, 0]].labels == ["cow", "cat"]
    assert m.sorted("label_score").labels == ["dog", "cow", "cat", "cat"]
    both = Masks.concatenate([m, m[0]])
    assert both.label_scores.tolist() == pytest.approx([0.2, 0.9, 0.5, 0.7, 0.2])
    no_labels = Masks.concatenate([m, _masks(1)])  # labels lost on one side: label scores go with them
    assert no_labels.labels is None and no_labels.label_scores is None
    items = m.to_json(rle="uncompressed")["masks"]
    assert [(i["label"], round(i["label_score"], 2)) for i in items] == [("cat", 0.2), ("dog", 0.9), ("cat", 0.5),
                                                                        ("cow", 0.7)]
    assert "label_score" not in _masks(1, labels=["x"]).to_json(rle="uncompressed")["masks"][0]
    with pytest.raises(InputError, match="label_score"):
        _masks(2).sorted("label_score")

