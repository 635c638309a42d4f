"""Mask codecs in numpy: COCO RLE (uncompressed) and polygons (through OpenCV, the ``cv`` extra).

The conventions are those of :mod:`samkit.masks` (its module docstring): polygon vertices are pixel
centres, outer rings have positive shoelace area with y pointing down, holes negative, rings are
filled with the even-odd rule; COCO RLE is column-major with the first run counting zeros.
"""
from __future__ import annotations

from typing import Any, List, Sequence

import numpy as np

from .errors import InputError, require


# --------------------------------------------------------------------------- RLE (pure numpy)


def rle_encode(mask: np.ndarray) -> dict:
    """H x W bool mask -> uncompressed COCO RLE ``{"size": [H, W], "counts": [int, ...]}``.

    Runs alternate 0, 1, 0, ... over the column-major (Fortran) flattening; the first run counts
    zeros and is 0 when the first pixel is set. Same result as ``pycocotools`` before compression.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise InputError(f"rle_encode expects one H x W mask, got shape {m.shape}. Fix: encode masks one by one.")
    flat = m.ravel(order="F")
    if flat.size == 0:
        return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]]))
    if flat[0]:
        runs = np.concatenate([[0], runs])
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": [int(r) for r in runs]}


def rle_decode(rle: dict) -> np.ndarray:
    """COCO RLE dict -> H x W bool mask. Uncompressed (list counts) in numpy; compressed (str or
    bytes counts) through pycocotools."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"not a COCO RLE dict: {str(rle)[:80]!r}. Fix: pass {{'size': [H, W], 'counts': ...}}."
        ) from exc
    if isinstance(counts, (str, bytes)):
        mask_utils = require("pycocotools.mask", "coco", "Decoding compressed COCO RLE strings")
        raw = counts.encode("ascii") if isinstance(counts, str) else counts
        return np.ascontiguousarray(mask_utils.decode({"size": [h, w], "counts": raw}).astype(bool))
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if (c < 0).any() or int(c.sum()) != h * w:
        raise InputError(
            f"RLE counts sum to {int(c.sum())} but size {h} x {w} has {h * w} pixels (or a count is "
            "negative). Fix: pass the counts and size of the same mask."
        )
    flat = np.repeat(np.arange(len(c)) % 2 == 1, c)
    return np.ascontiguousarray(flat.reshape(w, h).T)


# --------------------------------------------------------------------------- polygons


def _cv2():
    return require("cv2", "cv", "Polygon conversion (to_polygons / from_polygons / to_yolo / to_labelme)")


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _ring(contour: np.ndarray, offset, tolerance: float, positive: bool) -> np.ndarray:
    cv2 = _cv2()
    if tolerance > 0 and len(contour) > 2:
        contour = cv2.approxPolyDP(contour, float(tolerance), True)
    ring = contour.reshape(-1, 2).astype(np.float64) + np.asarray(offset, np.float64)
    if len(ring) > 2 and (_shoelace(ring) < 0) == positive:
        ring = ring[::-1].copy()
    return ring


def mask_to_polygons(mask: np.ndarray, tolerance: float = 1.0, holes: bool = True) -> List[np.ndarray]:
    """H x W bool mask -> list of N x 2 float64 rings (x, y pixel centres); see module docstring.

    ``tolerance`` is the Douglas-Peucker distance in pixels (0 keeps every corner and the fill
    is exact). Outer rings come first (8-connected parts), then one ring per hole (4-connected
    background regions not touching the image border), then any correction rings.
    """
    cv2 = _cv2()
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    mode = cv2.RETR_CCOMP if holes else cv2.RETR_EXTERNAL  # EXTERNAL: no islands inside holes
    contours, hierarchy = cv2.findContours(m, mode, cv2.CHAIN_APPROX_SIMPLE)[-2:]
    if not contours:
        return []
    rings = [_ring(c, (0, 0), tolerance, True) for c, h in zip(contours, hierarchy[0]) if h[3] < 0]
    if holes and any(h[3] >= 0 for h in hierarchy[0]):
        n, lab, stats, _ = cv2.connectedComponentsWithStats((m == 0).astype(np.uint8), connectivity=4)
        H, W = m.shape
        for j in range(1, n):
            x, y, w, h = (int(v) for v in stats[j, :4])
            if x == 0 or y == 0 or x + w == W or y + h == H:
                continue  # touches the border: background, not a hole
            crop = (lab[y:y + h, x:x + w] == j).astype(np.uint8)
            hc = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
            rings.extend(_ring(c, (x, y), tolerance, False) for c in hc)
        for _ in range(3 if tolerance <= 0 else 0):  # exactness: pixels joined only diagonally
            diff = polygons_to_mask(rings, *m.shape) != (m > 0)  # inside a hole get rings of their own
            if not diff.any():
                break
            dc = cv2.findContours(diff.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[-2]
            rings.extend(_ring(c, (0, 0), 0, True) for c in dc)
    return rings


def polygons_to_mask(rings: Sequence[Any], height: int, width: int) -> np.ndarray:
    """Fill rings (each N x 2 x, y) with the even-odd rule -> H x W bool (outline included)."""
    cv2 = _cv2()
    canvas = np.zeros((height, width), np.uint8)
    for ring in rings:
        pts = np.asarray(ring, dtype=np.float64).reshape(-1, 2)
        if len(pts) == 0:
            continue
        if not np.isfinite(pts).all():
            raise InputError("a polygon has NaN or infinite coordinates. Fix: pass finite x, y vertices.")
        p = np.rint(pts).astype(np.int64)
        x0, y0 = max(int(p[:, 0].min()), 0), max(int(p[:, 1].min()), 0)
        x1, y1 = min(int(p[:, 0].max()), width - 1), min(int(p[:, 1].max()), height - 1)
        if x1 < x0 or y1 < y0:
            continue  # entirely outside the image
        sub = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        cv2.fillPoly(sub, [(p - [x0, y0]).astype(np.int32).reshape(-1, 1, 2)], 1)
        canvas[y0:y1 + 1, x0:x1 + 1] ^= sub
    return canvas.astype(bool)
