"""What to label: ``SRC`` -> a list of ``Item`` (one per image), and the boxes of ``--boxes``.

``SRC`` is one of
* a folder: every image below it (extensions in ``IMAGE_EXTS``, any case; hidden files and
  folders and the output folder skipped), named by their path relative to the folder;
* a glob (``"frames/**/*.jpg"``; quote it), named relative to the folder before the first wildcard;
* a COCO JSON (``images`` with ``id`` and ``file_name``, resolved against ``image_root``, default
  the JSON's folder), keeping the COCO image ids;
* a text file (``.txt``, ``.lst``, ``.list``) with one path or URI per line (``#`` comments),
  relative paths resolved against the list's folder;
* a single image file;
* an fsspec URI (``s3://bucket/frames/``, ``gs://.../*.jpg``, ``memory://...``) of any of these,
  read with ``fsspec`` when it and the filesystem's package are installed (imported lazily).

``Item.ident`` says whether an image changed since a previous run without reading it: size and
modification time for local files, size and ETag / mtime from a remote listing, else the URI
alone (objects named in a list file are taken as immutable).
"""
from __future__ import annotations

import glob as globlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ImageError, InputError, MissingExtraError, require

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm")
LIST_EXTS = (".txt", ".lst", ".list")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_WILD = re.compile(r"[*?\[]")
_HOW = ("Fix: pass a folder of images, a quoted glob such as 'frames/*.jpg', a COCO JSON with an `images` list, "
        "or a text file with one image path or URI per line.")


@dataclass(frozen=True)
class Item:
    """One input image: ``uri`` (local absolute path or fsspec URI), ``name`` (its ``file_name``
    in the outputs), ``image_id`` (COCO id), ``ident`` (change detector, module docstring),
    ``boxes`` (``boxes`` mode: JSON ``[[x, y, w, h, category_id, annotation_id], ...]``)."""

    uri: str
    name: str
    image_id: int
    ident: str
    boxes: str = ""

    def row(self) -> dict:
        return {"uri": self.uri, "name": self.name, "image_id": self.image_id, "ident": self.ident,
                "boxes": self.boxes}


def is_uri(text: str) -> bool:
    return bool(_URI.match(str(text)))


def filesystem(uri: str):
    """(fsspec filesystem, path) for ``uri``; a clear error when fsspec or its backend is missing."""
    fsspec = require("fsspec", "remote", f"Reading {uri.split('://')[0]}:// URIs")
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise MissingExtraError(f"cannot open {uri}: {exc}. Fix: install the filesystem package it names "
                                "(e.g. pip install s3fs / gcsfs / adlfs).") from None
    except ValueError as exc:
        raise InputError(f"cannot open {uri}: {exc}. Fix: check the URI's protocol.") from None
    return fs, path


def read_bytes(uri: str) -> bytes:
    """The bytes of one image (local path or fsspec URI)."""
    if is_uri(uri):
        fs, path = filesystem(uri)
        with fs.open(path, "rb") as fh:
            return fh.read()
    with open(uri, "rb") as fh:
        return fh.read()


