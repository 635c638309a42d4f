"""Label Studio ML backend routes, so a Label Studio project can use ``samkit serve`` for
interactive SAM-family pre-annotation (Settings -> Model -> Connect model -> the server's URL).

The contract (label-studio-ml-backend's ``api.py``):

* ``GET /health`` (and ``GET /`` with ``Accept: application/json``): ``{"status": "UP", ...}``;
* ``POST /setup {project, schema, hostname, access_token, model_version}`` -> ``{"model_version"}``;
  ``schema`` is the labelling config XML: the ``BrushLabels`` (answered as brush RLE) or
  ``PolygonLabels`` control attached to an ``Image`` names ``from_name`` / ``to_name`` and the
  task data key (``value="$image"``);
* ``POST /predict {tasks, project, label_config, params: {context}}`` -> ``{"results":
  [{"result": [...], "score", "model_version"}], "model_version"}``: one prediction per task. The
  prompts are ``params.context.result`` (interactive labelling): ``keypointlabels`` results
  (``value.x / y`` in percent of the image, ``is_positive`` false for a negative click) and
  ``rectanglelabels`` results (``value.x / y / width / height`` in percent). A task without
  context gets no prediction (``result: []``): SAM needs a prompt.
* ``POST /webhook`` -> ``{}`` (training events are ignored).

Task images: ``/data/local-files/?d=REL`` and plain relative paths are looked up in ``--data``
(safe resolution); ``/data/upload/...`` and other URLs are fetched only from the Label Studio
host of ``/setup`` (or ``--labelstudio-url``), with its access token, size-capped.
"""

import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from typing import List, Optional

import numpy as np

from ..errors import InputError
from ..io.image import load_image
from ..masks import Masks
from . import rle as rle_codec
from .requests import read_json
from .errors import HTTPProblem

MAX_SCHEMA = 200_000
MAX_TASKS = 32


def parse_schema(schema: str) -> dict:
    """``{"from_name", "to_name", "data_key", "type", "labels"}`` of the first BrushLabels /
    PolygonLabels control attached to an Image of the labelling config ``schema``."""
    if not isinstance(schema, str) or not schema.strip() or len(schema) > MAX_SCHEMA:
        raise InputError("the labelling config ('schema' / 'label_config') is missing or too long. Fix: send the "
                         "project's XML config.")
    if "<!DOCTYPE" in schema or "<!ENTITY" in schema:
        raise InputError("the labelling config declares a DOCTYPE or entities. Fix: send a plain Label Studio config.")
    try:
        root = ET.fromstring(schema)
    except ET.ParseError as exc:
        raise InputError(f"the labelling config is not valid XML ({exc}). Fix: send the project's config.") from None
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag == "Image"}
    for el in root.iter():
        if el.tag in ("BrushLabels", "PolygonLabels") and el.get("toName") in images:
            return {"from_name": el.get("name"), "to_name": el.get("toName"), "type": el.tag.lower(),
                    "data_key": images[el.get("toName")].lstrip("$"),
                    "labels": [c.get("value") for c in el if c.tag == "Label" and c.get("value")]}
    raise InputError("the labelling config has no BrushLabels or PolygonLabels on an Image. Fix: add e.g. "
                     "<BrushLabels name=\"tag\" toName=\"image\"><Label value=\"object\"/></BrushLabels>.")


def prompts_of(context: Optional[dict]):
    """Label Studio interactive context -> (points in percent N x 2, labels N, box in percent or
    None, label name or None)."""
    points, labels, box, label = [], [], None, None
    for item in (context or {}).get("result", []) or []:
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            continue
        v, kind = item["value"], item.get("type", "")
        try:
            if kind == "keypointlabels":
                points.append([float(v["x"]), float(v["y"])])
                labels.append(0 if item.get("is_positive") is False else 1)
                label = label or (v.get("keypointlabels") or [None])[0]
            elif kind == "rectanglelabels":
                x, y, w, h = (float(v[k]) for k in ("x", "y", "width", "height"))
                box = [x, y, x + w, y + h]
                label = label or (v.get("rectanglelabels") or [None])[0]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"a {kind} result of the context has no numeric x / y (/ width / height). Fix: send "
                             "Label Studio's interactive context unchanged.") from None
    return points, labels, box, label


def _result(masks: Masks, cfg: dict, label: str, w: int, h: int) -> List[dict]:
    best = masks.masks[int(np.argmax(masks.scores))] if len(masks) else np.zeros((h, w), bool)
    item = {"from_name": cfg["from_name"], "to_name": cfg["to_name"], "original_width": w, "original_height": h,
            "image_rotation": 0, "readonly": False}
    if cfg["type"] == "brushlabels":
        item.update(type="brushlabels", value={"format": "rle", "rle": rle_codec.brush_encode(best),
                                                "brushlabels": [label]})
        return [item]
    rings = Masks(best[None]).to_polygons(tolerance=1.0)[0]
    out = []
    for ring in rings[:1]:  # the outer ring of the largest part: Label Studio polygons have no holes
        pts = [[round(float(x) * 100.0 / w, 3), round(float(y) * 100.0 / h, 3)] for x, y in ring]
        out.append(dict(item, type="polygonlabels", value={"points": pts, "polygonlabels": [label]}))
    return out


