"""Image routes of ``samkit serve`` (see ``app.py`` for the conventions).

* ``GET  /api/image/file?path=P``        the image's bytes;
* ``POST /api/image/encode {path}``       encode once (cached) -> ``{width, height, key, cached, browser_decoder}``;
* ``GET  /api/image/embedding?path=P``    the encoder outputs for the browser decoder
  (``ImageEngine.embedding_payload``);
* ``GET  /api/image/decoder[?graph=G]``   an exported ONNX decoder graph (bytes): ``prompt_decoder`` (default), or
  the fast pair ``decoder_image`` / ``prompt_decoder_fast`` when the export has it;
* ``POST /api/image/decode {path, points: [[x, y]], labels: [1|0], box: [x0, y0, x1, y1], multimask, refine,
  polygons, mask_format}`` (``polygons: false`` leaves them out; ``mask_format: "bits"`` answers each mask
  as ``"bits"``, the bit mask of its box (``rle.bits_encode``), instead of ``"rle"``: the page's form,
  cheap to make and to draw whatever the mask's shape); a ``Server-Timing`` header gives ``queue``
  (waiting for the model), ``decode`` (the model, its postprocessing included) and ``encode``
  (the masks to JSON) in ms, and for an export folder ``graph`` / ``post`` (the decoder graph's
  run / the mask selection and upsampling in numpy, both inside ``decode``);
* ``POST /api/image/everything {path, points_per_side, pred_iou_thresh, stability_thresh}``;
* ``POST /api/image/text {path, text}``;
* ``GET/PUT /api/annotations`` (``{path, objects, revision}``), ``POST /api/annotations/object {path, object}``;
* ``POST /api/export {format, path | folder}`` -> ``{format, files, images}``.

Masks are answered as ``{"rle": COCO RLE, "polygons": [[x0, y0, x1, y1, ...]], "score",
"stability", "box": [x0, y0, x1, y1], "area", "refine": id | null}`` (``mask_json``).
"""

import time
from typing import List, Optional

from ..errors import InputError
from ..masks import Masks
from . import rle as rle_codec
from .requests import read_json, resolve_image
from .errors import HTTPProblem
from .exports import export as export_annotations
from .paths import VIDEO_EXTS

MAX_POINTS = 64
MAX_TEXT = 200


def mask_json(masks: Masks, refine_ids: Optional[List] = None, polygons: bool = True,
              mask_format: str = "rle") -> List[dict]:
    """``Masks`` -> list of JSON masks (see module docstring); polygons rounded to 0.1 pixel.
    ``mask_format="bits"``: each mask as ``"bits"`` (``rle.bits_encode``) instead of ``"rle"``."""
    out = []
    rings = masks.to_polygons(tolerance=1.0) if polygons and len(masks) else [[] for _ in range(len(masks))]
    boxes, areas = masks.boxes, masks.areas
    for k in range(len(masks)):
        key, codec = ("bits", lambda m: rle_codec.bits_encode(m, boxes[k])) if mask_format == "bits" else \
            ("rle", rle_codec.encode)
        item = {key: codec(masks.masks[k]),
                "polygons": [[round(float(v), 1) for v in ring.reshape(-1)] for ring in rings[k]],
                "score": None if masks.scores is None else float(masks.scores[k]),
                "stability": None if masks.stability is None else float(masks.stability[k]),
                "box": [float(v) for v in boxes[k]], "area": int(areas[k]),
                "refine": None if refine_ids is None else refine_ids[k]}
        if masks.labels is not None:
            item["label"] = masks.labels[k]
        if getattr(masks, "label_scores", None) is not None:
            item["label_score"] = float(masks.label_scores[k])
        out.append(item)
    return out


def _prompt(body: dict):
    """(points N x 2 | None, labels N | None, box 4 | None) from a request body, checked for shape."""
    points, labels, box = body.get("points"), body.get("labels"), body.get("box")
    if points is not None:
        if not isinstance(points, list) or len(points) > MAX_POINTS:
            raise InputError(f"'points' must be a list of at most {MAX_POINTS} [x, y] pairs. Fix: send [[x, y], ...].")
        if labels is None:
            labels = [1] * len(points)
    if points is not None and not points:
        points, labels = None, None
    return points, labels, box


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InputError(f"'{name}' must be true or false. Fix: send a JSON boolean.")
    return value


def _number(body: dict, name: str, default, lo, hi, kind=float):
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InputError(f"'{name}' must be a number in [{lo}, {hi}]. Fix: e.g. {default}.")
    return kind(value)


def _path(body: dict, name: str = "path") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InputError(f"'{name}' is missing. Fix: send the image path relative to the data folder.")
    return value


