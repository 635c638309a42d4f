"""``samkit serve`` as a Label Studio ML backend (/health, /setup, /predict, /webhook per
label-studio-ml-backend's contract) and the video API (sessions, prompts, NDJSON propagation,
bounds: LRU cap, TTL, frame limit)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _server import client, data_folder, make_app  # noqa: E402

from samkit.server import rle as rle_codec  # noqa: E402

SCHEMA = """<View><Image name="image" value="$image" zoom="true"/>
<BrushLabels name="tag" toName="image"><Label value="car"/><Label value="road"/></BrushLabels>
<KeyPointLabels name="kp" toName="image" smart="true"><Label value="car"/></KeyPointLabels>
<RectangleLabels name="rect" toName="image" smart="true"><Label value="car"/></RectangleLabels></View>"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = data_folder(tmp_path_factory.mktemp("serve_ls"))
    app, state = make_app(data, max_sessions=2)
    with client(app) as c:
        yield c, state, data


def _context(kind, value, positive=True):
    return {"result": [{"type": kind, "value": value, "original_width": 64, "original_height": 48,
                        "is_positive": positive, "from_name": "kp", "to_name": "image"}]}


def test_health_setup_and_webhook(served):
    c, _, _ = served
    assert c.get("/health").json()["status"] == "UP"
    r = c.post("/setup", json={"project": "3.1700000000", "schema": SCHEMA, "hostname": "http://ls.local:8080",
                               "access_token": "abc", "model_version": ""})
    assert r.status_code == 200 and r.json()["model_version"] == "samkit-classic"
    assert c.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 200


def test_predict_brush_rle_from_a_keypoint_and_a_rectangle(served):
    c, state, data = served
    c.post("/setup", json={"project": "3", "schema": SCHEMA})
    task = {"id": 1, "data": {"image": "/data/local-files/?d=sub/square.png"}}
    box = {"x": 18 / 64 * 100, "y": 8 / 48 * 100, "width": 28 / 64 * 100, "height": 24 / 48 * 100,
           "rectanglelabels": ["car"]}
    r = c.post("/predict", json={"tasks": [task], "project": "3.1700000000",
                                 "params": {"context": _context("rectanglelabels", box)}})
    assert r.status_code == 200, r.text
    (pred,) = r.json()["results"]
    (item,) = pred["result"]
    assert item["type"] == "brushlabels" and item["from_name"] == "tag" and item["to_name"] == "image"
    assert item["value"]["brushlabels"] == ["car"] and item["value"]["format"] == "rle"
    assert (item["original_width"], item["original_height"]) == (64, 48)
    mask = rle_codec.brush_decode(item["value"]["rle"], 48, 64)
    direct = state.engine.predictor.set_image(str(data / "sub" / "square.png")).predict(
        box=[18, 8, 46, 32], multimask=True)
    assert np.array_equal(mask, direct.masks[int(np.argmax(direct.scores))])
    kp = {"x": 50.0, "y": 40.0, "keypointlabels": ["car"], "width": 1}
    r = c.post("/predict", json={"tasks": [{"data": {"image": "sub/square.png"}}], "label_config": SCHEMA,
                                 "params": {"context": _context("keypointlabels", kp)}})
    assert r.status_code == 200 and r.json()["results"][0]["result"][0]["value"]["rle"]
    r = c.post("/predict", json={"tasks": [task], "project": "3"})  # no prompt: no prediction
    assert r.json()["results"] == [{"result": [], "score": 0.0, "model_version": "samkit-classic"}]


