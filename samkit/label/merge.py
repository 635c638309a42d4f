"""The final merge: shards -> one COCO JSON (and/or JSONL, Parquet), ``failures.jsonl`` and
``summary.json``, published as one set (``samkit.io.outputs.OutputSet``, key ``label``).

Images and annotations follow the order of the inputs (``Item`` order), whatever order the
workers finished in, and every input appears once: its result is looked up by URI and ident in
the shard index, so a result that a crash made two shards hold is still written once. Image
ids are the inputs' ids (the COCO ids of a COCO ``SRC``, else 1..N), annotation ids run 1..M.
Records are read one at a time (``Located`` offsets), so the merge holds one image's masks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import InputError, require
from ..io.outputs import OutputSet
from .settings import LabelSettings
from .sources import Item
from .store import Index, Located, ShardStore

FORMATS = ("coco", "jsonl", "parquet")
FILES = {"coco": "coco.json", "jsonl": "labels.jsonl", "parquet": "labels.parquet"}
FAILURES, SUMMARY = "failures.jsonl", "summary.json"
OBJECT = {"id": 1, "name": "object"}
_FIRST = ("id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd", "score")
PARQUET_ROWS = 10_000  # annotations per row group


def categories_for(settings: LabelSettings, box_categories: Optional[List[dict]]) -> List[dict]:
    """COCO ``categories``: the boxes file's (boxes mode), the classes (named masks), else ``object``."""
    if settings.mode == "boxes":
        return list(box_categories or [OBJECT])
    if settings.named:
        return [{"id": i, "name": n} for i, n in zip(settings.class_ids, settings.class_names)]
    return [dict(OBJECT)]


class _Annotations:
    """Numbers the annotations of the results in input order and gives them their category."""

    def __init__(self, settings: LabelSettings, categories: List[dict]) -> None:
        self.ids = {c["name"]: c["id"] for c in categories}
        self.names = {c["id"]: c["name"] for c in categories}
        self.named = settings.named
        self.next_id = 1

    def of(self, item: Item, rec: dict) -> List[dict]:
        out = []
        for ann in rec.get("anns", ()):
            cat = ann.get("category_id")
            if cat is None:
                cat = self.ids.get(ann.get("label"), 1) if self.named else 1
            row = {"id": self.next_id, "image_id": item.image_id, "category_id": cat,
                   "segmentation": ann["segmentation"], "area": ann["area"], "bbox": ann["bbox"], "iscrowd": 0,
                   "score": ann["score"]}
            row.update((k, v) for k, v in ann.items() if k not in _FIRST)
            self.next_id += 1
            out.append(row)
        return out


def _results(items: Sequence[Item], index: Index) -> Iterator[Tuple[Item, Located]]:
    for it in items:
        loc = index.ok.get((it.uri, it.ident))
        if loc is not None:
            yield it, loc


def _image(item: Item, loc: Located) -> dict:
    return {"id": item.image_id, "file_name": item.name, "width": loc.width, "height": loc.height}


def write_coco(path: Path, items: Sequence[Item], index: Index, numbering: _Annotations, categories: List[dict],
               info: dict) -> int:
    """Stream the COCO document to ``path``; returns the number of annotations."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"info": ' + json.dumps(info) + ', "images": [')
        for k, (it, loc) in enumerate(_results(items, index)):
            fh.write((", " if k else "") + json.dumps(_image(it, loc)))
        fh.write('], "annotations": [')
        for it, loc in _results(items, index):
            for ann in numbering.of(it, ShardStore.read(loc)):
                fh.write((", " if n else "") + json.dumps(ann, separators=(",", ":")))
                n += 1
        fh.write('], "categories": ' + json.dumps(categories) + "}\n")
    return n


def write_jsonl(path: Path, items: Sequence[Item], index: Index, numbering: _Annotations) -> int:
    """One line per labelled image: the image fields, its URI and content hash, its annotations."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for it, loc in _results(items, index):
            rec = ShardStore.read(loc)
            anns = numbering.of(it, rec)
            n += len(anns)
            line = dict(_image(it, loc), uri=it.uri, sha256=rec["sha256"], annotations=anns)
            fh.write(json.dumps(line, separators=(",", ":")) + "\n")
    return n


