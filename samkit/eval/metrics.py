"""Segmentation metrics with the definitions of the official evaluators.

* ``region_similarity`` (DAVIS J): intersection over union of two boolean masks, with the
  DAVIS convention that two empty masks score 1. Optional ``void`` pixels are ignored.
* ``boundary_map`` (DAVIS / BSDS ``seg2bmap``): one-pixel-wide boundaries, offset half a pixel
  towards the origin: a pixel is a boundary pixel when it differs from its east, south or
  south-east neighbour; the last row compares with the east neighbour only, the last column
  with the south neighbour only, and the bottom-right pixel is never a boundary.
* ``boundary_f`` (DAVIS F): tolerance ``ceil(bound_th * image diagonal)`` pixels when
  ``bound_th < 1`` (else ``bound_th`` pixels); each boundary is dilated with a disk of that
  radius (offsets with dx^2 + dy^2 <= r^2); precision = predicted boundary pixels inside the
  dilated ground-truth boundary / predicted boundary pixels, recall the other way round;
  empty/non-empty conventions as DAVIS (both empty: P = R = 1).
* ``sequence_statistics`` (DAVIS ``db_statistics``): mean, recall (fraction of frames > 0.5)
  and decay (mean of the first of 4 quantile bins minus mean of the last; the bins are
  delimited by ``round(linspace(1, n, 5)) - 1`` and include both ends).
* ``number_of_clicks`` (RITM NoC@t): the first click count whose IoU >= t, or ``max_clicks``
  when the threshold is never reached.

All masks are H x W arrays (any dtype; non-zero = foreground).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, require

_BOUND_TH = 0.008


def _cv2():
    return require("cv2", "cv", "The boundary measure F and the click simulator")


def _as_mask(m, name: str) -> np.ndarray:
    a = np.asarray(m)
    if a.ndim != 2:
        raise InputError(f"{name} must be an H x W mask, got shape {a.shape}. "
                         f"Fix: pass one 2-D mask per object and frame.")
    return a.astype(bool, copy=False)


def _check_same(a: np.ndarray, b: np.ndarray, what: str = "prediction and ground truth") -> None:
    if a.shape != b.shape:
        raise InputError(f"The {what} have different shapes {a.shape} and {b.shape}. "
                         f"Fix: resize the prediction to the annotation size (nearest) before scoring.")


def region_similarity(gt, pred, void=None) -> float:
    """DAVIS J for one frame: |gt & pred| / |gt | pred| outside ``void``; 1.0 when the union is empty."""
    g, p = _as_mask(gt, "gt"), _as_mask(pred, "pred")
    _check_same(g, p)
    keep = np.ones_like(g) if void is None else ~_as_mask(void, "void")
    _check_same(g, keep, "annotation and void mask")
    union = np.count_nonzero((g | p) & keep)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(g & p & keep) / union)


mask_iou = region_similarity


def boundary_map(mask) -> np.ndarray:
    """``seg2bmap``: H x W bool boundary of a binary mask (see module docstring)."""
    seg = _as_mask(mask, "mask")
    h, w = seg.shape
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg != east) | (seg != south) | (seg != south_east)
    b[h - 1, :] = seg[h - 1, :] != east[h - 1, :]
    b[:, w - 1] = seg[:, w - 1] != south[:, w - 1]
    b[h - 1, w - 1] = False
    return b


def disk(radius: float) -> np.ndarray:
    """(2r+1) x (2r+1) uint8 structuring element: offsets with dx^2 + dy^2 <= r^2."""
    r = int(radius)
    if r < 0:
        raise InputError(f"Disk radius must be >= 0, got {radius}. Fix: pass a non-negative tolerance.")
    off = np.arange(-r, r + 1)
    return ((off[None, :] ** 2 + off[:, None] ** 2) <= radius ** 2).astype(np.uint8)


def boundary_tolerance(shape: Tuple[int, int], bound_th: float = _BOUND_TH) -> int:
    """Pixels of tolerance: ``bound_th`` itself when >= 1, else ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def _dilate(b: np.ndarray, radius: int) -> np.ndarray:
    if radius == 0:
        return b.copy()
    cv2 = _cv2()
    return cv2.dilate(b.astype(np.uint8), disk(radius)).astype(bool)


def boundary_prf(gt, pred, void=None, bound_th: float = _BOUND_TH) -> Tuple[float, float, float]:
    """(precision, recall, F) of the boundaries of ``pred`` against ``gt`` (DAVIS F-measure)."""
    g, p = _as_mask(gt, "gt"), _as_mask(pred, "pred")
    _check_same(g, p)
    if void is not None:
        keep = ~_as_mask(void, "void")
        _check_same(g, keep, "annotation and void mask")
        g, p = g & keep, p & keep
    r = boundary_tolerance(g.shape, bound_th)
    gb, pb = boundary_map(g), boundary_map(p)
    n_gt, n_pred = int(np.count_nonzero(gb)), int(np.count_nonzero(pb))
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(pb & _dilate(gb, r)) / n_pred
        recall = np.count_nonzero(gb & _dilate(pb, r)) / n_gt
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return float(precision), float(recall), float(f)


def boundary_f(gt, pred, void=None, bound_th: float = _BOUND_TH) -> float:
    """DAVIS F for one frame."""
    return boundary_prf(gt, pred, void, bound_th)[2]


def sequence_statistics(per_frame: Sequence[float]) -> Tuple[float, float, float]:
    """DAVIS (mean, recall, decay) of one object's per-frame J or F values.

    NaN frames are skipped by the mean; in the recall they count as not above 0.5 (as the
    official ``nanmean(values > 0.5)``). Needs at least one frame.
    """
    v = np.asarray(per_frame, dtype=np.float64).ravel()
    if v.size == 0:
        raise InputError("No frames to summarise: a sequence needs at least 3 frames under the "
                         "semi-supervised protocol (the first and last are excluded). "
                         "Fix: drop sequences shorter than 3 frames.")
    mean = float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")
    recall = float(np.mean(np.nan_to_num(v, nan=0.0) > 0.5))
    ids = (np.round(np.linspace(1, v.size, 5) + 1e-10) - 1).astype(np.int64)
    first = v[ids[0]: ids[1] + 1]
    last = v[ids[3]: ids[4] + 1]
    with np.errstate(all="ignore"):
        decay = float(_nanmean(first) - _nanmean(last))
    return mean, recall, decay


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """NoC@threshold: 1-based index of the first IoU >= threshold among the first ``max_clicks``;
    ``max_clicks`` when it is never reached."""
    v = np.asarray(ious, dtype=np.float64)[:max_clicks]
    hit = np.nonzero(v >= threshold)[0]
    return int(hit[0] + 1) if hit.size else int(max_clicks)


def mask_to_box(mask) -> Optional[list]:
    """Tight xyxy box of a mask in pixel indices (x1/y1 inclusive, as SAM's
    ``batched_mask_to_box``), or None for an empty mask."""
    m = _as_mask(mask, "mask")
    ys = np.nonzero(m.any(axis=1))[0]
    xs = np.nonzero(m.any(axis=0))[0]
    if ys.size == 0:
        return None
    return [float(xs[0]), float(ys[0]), float(xs[-1]), float(ys[-1])]