def _local_ident(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _remote_ident(info: Optional[dict]) -> str:
    if not info:
        return "uri"
    tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("mtime") or info.get("LastModified")
    return f"{info.get('size', '?')}:{tag}"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def list_items(src: str, out: Optional[Path] = None, image_root: Optional[str] = None) -> List[Item]:
    """The images of ``src`` (module docstring), in a fixed order; InputError when there are none."""
    src = os.fspath(src)
    if is_uri(src) and not src.startswith("file://"):
        items = _remote_items(src, image_root)
    else:
        if src.startswith("file://"):
            src = src[len("file://"):]
        items = _local_items(src, out, image_root)
    if not items:
        raise InputError(f"{src} holds no images (looked for {', '.join(IMAGE_EXTS)}). {_HOW}")
    return _dedupe(items)


def _dedupe(items: List[Item]) -> List[Item]:
    seen, out = set(), []
    for it in items:
        if it.uri not in seen:
            seen.add(it.uri)
            out.append(it)
    return out


def _numbered(rows: Sequence[Tuple[str, str, str]]) -> List[Item]:
    return [Item(uri, name, i + 1, ident) for i, (uri, name, ident) in enumerate(rows)]


def _local_items(src: str, out: Optional[Path], image_root: Optional[str]) -> List[Item]:
    path = Path(src).expanduser()
    skip = Path(out).resolve() if out is not None else None
    if path.is_dir():
        rows = []
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (skip is None or Path(root, d).resolve()
                                                                           != skip))
            for f in files:
                if _is_image(f) and not f.startswith("."):
                    full = Path(root, f)
                    rows.append((str(full.resolve()), full.relative_to(path).as_posix()))
        rows.sort(key=lambda r: r[1])
        return _numbered([(u, n, _local_ident(u)) for u, n in rows])
    if path.is_file():
        low = path.name.lower()
        if low.endswith(".json"):
            return coco_items(_read_json(str(path)), image_root or str(path.parent), src)
        if low.endswith(LIST_EXTS):
            return _list_items(path.read_text(encoding="utf-8", errors="replace"), str(path.parent), src)
        if _is_image(low):
            return _numbered([(str(path.resolve()), path.name, _local_ident(str(path)))])
        raise InputError(f"{src} is neither an image, a COCO JSON nor a list of images (.txt). {_HOW}")
    if _WILD.search(src):
        matches = sorted(m for m in globlib.glob(os.path.expanduser(src), recursive=True)
                         if os.path.isfile(m) and _is_image(m))
        if not matches:
            raise InputError(f"the glob {src!r} matches no image files. Fix: check the pattern (quote it so that "
                             "the shell does not expand it; '**' matches sub-folders) and the extensions "
                             f"({', '.join(IMAGE_EXTS)}).")
        base = _glob_base(os.path.expanduser(src))
        return _numbered([(str(Path(m).resolve()), Path(os.path.relpath(m, base)).as_posix(), _local_ident(m))
                          for m in matches])
    raise InputError(f"{src} does not exist. {_HOW}")


def _glob_base(pattern: str) -> str:
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if _WILD.search(p))]]
    return os.path.join(*fixed) if fixed else "."


def _resolve(ref: str, base: str) -> str:
    if is_uri(ref):
        return ref[len("file://"):] if ref.startswith("file://") else ref
    if is_uri(base):
        return base.rstrip("/") + "/" + ref
    p = Path(ref).expanduser()
    return str((p if p.is_absolute() else Path(base) / p).resolve())


def _ident_of(uri: str) -> str:
    return "uri" if is_uri(uri) else _local_ident(uri)


def _list_items(text: str, base: str, src: str) -> List[Item]:
    lines = [ln.strip() for ln in text.splitlines()]
    refs = [ln for ln in lines if ln and not ln.startswith("#")]
    if not refs:
        raise InputError(f"the list {src} names no images. Fix: write one image path or URI per line.")
    return _numbered([(_resolve(r, base), r, _ident_of(_resolve(r, base))) for r in refs])


def _read_json(path: str) -> dict:
    try:
        if is_uri(path):
            doc = json.loads(read_bytes(path).decode("utf-8"))
        else:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read the JSON file {path}: {exc}. Fix: pass a COCO JSON file.") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path} is not a COCO JSON document (an object with `images`). Fix: pass a COCO file.")
    return doc


def coco_items(doc: dict, base: str, src: str) -> List[Item]:
    """Items of a COCO document's ``images`` (``file_name`` resolved against ``base``)."""
    images = doc.get("images")
    if not isinstance(images, list):
        raise InputError(f"{src} has no `images` list. Fix: pass a COCO JSON (images with id and file_name).")
    items = []
    for k, im in enumerate(images):
        if not isinstance(im, dict) or "file_name" not in im or not isinstance(im.get("id"), int):
            raise InputError(f"{src}: images[{k}] lacks an integer `id` or a `file_name`. Fix: give every image "
                             "both, as COCO does.")
        uri = _resolve(str(im["file_name"]), base)
        items.append(Item(uri, str(im["file_name"]), int(im["id"]), _ident_of(uri)))
    if len({it.image_id for it in items}) != len(items):
        raise InputError(f"{src} gives the same image id to several images. Fix: make the ids unique.")
    return items