def install(app, state) -> None:
    from fastapi import Request
    from fastapi.responses import FileResponse, JSONResponse, Response

    eng, queue = state.engine, state.queue

    @app.get("/api/image/file")
    async def image_file(path: str):
        return FileResponse(resolve_image(state, path), headers={"Cache-Control": "no-cache"})

    @app.post("/api/image/encode")
    async def encode(request: Request):
        real = resolve_image(state, _path(await read_json(request)))
        info = await queue.run(eng.encoded, real)
        use_browser = state.config.browser_decoder and state.config.assets_dir() is not None
        return {**info, "browser_decoder": eng.browser_decoder() if use_browser else None}

    @app.get("/api/image/embedding")
    async def embedding(path: str):
        payload = await queue.run(eng.embedding_payload, resolve_image(state, path))
        return Response(payload, media_type="application/octet-stream")

    @app.get("/api/image/decoder")
    async def decoder(graph: str = "prompt_decoder"):
        return FileResponse(eng.decoder_path(graph), media_type="application/octet-stream",
                            headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/image/decode")
    async def decode(request: Request):
        body = await read_json(request)
        real = resolve_image(state, _path(body))
        points, labels, box = _prompt(body)
        multimask = _flag(body, "multimask", True)
        refine = body.get("refine")
        if refine is not None and not isinstance(refine, str):
            raise InputError("'refine' must be the id of an earlier mask. Fix: send the 'refine' value answered.")

        polygons = _flag(body, "polygons", True)  # the page asks for none: it draws the masks
        mask_format = body.get("mask_format", "rle")
        if mask_format not in ("rle", "bits"):
            raise InputError("'mask_format' must be \"rle\" or \"bits\". Fix: leave it out for COCO RLE.")
        times = {"start": time.perf_counter()}

        def work():
            times["model"] = time.perf_counter()
            masks = eng.decode(real, points, labels, box, multimask, refine)
            times["done"] = time.perf_counter()
            times["parts"] = getattr(eng.predictor, "timing", None) or {}  # an export's graph / numpy split
            return masks, eng.keep_low_res(masks)

        masks, ids = await queue.run(work)
        times["back"] = time.perf_counter()
        content = {"masks": mask_json(masks, ids, polygons, mask_format), "width": masks.width,
                   "height": masks.height}
        ms = {"queue": times["model"] - times["start"], "decode": times["done"] - times["model"],
              "encode": time.perf_counter() - times["back"], **times["parts"]}
        timing = ", ".join(f"{k};dur={1000 * v:.1f}" for k, v in ms.items())
        return JSONResponse(content, headers={"Server-Timing": timing})

    @app.post("/api/image/everything")
    async def everything(request: Request):
        body = await read_json(request)
        real = resolve_image(state, _path(body))
        pps = _number(body, "points_per_side", 16, 2, 64, int)
        iou = _number(body, "pred_iou_thresh", 0.86, 0.0, 1.0)
        stab = _number(body, "stability_thresh", 0.92, 0.0, 1.0)
        masks = await queue.run(eng.everything, real, pps, iou, stab)
        return {"masks": mask_json(masks), "width": masks.width, "height": masks.height}

    @app.post("/api/image/text")
    async def text(request: Request):
        body = await read_json(request)
        real = resolve_image(state, _path(body))
        words = body.get("text")
        if not isinstance(words, str) or not words.strip() or len(words) > MAX_TEXT:
            raise InputError(f"'text' must be a non-empty string of at most {MAX_TEXT} characters. Fix: e.g. "
                             "{\"text\": \"dog\"}.")
        masks = await queue.run(eng.text, real, words.strip())
        return {"masks": mask_json(masks), "width": masks.width, "height": masks.height}

    _annotation_routes(app, state)


def _annotation_routes(app, state) -> None:
    from fastapi import Request

    store, queue = state.annotations, state.queue

    def check_image(rel: str) -> None:
        resolve_image(state, rel)

    def doc_of(rel: str) -> dict:
        return store.load(rel)

    @app.get("/api/annotations")
    async def get_annotations(path: str):
        if not path.startswith("@"):
            real = state.data.resolve(path, kind="new")
            if real.is_dir() or real.suffix.lower() in VIDEO_EXTS:  # a video: its saved frames (if any)
                if not real.exists():
                    raise HTTPProblem(404, f"no video {path!r}. Fix: pick one listed by /api/files.")
                return store.load_video(path) or {"format": "samkit-annotations", "version": 1, "kind": "video",
                                                  "path": path, "revision": 0, "frames": {}}
        check_image(path)
        return doc_of(path)

    @app.put("/api/annotations")
    async def put_annotations(request: Request):
        body = await read_json(request)
        rel = _path(body)
        check_image(rel)
        revision = body.get("revision", 0)
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise InputError("'revision' must be the integer revision the page loaded. Fix: send it back as read.")
        return store.replace(rel, body.get("objects"), revision)

    @app.post("/api/annotations/object")
    async def add_object(request: Request):
        body = await read_json(request)
        rel = _path(body)
        check_image(rel)
        return store.add_object(rel, body.get("object"))

    @app.post("/api/export")
    async def export(request: Request):
        body = await read_json(request)
        fmt = body.get("format")
        if body.get("folder") is not None:
            folder = body["folder"]
            if not isinstance(folder, str):
                raise InputError("'folder' must be a path relative to the data folder ('' for the top).")
            if folder:
                state.data.resolve(folder, kind="dir")
            rels = store.annotated_in(folder)
            key = (folder.replace("/", "__") or "all")
        else:
            rel = _path(body)
            if rel.startswith("@") or state.data.resolve(rel, kind="new").is_file() and \
                    not rel.lower().endswith(VIDEO_EXTS):
                check_image(rel)
            elif not state.data.resolve(rel, kind="new").exists():
                raise HTTPProblem(404, f"no image, video or frame folder {rel!r}. Fix: pick one listed by /api/files.")
            rels = [rel]
            key = rel.replace("/", "__").replace("@", "")
        return await queue.run(export_annotations, store, fmt, rels, key)
