"""Annotations saved server-side, one JSON document per image or video of the data folder.

Stored at ``DATA/.samkit/annotations/<path>.json`` and always replaced atomically
(``samkit.io.atomic``): a reload, a crash or a server restart never loses or half-writes a
document. Image document::

    {"format": "samkit-annotations", "version": 1, "kind": "image", "path": "photos/a.jpg",
     "width": W, "height": H, "revision": N,
     "objects": [{"id": 1, "label": "truck", "rle": {"size": [H, W], "counts": "..."},
                  "score": 0.93 | null}]}

A video document has ``"kind": "video"``, ``num_frames`` and ``"frames": {"<t>": [objects]}``
instead of ``objects``. ``revision`` counts saves: ``replace(path, objects, base_revision)``
refuses (409) a save based on an older revision than the stored one, so two pages editing the
same image cannot silently overwrite each other; ``add_object`` appends under the document's
lock (no lost update under concurrent clients). Every mask is checked on the way in (COCO RLE
of the image's size, counts covering exactly H x W pixels).
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import InputError
from ..io.atomic import atomic_write_text
from ..io.image import image_size
from . import rle as rle_codec
from .errors import HTTPProblem
from .paths import DataRoot, check_relative

FORMAT = "samkit-annotations"
VERSION = 1
MAX_OBJECTS = 10000
MAX_LABEL = 200


def clean_object(obj: dict, size, next_id: int) -> dict:
    """A client object -> the stored form (``InputError`` naming what is wrong)."""
    if not isinstance(obj, dict):
        raise InputError("each object must be a JSON object {id, label, rle}. Fix: send a list of objects.")
    label = obj.get("label", "object")
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
        raise InputError(f"an object's label must be a non-empty string of at most {MAX_LABEL} characters. "
                         "Fix: name the object.")
    oid = obj.get("id", next_id)
    if isinstance(oid, bool) or not isinstance(oid, int) or oid < 0:
        raise InputError(f"an object's id must be a non-negative integer, got {oid!r}. Fix: send ids 1, 2, ...")
    mask = rle_codec.decode(obj.get("rle"), size)  # checks size and counts
    score = obj.get("score")
    if score is not None and not isinstance(score, (int, float)):
        raise InputError("an object's score must be a number or null. Fix: send the predicted IoU, or null.")
    out = {"id": oid, "label": label.strip(), "rle": rle_codec.encode(mask),
           "score": None if score is None else float(score)}
    if isinstance(obj.get("color"), str) and len(obj["color"]) <= 32:
        out["color"] = obj["color"]
    return out


class AnnotationStore:
    """Per-file annotation documents under ``DATA/.samkit/annotations`` (see module docstring)."""

    def __init__(self, data: DataRoot, resolver=None) -> None:
        self.data = data
        self.resolver = resolver or (lambda rel: data.resolve(rel))  # client path -> real image file
        self._locks: Dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, rel: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(rel, threading.Lock())

    def file_for(self, rel: str) -> Path:
        """``DATA/.samkit/annotations/<rel>.json``, ``rel`` normalised (``a//b/./c.png/`` -> ``a/b/c.png``)."""
        return self.data.state_file("annotations", check_relative(rel).as_posix() + ".json")

    def read(self, rel: str) -> Optional[dict]:
        f = self.file_for(rel)
        try:
            doc = json.loads(f.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise HTTPProblem(500, f"the annotation file of {rel!r} cannot be read ({exc}). Fix: restore it from "
                                   f"a backup or delete {f.name}.") from None
        return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None

    def _write(self, rel: str, doc: dict) -> None:
        atomic_write_text(self.file_for(rel), json.dumps(doc, separators=(",", ":")))

    # ------------------------------------------------------------------ images
    def load(self, rel: str) -> dict:
        """The document of image ``rel`` (an empty one, revision 0, when nothing was saved)."""
        real = self.resolver(rel)
        doc = self.read(rel)
        if doc is None:
            h, w = image_size(real)
            doc = {"format": FORMAT, "version": VERSION, "kind": "image", "path": rel, "width": w, "height": h,
                   "revision": 0, "objects": []}
        return doc

    def replace(self, rel: str, objects: List[dict], base_revision: int) -> dict:
        """Save the whole object list; 409 when ``base_revision`` is not the stored revision."""
        if not isinstance(objects, list) or len(objects) > MAX_OBJECTS:
            raise InputError(f"'objects' must be a list of at most {MAX_OBJECTS} objects. Fix: send a list.")
        with self._lock(rel):
            doc = self.load(rel)
            if int(base_revision) != int(doc["revision"]):
                raise HTTPProblem(409, f"the annotations of {rel!r} changed since revision {base_revision} (now "
                                       f"{doc['revision']}). Fix: reload them, then save again.")
            size = (doc["height"], doc["width"])
            clean = [clean_object(o, size, i + 1) for i, o in enumerate(objects)]
            ids = [o["id"] for o in clean]
            if len(set(ids)) != len(ids):
                raise InputError("two objects share an id. Fix: give every object its own id.")
            doc.update(objects=clean, revision=int(doc["revision"]) + 1)
            self._write(rel, doc)
            return doc

    def add_object(self, rel: str, obj: dict) -> dict:
        """Append one object (a new id when it has none or its id is taken); returns it with the
        document's new revision."""
        with self._lock(rel):
            doc = self.load(rel)
            if len(doc["objects"]) >= MAX_OBJECTS:
                raise InputError(f"{rel!r} already has {MAX_OBJECTS} objects. Fix: remove some first.")
            taken = {o["id"] for o in doc["objects"]}
            next_id = max(taken, default=0) + 1
            clean = clean_object(obj, (doc["height"], doc["width"]), next_id)
            if clean["id"] in taken or "id" not in obj:
                clean["id"] = next_id
            doc["objects"].append(clean)
            doc["revision"] = int(doc["revision"]) + 1
            self._write(rel, doc)
            return {"object": clean, "revision": doc["revision"]}

    def annotated_in(self, folder_rel: str) -> List[str]:
        """Images directly in ``folder_rel`` that have at least one saved object (sorted)."""
        folder = self.data.state_file("annotations", folder_rel) if folder_rel else \
            self.data.state_file("annotations")
        if not folder.is_dir():
            return []
        out = []
        for f in sorted(folder.glob("*.json")):
            rel = (folder_rel + "/" if folder_rel else "") + f.name[: -len(".json")]
            doc = self.read(rel)
            if doc and doc.get("kind") == "image" and doc.get("objects"):
                out.append(rel)
        return out

    # ------------------------------------------------------------------ videos
    def load_video(self, rel: str) -> Optional[dict]:
        doc = self.read(rel)
        return doc if doc and doc.get("kind") == "video" else None

    def save_video(self, rel: str, width: int, height: int, num_frames: int, frames: Dict[int, List[dict]],
                   prompts: Optional[List[dict]] = None) -> dict:
        """Replace the video document with ``frames`` ({t: [{id, label, rle, score}]}) and the
        tracker's ``prompts`` ([{frame, obj_id, points, labels, box}]; None keeps the saved ones),
        atomically."""
        with self._lock(rel):
            old = self.load_video(rel) or {"revision": 0}
            doc = {"format": FORMAT, "version": VERSION, "kind": "video", "path": rel, "width": width,
                   "height": height, "num_frames": num_frames, "revision": int(old["revision"]) + 1,
                   "frames": {str(t): objs for t, objs in sorted(frames.items())},
                   "prompts": list(old.get("prompts") or []) if prompts is None else list(prompts)}
            self._write(rel, doc)
            return doc