def _remote_items(src: str, image_root: Optional[str]) -> List[Item]:
    fs, path = filesystem(src)
    proto = src.split("://", 1)[0]

    def uri(p: str) -> str:
        return p if is_uri(p) else f"{proto}://{p.lstrip('/') if proto != 'memory' else p}"

    if _WILD.search(path):
        found = fs.glob(path, detail=True)
        base = _glob_base(path)
    elif fs.isdir(path):
        found = fs.find(path, detail=True)
        base = path
    else:
        low = path.lower()
        if low.endswith(".json"):
            return coco_items(_read_json(src), image_root or src.rsplit("/", 1)[0], src)
        if low.endswith(LIST_EXTS):
            return _list_items(read_bytes(src).decode("utf-8", errors="replace"), src.rsplit("/", 1)[0], src)
        if fs.exists(path):
            return _numbered([(src, PurePosixPath(path).name, _remote_ident(fs.info(path)))])
        raise InputError(f"{src} does not exist. {_HOW}")
    rows = []
    for p, info in sorted(found.items()):
        rel = PurePosixPath(p).relative_to(PurePosixPath(base)).as_posix() if p.startswith(base) else p
        if info.get("type", "file") == "file" and _is_image(p) and not _hidden(rel):
            rows.append((uri(p), rel, _remote_ident(info)))
    if not rows and _WILD.search(path):
        raise InputError(f"the glob {src!r} matches no image files. Fix: check the pattern and the extensions.")
    return _numbered(rows)


# ----------------------------------------------------------------------------- boxes
def attach_boxes(items: List[Item], doc: dict, src: str) -> Tuple[List[Item], List[dict]]:
    """Give every item its boxes from a COCO detection document; returns (items, categories).

    Images of the document are matched to items by ``file_name`` (the item's name, else its
    file name when that is unique); a document image that matches no item is an InputError
    (naming a few), and so is an annotation without a 4-number ``bbox``. Items without boxes
    get none (they are labelled with no masks)."""
    images = doc.get("images")
    anns = doc.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise InputError(f"the boxes file {src} lacks `images` or `annotations`. Fix: pass a COCO detection file "
                         "(images, annotations with bbox [x, y, w, h] and category_id, categories).")
    by_name = {it.name: it for it in items}
    by_base: Dict[str, List[Item]] = {}
    for it in items:
        by_base.setdefault(PurePosixPath(it.name).name, []).append(it)
    target: Dict[int, Item] = {}
    missing = []
    for im in images:
        name = str(im.get("file_name", "")) if isinstance(im, dict) else ""
        it = by_name.get(name)
        if it is None and len(by_base.get(PurePosixPath(name).name, [])) == 1:
            it = by_base[PurePosixPath(name).name][0]
        if it is None:
            missing.append(name or repr(im)[:40])
        elif isinstance(im.get("id"), int):
            target[im["id"]] = it
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise InputError(f"the boxes file {src} names {len(missing)} image(s) that are not in SRC: {shown}. Fix: "
                         "pass the SRC these detections were made on, or remove those images from the boxes file.")
    boxes: Dict[str, list] = {}
    for k, a in enumerate(anns):
        bbox = a.get("bbox") if isinstance(a, dict) else None
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise InputError(f"the boxes file {src}: annotations[{k}] has no bbox [x, y, w, h]. Fix: give every "
                             "annotation a COCO bbox.")
        it = target.get(a.get("image_id"))
        if it is None:
            raise InputError(f"the boxes file {src}: annotations[{k}] refers to image id {a.get('image_id')!r}, "
                             "which its `images` list does not have. Fix: list every image the boxes refer to.")
        cat = a.get("category_id", 1)
        boxes.setdefault(it.uri, []).append([float(v) for v in bbox] + [int(cat), int(a.get("id", k + 1))])
    out = [Item(it.uri, it.name, it.image_id, it.ident, json.dumps(boxes.get(it.uri, []))) for it in items]
    return out, _categories(doc, boxes)


def _categories(doc: dict, boxes: Dict[str, list]) -> List[dict]:
    cats = doc.get("categories")
    if isinstance(cats, list) and cats and all(isinstance(c, dict) and "id" in c for c in cats):
        return [{"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in cats]
    used = sorted({b[4] for rows in boxes.values() for b in rows})
    return [{"id": c, "name": str(c)} for c in used]


def read_boxes_file(path: str) -> dict:
    """The COCO detection document of ``--boxes`` (local path or URI)."""
    if not is_uri(path) and not Path(path).is_file():
        raise InputError(f"the boxes file {path} does not exist. Fix: pass a COCO JSON with the detections.")
    return _read_json(path)


def decode_error(uri: str, exc: BaseException) -> str:
    """One-line reason for the failures file."""
    if isinstance(exc, ImageError):
        return " ".join(str(exc).split())
    if isinstance(exc, OSError):
        return f"cannot read {uri}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
