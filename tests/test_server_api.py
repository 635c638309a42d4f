"""``samkit serve`` image API with the classic engine and a random-weight tiny SAM (+ a synthetic
CLIP for text prompts): decode (points, box, multimask, refinement), everything, text, the
embedding cache, masks as RLE + polygons, annotations saved atomically and kept across a
restart, exports (COCO / LabelMe / YOLO / PNG), the queue's 429 and 504, JSON errors."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _server import client, data_folder, make_app  # noqa: E402

from samkit.server import rle as rle_codec  # noqa: E402


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    data = data_folder(tmp_path_factory.mktemp("serve_classic"))
    app, state = make_app(data)
    with client(app) as c:
        yield c, state, data


@pytest.fixture(scope="module")
def neural(tmp_path_factory):
    from _synthetic_clip import SyntheticClip, two_squares
    from PIL import Image
    from tiny import tiny_sam

    from samkit.predict.image import ImagePredictor

    data = data_folder(tmp_path_factory.mktemp("serve_neural"))
    Image.fromarray(two_squares()[0]).save(data / "squares.png")
    app, state = make_app(data, ImagePredictor(tiny_sam(seed=0, image_size=128), clip=SyntheticClip()), "tiny_sam")
    with client(app) as c:
        yield c, state, data


def _mask(item, hw):
    m = rle_codec.decode(item["rle"], hw)
    assert m.shape == hw and item["area"] == int(m.sum())
    return m


def test_health_and_listing(classic):
    c, _, _ = classic
    h = c.get("/api/health").json()
    assert h["status"] == "ok" and h["model"] == "classic" and h["browser_decoder"] is False
    listing = c.get("/api/files").json()
    assert [i["path"] for i in listing["images"]] == ["truck.png"]
    assert {d["path"]: d["frames"] for d in listing["dirs"]} == {"clip": 4, "sub": 1}
    assert listing["examples"][0]["path"] == "@example/truck.png"
    assert c.get("/api/files", params={"path": "sub"}).json()["images"][0]["path"] == "sub/square.png"


def test_classic_decode_box_and_points(classic):
    c, _, _ = classic
    r = c.post("/api/image/decode", json={"path": "sub/square.png", "box": [18, 8, 46, 32], "multimask": False})
    assert r.status_code == 200, r.text
    (item,) = r.json()["masks"]
    m = _mask(item, (48, 64))
    assert m[20, 32] and not m[2, 2]
    assert item["polygons"] and len(item["polygons"][0]) >= 6
    r = c.post("/api/image/decode", json={"path": "@example/truck.png", "points": [[200, 150]], "labels": [1],
                                          "polygons": False})
    assert r.status_code == 200 and len(r.json()["masks"]) == 3
    assert all(m["polygons"] == [] and m["rle"]["size"] == [267, 400] for m in r.json()["masks"])


def test_neural_decode_multimask_refine_and_cache(neural):
    c, state, data = neural
    first = c.post("/api/image/encode", json={"path": "truck.png"}).json()
    assert first["cached"] is False and (first["width"], first["height"]) == (400, 267)
    assert c.post("/api/image/encode", json={"path": "truck.png"}).json()["cached"] is True
    (data / "copy.png").write_bytes((data / "truck.png").read_bytes())  # same bytes: same cache key
    assert c.post("/api/image/encode", json={"path": "copy.png"}).json()["cached"] is True
    r = c.post("/api/image/decode", json={"path": "truck.png", "points": [[200, 150], [50, 40]], "labels": [1, 0]})
    masks = r.json()["masks"]
    assert len(masks) == 3 and all(m["refine"] for m in masks)
    direct = state.engine.predictor.predict(points=[[200, 150], [50, 40]], labels=[1, 0])
    for k, item in enumerate(masks):
        assert np.array_equal(_mask(item, (267, 400)), direct.masks[k])
        assert item["score"] == pytest.approx(float(direct.scores[k]), abs=1e-6)
    r = c.post("/api/image/decode", json={"path": "truck.png", "points": [[200, 150]], "multimask": False,
                                          "refine": masks[0]["refine"]})
    assert r.status_code == 200 and len(r.json()["masks"]) == 1
    r = c.post("/api/image/decode", json={"path": "truck.png", "points": [[1, 1]], "refine": "nope"})
    assert r.status_code == 400 and "refine" in r.json()["error"]


def test_everything_and_text(neural, classic):
    c, state, data = neural
    r = c.post("/api/image/everything", json={"path": "truck.png", "points_per_side": 2, "pred_iou_thresh": 0.0,
                                              "stability_thresh": 0.0})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["masks"], list)
    r = c.post("/api/image/text", json={"path": "squares.png", "text": "red"})
    assert r.status_code == 200, r.text
    found = r.json()["masks"]
    assert found and found[0]["label"] == "red"
    direct = state.engine.predictor.set_image(str(data / "squares.png")).predict(text="red")
    assert len(found) == len(direct)
    for k, item in enumerate(found):
        assert np.array_equal(_mask(item, (96, 128)), direct.masks[k])
        assert item["label_score"] == pytest.approx(float(direct.label_scores[k]), abs=1e-6)
    r = classic[0].post("/api/image/text", json={"path": "truck.png", "text": "red"})
    assert r.status_code == 400 and "Fix:" in r.json()["error"]
    assert classic[0].post("/api/image/everything", json={"path": "truck.png"}).status_code == 400


def test_upload_then_decode(classic):
    c, _, data = classic
    body = (data / "sub" / "square.png").read_bytes()
    r = c.put("/api/upload", params={"name": "my photo.png"}, content=body)
    assert r.status_code == 200, r.text
    path = r.json()["path"]
    assert path.startswith("uploads/") and (data / path).read_bytes() == body
    assert c.post("/api/image/decode", json={"path": path, "box": [18, 8, 46, 32]}).status_code == 200
    assert c.put("/api/upload", params={"name": "x.png"}, content=b"not an image").status_code == 400
    assert c.put("/api/upload", params={"name": "x.exe"}, content=body).status_code == 400


def test_annotations_atomic_revisions_and_restart(classic, tmp_path):
    c, _, data = classic
    r = c.post("/api/image/decode", json={"path": "sub/square.png", "box": [18, 8, 46, 32], "multimask": False})
    rle = r.json()["masks"][0]["rle"]
    doc = c.get("/api/annotations", params={"path": "sub/square.png"}).json()
    assert doc["revision"] == 0 and doc["objects"] == []
    saved = c.put("/api/annotations", json={"path": "sub/square.png", "revision": 0,
                                            "objects": [{"id": 1, "label": "box", "rle": rle, "color": "#f00"}]})
    assert saved.status_code == 200 and saved.json()["revision"] == 1
    stale = c.put("/api/annotations", json={"path": "sub/square.png", "revision": 0, "objects": []})
    assert stale.status_code == 409  # a stale page cannot overwrite newer work
    added = c.post("/api/annotations/object", json={"path": "sub/square.png", "object": {"label": "b2", "rle": rle}})
    assert added.json()["object"]["id"] == 2 and added.json()["revision"] == 2
    bad = c.put("/api/annotations", json={"path": "sub/square.png", "revision": 2,
                                          "objects": [{"label": "x", "rle": {"size": [48, 64], "counts": [5]}}]})
    assert bad.status_code == 400 and "pixels" in bad.json()["error"]
    stored = data / ".samkit" / "annotations" / "sub" / "square.png.json"
    assert json.loads(stored.read_text())["revision"] == 2
    assert not [p for p in stored.parent.iterdir() if p.name != "square.png.json"]  # no temporary left
    app2, _ = make_app(data)  # a restarted server reads the same document
    with client(app2) as c2:
        doc = c2.get("/api/annotations", params={"path": "sub/square.png"}).json()
    assert [o["label"] for o in doc["objects"]] == ["box", "b2"] and doc["objects"][0]["color"] == "#f00"


def test_exports(classic):
    c, _, data = classic
    r = c.post("/api/image/decode", json={"path": "truck.png", "box": [20, 60, 380, 200], "multimask": False})
    item = r.json()["masks"][0]
    c.put("/api/annotations", json={"path": "truck.png", "revision": 0,
                                    "objects": [{"id": 7, "label": "truck", "rle": item["rle"]}]})
    out = c.post("/api/export", json={"path": "truck.png", "format": "coco"}).json()
    coco = json.loads((data / out["files"][0]).read_text())
    assert coco["categories"][0]["name"] == "truck" and coco["images"][0]["file_name"] == "truck.png"
    ann = coco["annotations"][0]
    assert ann["object_id"] == 7 and np.array_equal(rle_codec.decode(ann["segmentation"]),
                                                    rle_codec.decode(item["rle"]))
    for fmt, suffix in (("labelme", ".json"), ("yolo", ".txt"), ("png", ".png")):
        files = c.post("/api/export", json={"path": "truck.png", "format": fmt}).json()["files"]
        assert any(f.endswith(suffix) for f in files) and all((data / f).is_file() for f in files)
    folder = c.post("/api/export", json={"folder": "", "format": "coco"}).json()
    assert folder["images"] >= 1
    r = c.post("/api/export", json={"path": "sub/square.png", "format": "tiff"})
    assert r.status_code == 400 and "coco" in r.json()["error"]


def test_rle_matches_pycocotools_and_refuses_bad_counts():
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    ours = rle_codec.encode(m)
    theirs = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    assert ours["counts"] == theirs["counts"].decode() and ours["size"] == list(theirs["size"])
    assert np.array_equal(rle_codec.decode(ours), m)
    for bad in ({"size": [4, 4], "counts": [3, 3]}, {"size": [4, 4], "counts": "~~~"}, {"counts": "0"}):
        with pytest.raises(Exception, match="Fix"):
            rle_codec.decode(bad)
    brush = rle_codec.brush_encode(m)
    assert np.array_equal(rle_codec.brush_decode(brush, 37, 53), m)


def test_errors_are_json_never_a_traceback(classic):
    c, _, _ = classic
    cases = [c.post("/api/image/decode", content=b"{not json", headers={"content-type": "application/json"}),
             c.post("/api/image/decode", json=[1, 2]),
             c.post("/api/image/decode", json={"path": "truck.png", "points": "x"}),
             c.post("/api/image/decode", json={"path": "truck.png", "points": [[1e9, 5]]}),
             c.post("/api/image/decode", json={"path": "nothing.png", "box": [0, 0, 1, 1]}),
             c.post("/api/image/decode", json={"path": "truck.png", "multimask": "yes", "box": [0, 0, 5, 5]}),
             c.get("/api/no/such/route"), c.delete("/api/health")]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error", "status"} and "Traceback" not in body["error"]


def test_queue_bound_429_and_timeout_504(classic):
    from samkit.server.errors import HTTPProblem
    from samkit.server.queue import InferenceQueue

    q = InferenceQueue(bound=1, timeout_s=0.3)
    gate = threading.Event()

    async def scenario():
        first = asyncio.ensure_future(q.run(gate.wait, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(HTTPProblem) as busy:
            await q.run(time.sleep, 0)
        gate.set()
        await first
        with pytest.raises(HTTPProblem) as late:
            await q.run(time.sleep, 1.0)
        return busy.value, late.value

    busy, late = asyncio.run(scenario())
    assert busy.status == 429 and busy.headers["Retry-After"] == "1"
    assert late.status == 504 and q.snapshot()["rejected"] == 1
    q.shutdown()
    c, state, _ = classic  # the HTTP form: a full queue answers 429 with Retry-After
    state.queue.pending = state.queue.bound
    try:
        r = c.post("/api/image/decode", json={"path": "truck.png", "box": [20, 60, 380, 200]})
    finally:
        state.queue.pending = 0
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]


def test_export_folder_serves_the_decoder_graphs(tiny_export, tmp_path):
    """An export folder: the page is offered the fast decoder pair beside the reference decoder,
    each graph served as its file's bytes; an unknown graph is a clear 400."""
    from samkit.runtime import OnnxImagePredictor
    from samkit.server import create_app
    from samkit.server.config import ServerConfig

    _, folder = tiny_export("sam")
    predictor = OnnxImagePredictor(folder)
    app = create_app(ServerConfig(data=data_folder(tmp_path)), predictor, "sam", export_folder=predictor.export)
    info = app.state.engine.browser_decoder()
    assert info["layout"] == "sam" and info["input_size"] == 128
    assert info["fast"]["image_inputs"] == ["image_embeddings"]
    assert info["fast"]["inputs"][:4] == ["image_keys", "first_k", "first_v", "first_q"]
    assert info["fast"]["outputs"] == ["low_res_masks", "iou_predictions"]
    doc = json.loads((folder / "samkit-export.json").read_text())
    with client(app) as c:
        for graph in ("prompt_decoder", "decoder_image", "prompt_decoder_fast"):
            r = c.get("/api/image/decoder", params={} if graph == "prompt_decoder" else {"graph": graph})
            assert r.status_code == 200 and r.content == (folder / doc["graphs"][graph]["file"]).read_bytes()
        r = c.get("/api/image/decoder", params={"graph": "image_encoder"})
        assert r.status_code == 400 and "Fix:" in r.json()["error"] and "prompt_decoder_fast" in r.json()["error"]
    from samkit.cli.serve_cmd import build_server

    config = ServerConfig(data=tmp_path / "data", fast_decoder=False)  # --no-fast-decoder
    app = build_server(config, str(folder), None, "classic", None)
    assert app.state.engine.predictor.fast is False and app.state.engine.browser_decoder()["fast"] is None
    with client(app) as c:
        assert c.get("/api/image/decoder", params={"graph": "prompt_decoder_fast"}).status_code == 400
