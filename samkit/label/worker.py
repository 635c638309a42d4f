"""The work of one worker: ``Labeler(settings)`` holds the model (loaded once) and turns an
``Item`` into a record; every engine (serial, local pool, Ray actor) runs this same code.

A record is a JSON-ready dict:
``{"v": 1, "t": "ok", "uri", "ident", "sha256", "width", "height", "anns": [...], "seconds"}``
or ``{"v": 1, "t": "fail", "uri", "ident", "reason"}``. Annotations are in the model's order
(boxes mode: the boxes' order, text mode: class by class) and hold ``segmentation`` (COCO RLE
with a compressed ``counts`` string, written here without pycocotools), ``area``, ``bbox``
(x, y, w, h of the mask), ``score`` (predicted IoU; classic: its heuristic score), optional
``stability_score``, ``label`` / ``label_score`` (named masks), ``category_id`` and
``prompt_box`` / ``source_id`` (boxes mode), ``point_coords`` / ``crop_box`` (everything mode).
An image that cannot be read or decoded, or whose labelling raises, gives a ``fail`` record
with the reason: failures never stop the job. A file that cannot be decoded is marked ``final``
(not retried by a rerun while it is unchanged).
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ImageError
from .settings import RECORD_VERSION, LabelSettings
from .sources import Item, decode_error, read_bytes

BOX_CHUNK = 64  # boxes decoded per predictor call


def rle_string(counts: Sequence[int]) -> str:
    """COCO's compressed RLE ``counts`` string of run lengths (the LEB128-like code of the COCO
    mask API: each count minus the one two places before it, 5 bits a character, offset 48)."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5  # arithmetic shift, as on the C long
            more = (x != -1) if ch & 0x10 else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def annotations(masks, extra: Optional[List[dict]] = None) -> List[dict]:
    """``Masks`` (K x H x W) -> K annotation dicts (module docstring); ``extra[k]`` is merged in."""
    rles = masks.to_coco_rle(compressed=False)
    boxes, areas = masks.boxes, masks.areas
    out = []
    for k in range(len(masks)):
        x1, y1, x2, y2 = (int(v) for v in boxes[k])
        ann: Dict[str, Any] = {"segmentation": {"size": rles[k]["size"], "counts": rle_string(rles[k]["counts"])},
                               "area": int(areas[k]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                               "score": float(masks.scores[k])}
        if masks.stability is not None:
            ann["stability_score"] = float(masks.stability[k])
        if masks.labels is not None:
            ann["label"] = masks.labels[k]
            if masks.label_scores is not None:
                ann["label_score"] = float(masks.label_scores[k])
        if extra is not None:
            ann.update(extra[k])
        out.append(ann)
    return out


def fail_record(item: Item, reason: str, final: bool = False) -> dict:
    """A failure record; ``final``: the file itself is bad (it cannot be decoded), so a rerun does
    not try it again while it is unchanged (other failures, such as a read error, are retried)."""
    rec = {"v": RECORD_VERSION, "t": "fail", "uri": item.uri, "ident": item.ident, "reason": reason}
    if final:
        rec["final"] = True
    return rec


def clip_boxes(rows: List[list], width: int, height: int) -> Tuple[np.ndarray, List[dict], int]:
    """COCO boxes ``[x, y, w, h, category_id, id]`` -> (N x 4 xyxy clipped to the image, extras,
    number dropped because nothing of them is inside the image)."""
    keep, extras = [], []
    for x, y, w, h, cat, ann_id in rows:
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            continue
        keep.append([x0, y0, x1, y1])
        extras.append({"category_id": int(cat), "source_id": int(ann_id), "prompt_box": [x, y, w, h]})
    return np.asarray(keep, np.float64).reshape(-1, 4), extras, len(rows) - len(keep)


class Labeler:
    """A model loaded once and the means to label images with it (module docstring).
    ``threads``: torch intra-op threads for this worker (None: leave as is)."""

    def __init__(self, settings: LabelSettings, threads: Optional[int] = None) -> None:
        if threads is not None:
            from ..threads import configure_threads

            configure_threads(threads)
        self.settings = settings
        self.model = self._load_model()
        self.clip = self._load_clip() if settings.needs_clip else None
        self.generator = self.predictor = None
        if settings.mode == "everything":
            from ..auto import AutoMaskGenerator

            vocab = self._vocabulary() if settings.named else None
            self.generator = AutoMaskGenerator(self.model, vocabulary=vocab, clip=self.clip,
                                               **settings.generator_options())
        else:
            from ..predict.image import ImagePredictor

            self.predictor = ImagePredictor(self.model, clip=self.clip)

    def _load_model(self):
        s = self.settings
        if s.model_factory is not None:
            return s.model_factory()
        from ..registry import load_model

        return load_model(s.model, checkpoint=s.checkpoint, device=s.device, download=False)

    def _load_clip(self):
        s = self.settings
        if s.clip_factory is not None:
            return s.clip_factory()
        from .. import vocab

        return vocab.load_clip(s.clip, checkpoint=s.clip_checkpoint, device=s.device, download=False)

    def _vocabulary(self):
        from ..vocab.vocabularies import Vocabulary

        return Vocabulary(tuple(self.settings.class_names), tuple(self.settings.class_ids), "--classes")

    # ------------------------------------------------------------------ one image
    def label(self, item: Item) -> dict:
        t0 = time.perf_counter()
        try:
            data = read_bytes(item.uri)
        except Exception as exc:  # noqa: BLE001 - any read failure is this image's failure
            return fail_record(item, decode_error(item.uri, exc))
        digest = hashlib.sha256(data)
        if item.boxes:
            digest.update(b"\0boxes\0" + item.boxes.encode("utf-8"))
        try:
            from ..io.image import load_image

            img = load_image(data)
        except Exception as exc:  # noqa: BLE001 - a bad file: recorded, the job goes on
            return fail_record(item, decode_error(item.uri, exc), final=isinstance(exc, ImageError))
        del data
        try:
            anns, notes = self._run(img, item)
        except Exception as exc:  # noqa: BLE001 - recorded, the job goes on
            return fail_record(item, decode_error(item.uri, exc))
        rec = {"v": RECORD_VERSION, "t": "ok", "uri": item.uri, "ident": item.ident, "sha256": digest.hexdigest(),
               "width": int(img.shape[1]), "height": int(img.shape[0]), "anns": anns,
               "seconds": round(time.perf_counter() - t0, 4)}
        rec.update(notes)
        return rec

    def label_batch(self, items: Sequence[Item]) -> List[dict]:
        return [self.label(it) for it in items]

    def _run(self, img: np.ndarray, item: Item) -> Tuple[List[dict], dict]:
        mode = self.settings.mode
        if mode == "everything":
            masks, info = self.generator.generate_with_info(img)
            extra = [{"point_coords": r["point_coords"], "crop_box": r["crop_box"]} for r in info.to_records()]
            return annotations(masks, extra), {}
        from ..masks import Masks

        h, w = img.shape[:2]
        if mode == "text":
            self.predictor.set_image(img)
            per_class = self.predictor.predict_batch(texts=list(self.settings.class_names))
            return annotations(Masks.concatenate(per_class)), {}
        boxes, extra, dropped = clip_boxes(json.loads(item.boxes or "[]"), w, h)
        notes = {"dropped_boxes": dropped} if dropped else {}
        if len(boxes) == 0:
            return [], notes
        self.predictor.set_image(img)
        parts = [m for i in range(0, len(boxes), BOX_CHUNK)
                 for m in self.predictor.predict_batch(boxes=boxes[i:i + BOX_CHUNK], multimask=False)]
        return annotations(Masks.concatenate(parts), extra), notes