def test_predict_polygons_and_refusals(served):
    c, _, _ = served
    schema = SCHEMA.replace("BrushLabels", "PolygonLabels")
    kp = {"x": 50.0, "y": 40.0, "keypointlabels": ["car"]}
    r = c.post("/predict", json={"tasks": [{"data": {"image": "sub/square.png"}}], "label_config": schema,
                                 "params": {"context": _context("keypointlabels", kp)}})
    item = r.json()["results"][0]["result"][0]
    assert item["type"] == "polygonlabels" and len(item["value"]["points"]) >= 3
    assert all(0 <= x <= 100 and 0 <= y <= 100 for x, y in item["value"]["points"])
    bad = [({"tasks": [{"data": {"image": "../secret.png"}}], "label_config": SCHEMA}, 403),
           ({"tasks": [{"data": {"image": "http://elsewhere.example/a.png"}}], "label_config": SCHEMA}, 403),
           ({"tasks": [], "label_config": SCHEMA}, 400),
           ({"tasks": [{"data": {}}], "label_config": SCHEMA}, 400),
           ({"tasks": [{"data": {"image": "a.png"}}],
             "label_config": "<View><Image name='i' value='$i'/></View>"}, 400),
           ({"tasks": [{"data": {"image": "a.png"}}], "label_config": "<!DOCTYPE x [<!ENTITY a 'b'>]><View/>"}, 400)]
    for body, status in bad:
        body.setdefault("params", {"context": _context("keypointlabels", kp)})
        r = c.post("/predict", json=body)
        assert r.status_code == status, (body, r.text)
        assert "Fix:" in r.json()["error"]


def _ndjson(r):
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def test_video_session_prompt_propagate_and_save(served):
    c, state, data = served
    info = c.post("/api/video/sessions", json={"path": "clip"}).json()
    assert (info["num_frames"], info["width"], info["height"]) == (4, 64, 48)
    sid = info["id"]
    frame = c.get(f"/api/video/sessions/{sid}/frames/2")
    assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8"
    r = c.post(f"/api/video/sessions/{sid}/prompt", json={"frame": 0, "obj_id": 1, "box": [8, 10, 32, 34],
                                                            "label": "square"})
    assert r.status_code == 200 and r.json()["objects"][0]["label"] == "square"
    saved = json.loads((data / ".samkit" / "annotations" / "clip.json").read_text())
    assert list(saved["frames"]) == ["0"]  # a prompt is saved at once, before any propagation
    assert c.get("/api/annotations", params={"path": "clip"}).json()["frames"]["0"][0]["label"] == "square"
    lines = _ndjson(c.post(f"/api/video/sessions/{sid}/propagate", json={}))
    assert [ln["frame"] for ln in lines[:-1]] == [0, 1, 2, 3] and lines[-1]["end"] is True
    last = rle_codec.decode(lines[3]["objects"][0]["rle"], (48, 64))
    ys, xs = np.nonzero(last)
    assert xs.mean() > 22  # the square moved right by 12 px; the track follows it
    c.post(f"/api/video/sessions/{sid}/prompt", json={"frame": 3, "obj_id": 2, "box": [20, 10, 44, 34]})
    back = _ndjson(c.post(f"/api/video/sessions/{sid}/propagate", json={"start": 3, "reverse": True}))
    assert [ln["frame"] for ln in back[:-1]] == [3, 2, 1, 0]
    assert all([o["id"] for o in ln["objects"]] == [1, 2] for ln in back[:-1])  # object 1 kept from the forward pass
    doc = json.loads((data / ".samkit" / "annotations" / "clip.json").read_text())
    assert doc["kind"] == "video" and doc["revision"] == 4 and len(doc["frames"]) == 4
    assert [o["id"] for o in c.get(f"/api/video/sessions/{sid}/results/1").json()["objects"]] == [1, 2]
    assert c.get(f"/api/video/sessions/{sid}/frames/9").status_code == 400
    r = c.post("/api/export", json={"path": "clip", "format": "coco"})
    assert r.status_code == 200 and r.json()["images"] == 4
    coco = json.loads((data / r.json()["files"][0]).read_text())
    assert len(coco["annotations"]) == 8 and coco["images"][0]["file_name"] == "clip#0"
    assert c.delete(f"/api/video/sessions/{sid}").status_code == 200
    assert c.get(f"/api/video/sessions/{sid}/results/0").status_code == 404
    again = c.post("/api/video/sessions", json={"path": "clip"}).json()  # a reload: the saved frames come back
    assert again["frames_with_results"] == 4
    c.post(f"/api/video/sessions/{again['id']}/prompt", json={"frame": 1, "obj_id": 3, "box": [10, 10, 34, 34]})
    doc = json.loads((data / ".samkit" / "annotations" / "clip.json").read_text())
    assert len(doc["frames"]) == 4 and [o["id"] for o in doc["frames"]["1"]] == [1, 2, 3]  # nothing lost
    assert doc["frames"]["0"][0]["label"] == "square"
    c.delete(f"/api/video/sessions/{again['id']}")