def write_parquet(path: Path, items: Sequence[Item], index: Index, numbering: _Annotations) -> int:
    """One row per annotation (``samkit[parquet]``: pyarrow); RLE as ``rle_size`` + ``rle_counts``."""
    pa = require("pyarrow", "parquet", "--format parquet")
    pq = require("pyarrow.parquet", "parquet", "--format parquet")
    schema = pa.schema([("annotation_id", pa.int64()), ("image_id", pa.int64()), ("file_name", pa.string()),
                        ("width", pa.int32()), ("height", pa.int32()), ("category_id", pa.int64()),
                        ("category", pa.string()), ("score", pa.float64()), ("area", pa.int64()),
                        ("bbox", pa.list_(pa.float64())), ("rle_size", pa.list_(pa.int64())),
                        ("rle_counts", pa.string()), ("stability_score", pa.float64()),
                        ("label_score", pa.float64())])
    rows: Dict[str, list] = {name: [] for name in schema.names}
    n = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for it, loc in _results(items, index):
            for ann in numbering.of(it, ShardStore.read(loc)):
                vals = {"annotation_id": ann["id"], "image_id": it.image_id, "file_name": it.name, "width": loc.width,
                        "height": loc.height, "category_id": ann["category_id"],
                        "category": numbering.names.get(ann["category_id"], str(ann["category_id"])),
                        "score": ann["score"], "area": ann["area"], "bbox": [float(v) for v in ann["bbox"]],
                        "rle_size": ann["segmentation"]["size"], "rle_counts": ann["segmentation"]["counts"],
                        "stability_score": ann.get("stability_score"), "label_score": ann.get("label_score")}
                for k, v in vals.items():
                    rows[k].append(v)
                n += 1
                if len(rows["annotation_id"]) >= PARQUET_ROWS:
                    writer.write_table(pa.table(rows, schema=schema))
                    rows = {name: [] for name in schema.names}
        if rows["annotation_id"] or n == 0:
            writer.write_table(pa.table(rows, schema=schema))
    return n


def failures_of(items: Sequence[Item], index: Index) -> Tuple[List[dict], List[Item]]:
    """(failed inputs with their reasons, inputs with neither a result nor a failure)."""
    failed, missing = [], []
    for it in items:
        if index.done(it.uri, it.ident):
            continue
        f = index.failed.get(it.uri)
        if f is not None and f[0] == it.ident:
            failed.append({"file_name": it.name, "uri": it.uri, "reason": f[1]})
        else:
            missing.append(it)
    return failed, missing


def merge(out: Path, items: Sequence[Item], store: ShardStore, settings: LabelSettings, formats: Sequence[str],
          box_categories: Optional[List[dict]], run: Dict[str, Any]) -> dict:
    """Write the outputs of ``formats`` plus the failures file and the summary; returns the summary."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise InputError(f"unknown label format(s) {bad}. Fix: use {', '.join(FORMATS)}.")
    index = store.scan()
    failed, missing = failures_of(items, index)
    categories = categories_for(settings, box_categories)
    labelled = [(it, loc) for it, loc in _results(items, index)]
    summary: Dict[str, Any] = {
        "images": len(items), "labelled": len(labelled), "failed": len(failed), "missing": len(missing),
        "masks": 0, "processed_this_run": run.get("processed", 0), "resumed": run.get("resumed", 0),
        "seconds": round(run.get("seconds", 0.0), 3), "labelling_seconds": round(run.get("labelling_seconds", 0.0), 3),
        "compute_seconds": round(sum(loc.seconds for _, loc in labelled), 3),
        "images_per_second": run.get("images_per_second"), "engine": run.get("engine"),
        "workers": run.get("workers"), "settings": settings.describe(), "settings_key": settings.key(),
        "formats": list(formats), "failures": failed,
    }
    with OutputSet(out, "label") as outs:
        for fmt in formats:
            numbering = _Annotations(settings, categories)
            path = outs.path(FILES[fmt])
            if fmt == "coco":
                info = {"description": "samkit label", "settings_key": settings.key(), "mode": settings.mode,
                        "model": summary["settings"]["model"]}
                n = write_coco(path, items, index, numbering, categories, info)
            elif fmt == "jsonl":
                n = write_jsonl(path, items, index, numbering)
            else:
                n = write_parquet(path, items, index, numbering)
            summary["masks"] = n
        if not formats:
            summary["masks"] = sum(loc.masks for _, loc in labelled)
        with open(outs.path(FAILURES), "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(f) + "\n" for f in failed)
        summary["files"] = [FILES[f] for f in formats] + [FAILURES, SUMMARY]
        with open(outs.path(SUMMARY), "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=1)
    return summary
