"""``Masks``: the one validated result type of every predictor, and its exporters.

Conventions (all exporters agree on them):

* Pixel ``(row, col)`` covers the square ``[col, col + 1) x [row, row + 1)`` in image coordinates.
* Boxes are ``x1, y1, x2, y2`` with an EXCLUSIVE end: ``x1`` = first column, ``x2`` = last
  column + 1, so ``x2 - x1`` is the width in pixels and ``(x1, y1, x2 - x1, y2 - y1)`` equals
  the COCO ``[x, y, w, h]`` box of the same mask (``pycocotools.mask.toBbox``). Empty masks get
  ``[0, 0, 0, 0]``.
* Polygon vertices are PIXEL CENTRES (x = column, y = row) of boundary pixels, as
  ``cv2.findContours`` returns them; filling a polygon including its outline (``cv2.fillPoly``,
  LabelMe / PIL ``ImageDraw.polygon(fill, outline)``) reproduces the pixels.
* Holes: ``to_polygons(holes=True)`` returns the outer ring of every connected part followed by
  one ring around the pixels of each hole (opposite winding: outer rings have positive shoelace
  area with y pointing down, holes negative); ``from_polygons`` fills rings with the even-odd
  rule (XOR), which restores holes and islands inside holes; at ``tolerance=0`` extra rings are
  added where needed (pixels joined to their part only diagonally) so the round trip is exact.
  ``holes=False`` returns outer rings only (holes filled) and is what YOLO and LabelMe get, as
  those formats cannot express holes. ``tolerance > 0`` simplifies rings (Douglas-Peucker, in
  pixels): smooth masks keep IoU >= 0.95 at the default 1.0 (tested), tiny masks may lose more.
* COCO RLE is column-major with the first run counting zeros; ``rle_encode`` / ``rle_decode``
  implement the uncompressed form in numpy, pycocotools the compressed string form.
"""
from __future__ import annotations

import colorsys
import io
import json
import operator
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Union

import numpy as np
from PIL import Image

from .errors import InputError, require
from .io.atomic import atomic_write_bytes, atomic_write_text
from .mask_codecs import mask_to_polygons, polygons_to_mask, rle_decode, rle_encode  # noqa: F401 (public here)

LABELME_VERSION = "5.4.1"  # LabelMe JSON format version written by to_labelme


# --------------------------------------------------------------------------- helpers