class LabelStudioBackend:
    """What /setup told us and how task images are found (see the module docstring)."""

    def __init__(self, state) -> None:
        self.state = state
        self.projects: dict = {}
        self.hostname = state.config.labelstudio_url
        self.token: Optional[str] = None

    def image_of(self, task: dict, key: str) -> np.ndarray:
        data = task.get("data") if isinstance(task, dict) else None
        ref = data.get(key) if isinstance(data, dict) else None
        if not isinstance(ref, str) or not ref:
            raise InputError(f"the task has no data[{key!r}] image reference. Fix: use the key of the config's Image.")
        parsed = urllib.parse.urlparse(ref)
        max_pixels = self.state.config.max_pixels
        if parsed.path.startswith("/data/local-files") and "d" in urllib.parse.parse_qs(parsed.query):
            rel = urllib.parse.parse_qs(parsed.query)["d"][0]
            return load_image(self.state.data.resolve(rel), max_pixels=max_pixels)
        if not parsed.scheme and not parsed.netloc and not ref.startswith("/"):
            return load_image(self.state.data.resolve(ref), max_pixels=max_pixels)
        return load_image(self._fetch(ref), max_pixels=max_pixels)

    def _fetch(self, ref: str) -> bytes:
        if not self.hostname:
            raise InputError(f"the task image {ref!r} is a URL, and this server knows no Label Studio host to fetch "
                             "it from. Fix: connect the project again (its /setup sends the host), pass "
                             "--labelstudio-url, or serve the images from --data (local files).")
        base = urllib.parse.urlparse(self.hostname)
        url = urllib.parse.urljoin(self.hostname.rstrip("/") + "/", ref)
        if urllib.parse.urlparse(url).netloc != base.netloc or base.scheme not in ("http", "https"):
            raise HTTPProblem(403, f"the task image {ref!r} is not on the Label Studio host {self.hostname}. Fix: "
                                   "store task images in Label Studio or in --data.")
        req = urllib.request.Request(url, headers={"Authorization": f"Token {self.token}"} if self.token else {})
        cap = self.state.config.max_upload_bytes
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - host checked above
            data = resp.read(cap + 1)
        if len(data) > cap:
            raise HTTPProblem(413, f"the task image is over {cap:,} bytes. Fix: use smaller images or --max-upload.")
        return data

    def predict_task(self, task: dict, cfg: dict, context: Optional[dict]) -> dict:
        """One prediction (worker thread)."""
        points, labels, box, label = prompts_of(context)
        if not points and box is None:
            return {"result": [], "score": 0.0, "model_version": self.version()}
        image = self.image_of(task, cfg["data_key"])
        h, w = image.shape[:2]
        eng = self.state.engine
        eng.predictor.set_image(image)
        pts = [[x * w / 100.0, y * h / 100.0] for x, y in points] or None
        bx = None if box is None else [box[0] * w / 100.0, box[1] * h / 100.0, box[2] * w / 100.0,
                                        box[3] * h / 100.0]
        masks = eng.predictor.predict(points=pts, labels=labels or None, box=bx, multimask=True)
        label = label or (cfg["labels"][0] if cfg["labels"] else "object")
        score = float(np.max(masks.scores)) if len(masks) else 0.0
        return {"result": _result(masks, cfg, label, w, h), "score": score, "model_version": self.version()}

    def version(self) -> str:
        return f"samkit-{self.state.engine.name}"


def install(app, state) -> None:
    from fastapi import Request

    backend = LabelStudioBackend(state)

    @app.get("/health")
    async def health():
        return {"status": "UP", "model_class": "samkit", "model": state.engine.name, "v2": True}

    @app.post("/setup")
    async def setup(request: Request):
        body = await read_json(request)
        schema = body.get("schema") or body.get("label_config")
        if schema:
            backend.projects[str(body.get("project"))] = parse_schema(schema)
        host = body.get("hostname")
        if isinstance(host, str) and host.startswith(("http://", "https://")) and not state.config.labelstudio_url:
            backend.hostname = host
        if isinstance(body.get("access_token"), str) and body["access_token"]:
            backend.token = body["access_token"]
        return {"model_version": backend.version()}

    @app.post("/predict")
    async def predict(request: Request):
        body = await read_json(request)
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks or len(tasks) > MAX_TASKS:
            raise InputError(f"'tasks' must be a list of 1..{MAX_TASKS} tasks. Fix: send Label Studio's tasks.")
        schema = body.get("label_config")
        project = str(body.get("project", "")).split(".")[0]
        cfg = parse_schema(schema) if schema else backend.projects.get(project) or backend.projects.get(
            str(body.get("project")))
        if cfg is None:
            raise InputError("no labelling config for this project. Fix: call /setup first, or send label_config.")
        params = body.get("params") or {}
        context = params.get("context") if isinstance(params, dict) else None
        results = [await state.queue.run(backend.predict_task, t, cfg, context) for t in tasks]
        return {"results": results, "model_version": backend.version()}

    @app.post("/webhook")
    async def webhook():
        return {}
