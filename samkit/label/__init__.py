"""Dataset labelling at scale: ``samkit label SRC --out DST`` / ``label_dataset(src, out, ...)``.

Every image of ``SRC`` (a folder, a glob, a COCO JSON, a list of paths / URIs: ``sources.py``)
is labelled with masks from everything mode, box prompts of a COCO detection file, or text
classes (``worker.py``), by one of three engines (``engines.py``, ``ray_engine.py``): ``local``
(default; worker processes on this machine, one model each), ``ray`` (Ray Data ``map_batches``
over an actor pool, on a cluster or locally) or ``serial`` (this process).

Output folder::

    DST/
      coco.json            one COCO document: images, annotations (RLE, bbox, area, score, ...),
                           categories (the boxes file's, the classes, else "object")   --format coco
      labels.jsonl         one line per image with its annotations                      --format jsonl
      labels.parquet       one row per annotation (samkit[parquet])                     --format parquet
      failures.jsonl       one line per image that could not be labelled, with the reason
      summary.json         images, labelled, failed (with reasons), masks, times, images/s, settings
      shards/<key>/*.jsonl the results as they were finished (``store.py``); <key> hashes the settings
      .samkit/label.json   the manifest of the files above (``samkit.io.outputs``)

Exactly once, resumable: a result is keyed by the settings and the sha256 of the image's bytes,
and each finished batch is written as one shard atomically; a rerun of the same command after a
crash, a kill or Ctrl-C labels only the images without a result (or whose file changed) and
the merge writes each input once. The final files are published as one set (a failed merge
leaves the previous ones).
"""
from __future__ import annotations

from .job import ENGINES, Interrupted, label_dataset
from .merge import FILES, FORMATS
from .settings import MODES, LabelSettings, make_settings

__all__ = ["label_dataset", "LabelSettings", "make_settings", "Interrupted", "ENGINES", "FORMATS", "FILES", "MODES"]