def test_video_bounds(served):
    c, state, _ = served
    ids = [c.post("/api/video/sessions", json={"path": p}).json()["id"] for p in ("clip", "clip", "sub")]
    listed = {s["id"] for s in c.get("/api/video/sessions").json()["sessions"]}
    assert listed == set(ids[1:])  # max_sessions=2: the least recently used one was closed
    assert c.get(f"/api/video/sessions/{ids[0]}/results/0").status_code == 404
    store = state.sessions
    store.ttl_s, old = 0.01, store.ttl_s
    try:
        time.sleep(0.05)
        assert c.get("/api/video/sessions").json()["sessions"] == []  # idle past the TTL
    finally:
        store.ttl_s = old
    store.max_frames, old = 3, store.max_frames
    try:
        r = c.post("/api/video/sessions", json={"path": "clip"})
        assert r.status_code == 400 and "--max-video-frames" in r.json()["error"]
    finally:
        store.max_frames = old
    for path, status in (("../x", 403), ("truck.png", 400), ("nothing", 404)):
        assert c.post("/api/video/sessions", json={"path": path}).status_code == status, path


def test_video_prompts_survive_a_reload_and_a_restart(tmp_path):
    """The tracker's prompts are saved with the video's masks: a session opened later (a reloaded
    page, a restarted server) tracks the objects on without prompting them again."""
    data = data_folder(tmp_path)
    app, _ = make_app(data)
    with client(app) as c:
        sid = c.post("/api/video/sessions", json={"path": "clip"}).json()["id"]
        c.post(f"/api/video/sessions/{sid}/prompt", json={"frame": 0, "obj_id": 1, "box": [8, 10, 32, 34],
                                                        "label": "square"})
        c.post(f"/api/video/sessions/{sid}/prompt", json={"frame": 0, "obj_id": 1, "box": [9, 10, 32, 34]})
        doc = json.loads((data / ".samkit" / "annotations" / "clip.json").read_text())
        assert doc["prompts"] == [{"frame": 0, "obj_id": 1, "points": None, "labels": None, "box": [9, 10, 32, 34]}]
        c.delete(f"/api/video/sessions/{sid}")
    app, _ = make_app(data)  # a server restart, then the page opens the video again
    with client(app) as c:
        again = c.post("/api/video/sessions", json={"path": "clip"}).json()
        assert again["objects"] == [{"id": 1, "label": "square"}]
        lines = _ndjson(c.post(f"/api/video/sessions/{again['id']}/propagate", json={}))
        assert [ln["frame"] for ln in lines[:-1]] == [0, 1, 2, 3]
        assert all([o["id"] for o in ln["objects"]] == [1] for ln in lines[:-1])  # tracked on, not only kept
        _, xs = np.nonzero(rle_codec.decode(lines[3]["objects"][0]["rle"], (48, 64)))
        assert xs.mean() > 22  # the square moved right by 12 px; the track follows it
        saved = json.loads((data / ".samkit" / "annotations" / "clip.json").read_text())
        assert len(saved["frames"]) == 4 and len(saved["prompts"]) == 1