def mask_color(k: int) -> np.ndarray:
    """Distinct, deterministic RGB uint8 colour (3,) for mask ``k`` (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895 + 0.1) % 1.0, 0.7, 0.95)
    return np.array([round(r * 255), round(g * 255), round(b * 255)], dtype=np.uint8)


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _vector(name: str, value: Any, k: int, kind: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != (k,):
        raise InputError(
            f"Masks.{name} has shape {arr.shape}, expected ({k},): one value per mask. "
            f"Fix: pass exactly {k} {name}."
        )
    if kind == "int":
        if arr.dtype.kind not in "iu":
            raise InputError(f"Masks.{name} has dtype {arr.dtype}, expected integers. Fix: pass {name}.astype(int).")
        return arr.astype(np.int64)
    if arr.dtype.kind not in "fiub":
        raise InputError(f"Masks.{name} has dtype {arr.dtype}, expected numbers. Fix: pass a float array.")
    return arr.astype(np.float32)


# --------------------------------------------------------------------------- Masks


@dataclass(frozen=True, eq=False, repr=False)
class Masks:
    """K binary masks of one H x W image with their scores and optional metadata.

    Fields (validated on construction; fields cannot be reassigned):
        masks: K x H x W bool (integer arrays are accepted as ``!= 0``; floats are refused).
        scores: (K,) float32 predicted quality (IoU); ``None`` means 1.0 for every mask.
        low_res_logits: K x h x w float32 decoder logits (256 x 256 for the SAM family) or None.
        ids: (K,) int64 object ids (video tracking, automatic masks) or None.
        labels: list of K str or None.
        stability: (K,) float32 stability scores or None.
        label_scores: (K,) float32 confidence of each label (open vocabulary: the mask-pooled CLIP
            probability of the label, ``samkit.vocab``) or None; needs ``labels``.
    """

    masks: np.ndarray
    scores: Optional[np.ndarray] = None
    low_res_logits: Optional[np.ndarray] = None
    ids: Optional[np.ndarray] = None
    labels: Optional[List[str]] = None
    stability: Optional[np.ndarray] = None
    label_scores: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        m = np.asarray(self.masks)
        if m.ndim != 3:
            raise InputError(
                f"Masks.masks has shape {m.shape}, expected K x H x W. Fix: for one H x W mask pass mask[None]."
            )
        if m.dtype != bool:
            if m.dtype.kind not in "iu":
                raise InputError(
                    f"Masks.masks has dtype {m.dtype}, expected bool. Fix: threshold first, e.g. logits > 0 "
                    "or probabilities > 0.5."
                )
            m = m != 0
        k, h, w = m.shape
        if h == 0 or w == 0:
            raise InputError(f"Masks.masks has zero image size {h} x {w}. Fix: masks must cover an image of >= 1 px.")
        put = object.__setattr__
        put(self, "masks", m)
        scores = np.ones(k, np.float32) if self.scores is None else _vector("scores", self.scores, k, "float")
        put(self, "scores", scores)
        if self.low_res_logits is not None:
            lr = np.asarray(self.low_res_logits)
            if lr.ndim != 3 or lr.shape[0] != k or lr.dtype.kind not in "fiu":
                raise InputError(
                    f"Masks.low_res_logits has shape {lr.shape} dtype {lr.dtype}, expected {k} x 256 x 256 "
                    "float32. Fix: pass the decoder's low-resolution logits, one per mask, or None."
                )
            put(self, "low_res_logits", lr.astype(np.float32))
        if self.ids is not None:
            put(self, "ids", _vector("ids", self.ids, k, "int"))
        if self.stability is not None:
            put(self, "stability", _vector("stability", self.stability, k, "float"))
        if self.labels is not None:
            labels = list(self.labels) if not isinstance(self.labels, str) else None
            if labels is None or len(labels) != k or not all(isinstance(s, str) for s in labels):
                raise InputError(
                    f"Masks.labels must be a list of {k} strings (one per mask), got {self.labels!r:.80}. "
                    "Fix: pass [str(x) for x in labels] or None."
                )
            put(self, "labels", labels)
        if self.label_scores is not None:
            if self.labels is None:
                raise InputError("Masks.label_scores were given without labels. Fix: pass labels=[...] with "
                                 "them (one str per mask), or leave label_scores=None.")
            put(self, "label_scores", _vector("label_scores", self.label_scores, k, "float"))

    # ---- basics

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def __iter__(self) -> Iterator["Masks"]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        extra = [f for f in ("low_res_logits", "ids", "labels", "stability", "label_scores")
                 if getattr(self, f) is not None]
        scores = np.array2string(self.scores[:5], precision=3)
        tail = "".join(f", {f}" for f in extra)
        return f"Masks(K={len(self)}, H={self.height}, W={self.width}, scores={scores}{tail})"

    @property
    def height(self) -> int:
        return int(self.masks.shape[1])

    @property
    def width(self) -> int:
        return int(self.masks.shape[2])

    def _index(self, idx: Any) -> np.ndarray:
        k = len(self)
        if isinstance(idx, (int, np.integer)) and not isinstance(idx, (bool, np.bool_)):
            i = operator.index(idx)
            if not -k <= i < k:
                raise IndexError(f"mask index {i} is out of range for {k} masks")
            return np.array([i % k])
        if isinstance(idx, slice):
            return np.arange(k)[idx]
        arr = np.asarray(idx)
        if arr.size == 0 and arr.ndim == 1:
            return np.zeros(0, np.int64)
        if arr.dtype == bool:
            if arr.shape != (k,):
                raise IndexError(f"boolean index has shape {arr.shape}, expected ({k},)")
            return np.flatnonzero(arr)
        if arr.dtype.kind in "iu" and arr.ndim == 1:
            return np.arange(k)[arr]
        raise InputError(
            f"cannot index Masks with {type(idx).__name__}. Fix: use an int, a slice, a bool array of "
            f"length {k} or a 1-D int array."
        )

    def __getitem__(self, idx: Any) -> "Masks":
        """Select masks -> a new ``Masks`` (an int gives K = 1, keeping the K x H x W layout)."""
        sel = self._index(idx)
        pick = lambda a: None if a is None else a[sel]  # noqa: E731
        return Masks(
            masks=self.masks[sel], scores=self.scores[sel], low_res_logits=pick(self.low_res_logits),
            ids=pick(self.ids), labels=None if self.labels is None else [self.labels[i] for i in sel],
            stability=pick(self.stability), label_scores=pick(self.label_scores),
        )

    @classmethod
    def empty(cls, height: int, width: int) -> "Masks":
        """No masks (K = 0) for an image of ``height`` x ``width``."""
        return cls(np.zeros((0, int(height), int(width)), bool), np.zeros(0, np.float32))

    @classmethod
    def concatenate(cls, items: Sequence["Masks"]) -> "Masks":
        """Join several ``Masks`` of the same image; optional fields survive if all items have them
        (``label_scores`` only together with ``labels``)."""
        items = list(items)
        if not items:
            raise InputError("Masks.concatenate got no items. Fix: pass at least one Masks, or use Masks.empty(h, w).")
        if len({(m.height, m.width) for m in items}) != 1:
            raise InputError("Masks.concatenate got masks of different image sizes. Fix: join masks of one image only.")

        def cat(field: str):
            vals = [getattr(m, field) for m in items]
            if any(v is None for v in vals):
                return None
            return sum(vals, []) if field == "labels" else np.concatenate(vals)

        labels = cat("labels")
        return cls(cat("masks"), cat("scores"), cat("low_res_logits"), cat("ids"), labels, cat("stability"),
                   None if labels is None else cat("label_scores"))

    @property
    def areas(self) -> np.ndarray:
        """(K,) int64 pixel counts."""
        return self.masks.sum(axis=(1, 2), dtype=np.int64)

    @property
    def boxes(self) -> np.ndarray:
        """K x 4 float32 ``x1, y1, x2, y2`` with exclusive ends (see module docstring)."""
        rows, cols = self.masks.any(axis=2), self.masks.any(axis=1)
        y1, y2 = rows.argmax(1), self.height - rows[:, ::-1].argmax(1)
        x1, x2 = cols.argmax(1), self.width - cols[:, ::-1].argmax(1)
        boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
        boxes[~rows.any(1)] = 0
        return boxes.reshape(-1, 4)

    def best(self) -> "Masks":
        """The single highest-scoring mask (K = 1; first one on ties; K = 0 stays empty)."""
        return self if len(self) == 0 else self[int(np.argmax(self.scores))]

    def sorted(self, by: str = "score", descending: bool = True) -> "Masks":
        """Reorder by ``"score"``, ``"area"``, ``"stability"``, ``"id"`` or ``"label_score"`` (stable sort)."""
        keys = {"score": self.scores, "area": self.areas, "stability": self.stability, "id": self.ids,
                "label_score": self.label_scores}
        if by not in keys or keys[by] is None:
            have = [n for n, v in keys.items() if v is not None]
            raise InputError(f"cannot sort masks by {by!r}. Fix: use one of {', '.join(have)}.")
        key = keys[by].astype(np.float64)
        return self[np.argsort(-key if descending else key, kind="stable")]

    # ---- COCO RLE

    def to_coco_rle(self, compressed: bool = True) -> List[dict]:
        """K COCO RLE dicts ``{"size": [H, W], "counts": ...}``, JSON-serialisable.

        ``compressed=True``: counts is the compressed ASCII string (needs pycocotools).
        ``compressed=False``: counts is a list of run lengths (pure numpy).
        """
        if not compressed:
            return [rle_encode(m) for m in self.masks]
        mask_utils = require(
            "pycocotools.mask", "coco",
            "Compressed COCO RLE (Masks.to_coco_rle; or pass compressed=False for the pure-numpy form)",
        )
        if len(self) == 0:
            return []
        enc = mask_utils.encode(np.asfortranarray(self.masks.transpose(1, 2, 0).astype(np.uint8)))
        return [{"size": [self.height, self.width], "counts": r["counts"].decode("ascii")} for r in enc]

    @classmethod
    def from_coco_rle(cls, rles: Union[dict, Sequence[dict]], scores: Any = None, **fields: Any) -> "Masks":
        """Decode COCO RLE dicts (compressed or not) -> ``Masks``; extra fields go to the constructor."""
        rles = [rles] if isinstance(rles, dict) else list(rles)
        if not rles:
            raise InputError("from_coco_rle got no RLEs, so the image size is unknown. Fix: use Masks.empty(h, w).")
        masks = [rle_decode(r) for r in rles]
        if len({m.shape for m in masks}) != 1:
            raise InputError("the RLEs have different sizes. Fix: pass RLEs of masks of one image.")
        return cls(np.stack(masks), scores, **fields)

    # ---- polygons, YOLO, LabelMe

    def to_polygons(self, tolerance: float = 1.0, holes: bool = True) -> List[List[np.ndarray]]:
        """Per mask, a list of N x 2 float64 rings (x, y pixel centres); holes as described above."""
        return [mask_to_polygons(m, tolerance, holes) for m in self.masks]

    @classmethod
    def from_polygons(cls, polygons: Sequence[Sequence[Any]], height: int, width: int,
                      scores: Any = None, **fields: Any) -> "Masks":
        """Rasterise per-mask ring lists (even-odd fill) into an H x W ``Masks``."""
        masks = [polygons_to_mask(rings, height, width) for rings in polygons]
        stack = np.stack(masks) if masks else np.zeros((0, height, width), bool)
        return cls(stack, scores, **fields)

    def _class_ids(self, class_ids: Any, names: Optional[Sequence[str]]) -> List[int]:
        k = len(self)
        if class_ids is not None:
            ids = np.broadcast_to(np.asarray(class_ids), (k,))
            if ids.dtype.kind not in "iu" or (ids < 0).any():
                raise InputError("class_ids must be non-negative integers. Fix: pass an int or K ints.")
            return [int(c) for c in ids]
        if names is not None:
            if self.labels is None:
                raise InputError("names given but these masks have no labels. Fix: pass class_ids instead.")
            missing = sorted(set(self.labels) - set(names))
            if missing:
                raise InputError(f"labels {missing} are not in names. Fix: add them to the class names list.")
            return [list(names).index(lbl) for lbl in self.labels]
        return [0] * k

    def to_yolo(self, path: Union[str, os.PathLike, None] = None, class_ids: Any = None,
                names: Optional[Sequence[str]] = None, tolerance: float = 1.0) -> str:
        """YOLO segmentation text: one line ``class x1 y1 x2 y2 ...`` per connected part.

        Coordinates are pixel centres divided by (W, H), clipped to [0, 1], 6 decimals. Holes are
        filled and parts with fewer than 3 vertices are skipped (YOLO cannot express them). The
        class is ``class_ids`` (int or K ints), else the index of each label in ``names``, else 0.
        Writes ``path`` atomically when given; always returns the text.
        """
        classes = self._class_ids(class_ids, names)
        scale = np.array([self.width, self.height], np.float64)
        lines = []
        for k, rings in enumerate(self.to_polygons(tolerance, holes=False)):
            for ring in rings:
                if len(ring) >= 3:
                    xy = np.clip(ring / scale, 0.0, 1.0).ravel()
                    lines.append(f"{classes[k]} " + " ".join(f"{v:.6f}" for v in xy))
        text = "".join(line + "\n" for line in lines)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_yolo(cls, src: Union[str, os.PathLike], height: int, width: int,
                  names: Optional[Sequence[str]] = None) -> "Masks":
        """Read YOLO segmentation text (or a path to it): one mask per line, labels = class
        names from ``names`` or the class number as a string."""
        is_file = isinstance(src, os.PathLike) or ("\n" not in str(src) and os.path.isfile(str(src)))
        text = Path(src).read_text() if is_file else str(src)
        rings, labels = [], []
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                cls_id, vals = int(parts[0]), np.array([float(v) for v in parts[1:]])
            except ValueError as exc:
                raise InputError(
                    f"YOLO line {n} is not 'class x y x y ...': {line[:60]!r}. Fix: check the file."
                ) from exc
            if len(vals) < 6 or len(vals) % 2:
                raise InputError(f"YOLO line {n} needs an even number (>= 6) of coordinates. Fix: check the file.")
            rings.append([vals.reshape(-1, 2) * [width, height]])
            labels.append(names[cls_id] if names is not None else str(cls_id))
        return cls.from_polygons(rings, height, width, labels=labels)

    def to_labelme(self, image_path: Union[str, os.PathLike], image_size: Optional[Sequence[int]] = None,
                   path: Union[str, os.PathLike, None] = None, tolerance: float = 1.0) -> dict:
        """LabelMe JSON dict (one ``polygon`` shape per connected part, holes filled).

        ``image_path`` is stored as given (LabelMe resolves it relative to the JSON file);
        ``image_size`` (H, W), if given, must match the masks. Shapes of one mask share
        ``group_id`` (its id, else its index); label is its label, else ``"object"``. Writes
        ``path`` atomically when given.
        """
        if image_size is not None and tuple(int(v) for v in image_size) != (self.height, self.width):
            raise InputError(
                f"image_size {tuple(image_size)} does not match the masks ({self.height}, {self.width}). "
                "Fix: pass (height, width) of the image these masks were predicted on."
            )
        shapes = []
        for k, rings in enumerate(self.to_polygons(tolerance, holes=False)):
            label = self.labels[k] if self.labels is not None else "object"
            group = int(self.ids[k]) if self.ids is not None else k
            for ring in rings:
                if len(ring) >= 3:
                    shapes.append({"label": label, "points": ring.tolist(), "group_id": group, "description": "",
                                   "shape_type": "polygon", "flags": {}, "mask": None})
        data = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes, "imagePath": os.fspath(image_path),
                "imageData": None, "imageHeight": self.height, "imageWidth": self.width}
        if path is not None:
            atomic_write_text(path, json.dumps(data, indent=2))
        return data

    @classmethod
    def from_labelme(cls, data: Union[dict, str, os.PathLike]) -> "Masks":
        """LabelMe JSON (dict or path) -> ``Masks``: polygon/rectangle shapes sharing a
        ``group_id`` and label are one mask (union); shapes without ``group_id`` are one each."""
        if not isinstance(data, dict):
            data = json.loads(Path(data).read_text())
        h, w = int(data["imageHeight"]), int(data["imageWidth"])
        groups: dict = {}
        for n, shape in enumerate(data.get("shapes", [])):
            pts = np.asarray(shape.get("points", []), np.float64).reshape(-1, 2)
            kind = shape.get("shape_type") or "polygon"
            if kind == "rectangle" and len(pts) == 2:
                (xa, ya), (xb, yb) = pts
                pts = np.array([[xa, ya], [xb, ya], [xb, yb], [xa, yb]])
            elif kind != "polygon":
                raise InputError(f"LabelMe shape {n} has shape_type {kind!r}. Fix: convert it to a polygon.")
            gid = shape.get("group_id")
            key = (shape.get("label", ""), gid) if gid is not None else ("", f"#{n}")
            groups.setdefault(key, (shape.get("label", ""), gid, []))[2].append(pts)
        masks, labels, ids = [], [], []
        for label, gid, rings in groups.values():
            masks.append(np.any([polygons_to_mask([r], h, w) for r in rings], axis=0))
            labels.append(str(label))
            ids.append(gid)
        stack = np.stack(masks) if masks else np.zeros((0, h, w), bool)
        with_ids = np.array(ids, np.int64) if ids and all(isinstance(i, int) for i in ids) else None
        return cls(stack, None, ids=with_ids, labels=labels)

    # ---- images

    def save_png(self, directory: Union[str, os.PathLike], stem: str = "mask") -> List[Path]:
        """Write ``{stem}_{k:03d}.png`` (mode L, 0/255) per mask and ``{stem}_index.png``.

        The index image holds k + 1 for mask k and 0 for background, painted largest area first
        so smaller masks stay visible where masks overlap. K <= 255: palette PNG (mode P, colours
        of ``mask_color``); K > 255: 16-bit grayscale PNG. Files are written atomically; the
        folder is created. Returns the paths, index image last.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for k, m in enumerate(self.masks):
            png = _png_bytes(Image.fromarray(m.astype(np.uint8) * 255))
            paths.append(atomic_write_bytes(out / f"{stem}_{k:03d}.png", png))
        index = np.zeros((self.height, self.width), np.uint16)
        for k in np.argsort(-self.areas, kind="stable"):
            index[self.masks[k]] = k + 1
        if len(self) <= 255:
            im = Image.frombytes("P", (self.width, self.height), index.astype(np.uint8).tobytes())
            palette = [0, 0, 0] + [int(c) for k in range(len(self)) for c in mask_color(k)]
            im.putpalette(palette + [0] * (768 - len(palette)))
        else:
            im = Image.frombytes("I;16", (self.width, self.height), index.astype("<u2").tobytes())
        paths.append(atomic_write_bytes(out / f"{stem}_index.png", _png_bytes(im)))
        return paths

    def overlay(self, image: Any, alpha: float = 0.5, outline: bool = True) -> np.ndarray:
        """H x W x 3 uint8: ``image`` (anything ``load_image`` takes) with masks painted largest
        first (smaller ones stay visible on top) in ``mask_color(k)`` at opacity ``alpha``, plus a
        1-px full-colour outline where a painted region meets another region or the background."""
        from .io.image import load_image

        img = load_image(image)
        if img.shape[:2] != (self.height, self.width):
            raise InputError(
                f"image is {img.shape[1]} x {img.shape[0]} but the masks are {self.width} x {self.height}. "
                "Fix: overlay onto the image the masks were predicted on."
            )
        if not 0.0 <= float(alpha) <= 1.0:
            raise InputError(f"alpha={alpha} is outside [0, 1]. Fix: pass an opacity such as 0.5.")
        index = np.zeros((self.height, self.width), np.int32)
        for k in np.argsort(-self.areas, kind="stable"):
            index[self.masks[k]] = k + 1
        palette = np.stack([np.zeros(3, np.uint8)] + [mask_color(k) for k in range(len(self))]).astype(np.float32)
        out = img.astype(np.float32)
        hit = index > 0
        out[hit] = out[hit] * (1.0 - alpha) + palette[index[hit]] * alpha
        if outline:
            p = np.pad(index, 1)
            edge = hit & ((p[:-2, 1:-1] != index) | (p[2:, 1:-1] != index)
                          | (p[1:-1, :-2] != index) | (p[1:-1, 2:] != index))
            out[edge] = palette[index[edge]]
        return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)

    # ---- summaries and other libraries

    def to_json(self, rle: str = "auto") -> dict:
        """JSON-ready summary: image size and, per mask, index, score, area, box (x1 y1 x2 y2,
        exclusive end), COCO RLE, and id / label / label_score / stability when present.

        ``rle``: ``"compressed"`` (pycocotools), ``"uncompressed"`` (numpy), or ``"auto"`` (compressed
        when pycocotools is installed).
        """
        if rle == "auto":
            try:
                import pycocotools.mask  # noqa: F401
                rle = "compressed"
            except ImportError:
                rle = "uncompressed"
        if rle not in ("compressed", "uncompressed"):
            raise InputError(f"rle={rle!r} is not supported. Fix: use 'auto', 'compressed' or 'uncompressed'.")
        rles = self.to_coco_rle(compressed=rle == "compressed")
        boxes, areas, items = self.boxes, self.areas, []
        for k in range(len(self)):
            item = {"index": k, "score": float(self.scores[k]), "area": int(areas[k]),
                    "box": [float(v) for v in boxes[k]], "rle": rles[k]}
            if self.ids is not None:
                item["id"] = int(self.ids[k])
            if self.labels is not None:
                item["label"] = self.labels[k]
            if self.label_scores is not None:
                item["label_score"] = float(self.label_scores[k])
            if self.stability is not None:
                item["stability"] = float(self.stability[k])
            items.append(item)
        return {"height": self.height, "width": self.width, "count": len(self), "masks": items}

    def classify(self, vocabulary: Any, clip: Any, image: Any, **options: Any) -> "Masks":
        """These masks named from ``vocabulary`` ("coco", "lvis", "ade20k", a file or a list of
        names) with ``clip`` (a ``samkit.vocab.DenseClip``) on ``image`` (the one they were
        predicted on): a new ``Masks`` with ``labels`` and ``label_scores`` (mask-pooled CLIP
        probability of the label; ``samkit.vocab.classify``)."""
        from .vocab.classify import classify

        return classify(self, vocabulary, clip, image, **options)

    def to_supervision(self):
        """``supervision.Detections`` with xyxy boxes, masks, confidence, tracker_id (= ids) and
        ``data["class_name"]`` (= labels) when present."""
        sv = require("supervision", "supervision", "Masks.to_supervision")
        data = {"class_name": np.array(self.labels, dtype=object)} if self.labels is not None else {}
        return sv.Detections(xyxy=self.boxes.astype(np.float32), mask=self.masks.copy(),
                             confidence=self.scores.copy(), tracker_id=None if self.ids is None else self.ids.copy(),
                             data=data)
