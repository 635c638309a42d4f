"""Exports of saved annotations: COCO, LabelMe, YOLO and PNG masks, of one image or a folder.

Files go to ``DATA/exports/<format>/`` through ``samkit.io.outputs.OutputSet`` (staged, then
published as a set with a manifest under ``DATA/exports/<format>/.samkit/``): an export that
fails changes nothing, and a new export of the same image or folder replaces its previous files.
Categories are the sorted labels of the exported objects (COCO ids 1..N, YOLO class 0..N-1 with
the names in ``classes.txt``). Video documents export every annotated frame as an image entry
named ``<video>#<frame>`` (COCO) and ``<stem>_f<frame>`` (PNG).
"""
from __future__ import annotations

import json
import os
from pathlib import PurePosixPath
from typing import Dict, List, Tuple

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_write_text
from ..io.outputs import OutputSet
from ..masks import Masks
from . import rle as rle_codec
from .annotations import AnnotationStore

FORMATS = ("coco", "labelme", "yolo", "png")
EXPORT_DIR = "exports"


def _stem(rel: str) -> str:
    """``sub/dir/a.jpg`` -> ``sub__dir__a`` (unique per image inside one export folder)."""
    p = PurePosixPath(rel.lstrip("@"))
    return "__".join([*p.parent.parts, p.stem]) if p.parent.parts else p.stem


def _entries(store: AnnotationStore, rels: List[str]) -> List[Tuple[str, str, Masks, List[float]]]:
    """(rel, name, Masks with labels and ids, scores) per annotated image or video frame."""
    out = []
    for rel in rels:
        doc = store.read(rel)
        if doc is None:
            continue
        groups = [(rel, _stem(rel), doc.get("objects", []))] if doc.get("kind") == "image" else \
            [(f"{rel}#{t}", f"{_stem(rel)}_f{int(t):05d}", objs) for t, objs in doc.get("frames", {}).items()]
        size = (int(doc["height"]), int(doc["width"]))
        for name, stem, objs in groups:
            if not objs:
                continue
            masks = np.stack([rle_codec.decode(o["rle"], size) for o in objs])
            out.append((name, stem, Masks(masks, labels=[o["label"] for o in objs],
                                          ids=np.array([o["id"] for o in objs], np.int64)),
                        [1.0 if o.get("score") is None else float(o["score"]) for o in objs]))
    return out


def _coco(entries, rels_key: str, outs: OutputSet) -> List[str]:
    names = sorted({lbl for _, _, m, _ in entries for lbl in m.labels})
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, anns = [], []
    for img_id, (name, _, masks, scores) in enumerate(entries, 1):
        images.append({"id": img_id, "file_name": name, "height": masks.height, "width": masks.width})
        boxes, areas = masks.boxes, masks.areas
        for k in range(len(masks)):
            x1, y1, x2, y2 = (float(v) for v in boxes[k])
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat[masks.labels[k]],
                         "segmentation": rle_codec.encode(masks.masks[k]), "area": int(areas[k]),
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0, "score": scores[k],
                         "object_id": int(masks.ids[k])})
    doc = {"info": {"description": "samkit serve annotations"}, "images": images, "annotations": anns,
           "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in cat.items()]}
    f = outs.path(f"{rels_key}_coco.json")
    atomic_write_text(f, json.dumps(doc))
    return [f"{rels_key}_coco.json"]


def _per_image(fmt: str, entries, outs: OutputSet, data_root, out_dir) -> List[str]:
    names = sorted({lbl for _, _, m, _ in entries for lbl in m.labels})
    files = []
    for name, stem, masks, _ in entries:
        if fmt == "labelme":
            image_rel = name.split("#")[0]
            rel_to_image = os.path.relpath(os.path.join(data_root, image_rel), out_dir)
            masks.to_labelme(PurePosixPath(*rel_to_image.split(os.sep)).as_posix(), path=outs.path(f"{stem}.json"))
            files.append(f"{stem}.json")
        elif fmt == "yolo":
            masks.to_yolo(outs.path(f"{stem}.txt"), names=names)
            files.append(f"{stem}.txt")
        else:
            for p in masks.save_png(outs.path(stem), stem):
                files.append(f"{stem}/{p.name}")
    if fmt == "yolo":
        atomic_write_text(outs.path("classes.txt"), "".join(n + "\n" for n in names))
        files.append("classes.txt")
    return files


def export(store: AnnotationStore, fmt: str, rels: List[str], key: str) -> Dict[str, object]:
    """Write ``rels``' annotations as ``fmt`` into ``DATA/exports/<fmt>/``; ``key`` names the
    run (one per image or folder). Returns ``{"format", "files": [data-relative paths], "images"}``."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}. Fix: use one of {', '.join(FORMATS)}.")
    entries = _entries(store, rels)
    if not entries:
        raise InputError("there is nothing to export: no saved object in what was asked. Fix: annotate and save "
                         "at least one object first.")
    out_dir = store.data.root / EXPORT_DIR / fmt
    with OutputSet(out_dir, f"serve-{key}") as outs:
        if fmt == "coco":
            files = _coco(entries, key, outs)
        else:
            files = _per_image(fmt, entries, outs, store.data.root, out_dir)
    return {"format": fmt, "images": len(entries), "files": [f"{EXPORT_DIR}/{fmt}/{f}" for f in files]}
