"""The interactive click protocol (RITM, as used by SAM / EdgeSAM evaluations).

Next click (``next_click``): the error regions are the false negatives (ground truth not
predicted) and the false positives (predicted, not ground truth). Each error map is padded
with one background pixel so that the image border counts as a region boundary, and its
Euclidean distance transform is taken (distance of every error pixel to the nearest
non-error pixel). Pixels already clicked are excluded. The click goes to the pixel farthest
from the boundary of its error region: the interior point of the error region with the
largest inscribed disk, i.e. the "largest" region in RITM's sense. It is positive (label 1)
when the false-negative maximum is strictly larger than the false-positive one, negative
(label 0) otherwise; ties among pixels go to the first pixel in row-major order.

Centre point (``centre_point``): the same rule applied to an empty prediction, so it is
the interior point of the object farthest from the object boundary (not the centroid,
which can lie outside a non-convex mask). It is also the first click of the protocol.

Per-sample protocol (``run_clicks``):
1. click 1 = the centre point (positive); ``multimask=True`` on this click only, and the
   candidate with the highest predicted score is kept (``oracle=True`` keeps the candidate
   with the best IoU against the ground truth instead, SAM's "oracle" numbers);
2. every later click is added to all previous clicks, with ``multimask=False``; when the
   model accepts a mask prompt (``model.supports_mask_input``, default True) and the
   previous result carries ``low_res_logits``, the logits of the kept mask (1 x 256 x 256)
   are fed back as ``mask_input``;
3. IoU against the ground truth is recorded after every click. The loop stops early once
   every NoC threshold is reached and at least ``min_clicks`` clicks were made (later clicks
   cannot change NoC or the reported mIoU@k for k <= min_clicks); otherwise after
   ``max_clicks`` clicks. IoU values for clicks after an early stop are carried forward.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError, require
from .metrics import _as_mask, mask_iou, mask_to_box, number_of_clicks


@dataclass(frozen=True)
class Click:
    """One simulated click: pixel (x, y) and label 1 (positive) or 0 (negative)."""

    x: int
    y: int
    positive: bool

    @property
    def label(self) -> int:
        return 1 if self.positive else 0


def _distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each True pixel to the nearest False pixel, with the image
    border treated as False (one pixel of padding)."""
    cv2 = require("cv2", "cv", "The click simulator")
    padded = np.pad(mask.astype(np.uint8), 1)
    dt = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dt[1:-1, 1:-1]


def next_click(gt, pred, clicked: Sequence[Click] = (), void=None) -> Optional[Click]:
    """The next RITM click for prediction ``pred`` of ground truth ``gt`` (H x W masks), or
    None when there is no error pixel left to click."""
    g, p = _as_mask(gt, "gt"), _as_mask(pred, "pred")
    if g.shape != p.shape:
        raise InputError(f"gt {g.shape} and pred {p.shape} differ in shape. "
                         f"Fix: resize the prediction to the annotation size first.")
    keep = np.ones_like(g) if void is None else ~_as_mask(void, "void")
    fn = _distance(g & ~p & keep)
    fp = _distance(~g & p & keep)
    for c in clicked:
        if 0 <= c.y < g.shape[0] and 0 <= c.x < g.shape[1]:
            fn[c.y, c.x] = 0
            fp[c.y, c.x] = 0
    fn_max, fp_max = float(fn.max()), float(fp.max())
    if fn_max <= 0 and fp_max <= 0:
        return None
    positive = fn_max > fp_max
    dt, best = (fn, fn_max) if positive else (fp, fp_max)
    flat = int(np.flatnonzero(dt == best)[0])
    y, x = divmod(flat, g.shape[1])
    return Click(int(x), int(y), positive)


def centre_point(gt) -> Optional[Tuple[int, int]]:
    """(x, y) of the object pixel farthest from the object boundary, or None if empty."""
    g = _as_mask(gt, "gt")
    c = next_click(g, np.zeros_like(g))
    return None if c is None else (c.x, c.y)


@dataclass
class SampleResult:
    """Per-sample outcome of the click protocol: IoU after clicks 1..max_clicks."""

    ious: List[float]
    clicks: List[Click] = field(default_factory=list)

    def iou_at(self, k: int) -> float:
        """IoU after ``k`` clicks (1-based); carried forward past an early stop."""
        if k < 1:
            raise InputError(f"Click count must be >= 1, got {k}. Fix: ask for 1 or more clicks.")
        return self.ious[min(k, len(self.ious)) - 1]

    def noc(self, threshold: float, max_clicks: int = 20) -> int:
        return number_of_clicks(self.ious, threshold, max_clicks)


def _pick(masks, gt: np.ndarray, oracle: bool) -> int:
    scores = np.asarray(masks.scores, dtype=np.float64)
    if oracle:
        return int(np.argmax([mask_iou(gt, m) for m in masks.masks]))
    return int(np.argmax(scores)) if scores.size else 0


def _low_res(masks, index: int):
    lr = getattr(masks, "low_res_logits", None)
    if lr is None:
        return None
    lr = np.asarray(lr.detach().cpu() if hasattr(lr, "detach") else lr, dtype=np.float32)
    return lr[index: index + 1]


def run_clicks(predictor, gt, max_clicks: int = 20, thresholds: Sequence[float] = (0.85, 0.90),
               min_clicks: int = 5, oracle: bool = False, feed_logits: Optional[bool] = None) -> SampleResult:
    """Run the click protocol on one object of the image already set on ``predictor``
    (an ``ImagePredictor``-like object with ``predict(points, labels, box, mask_input,
    multimask) -> Masks``). ``gt``: H x W mask of that object. See the module docstring."""
    g = _as_mask(gt, "gt")
    if not g.any():
        raise InputError("The ground-truth mask is empty, so there is nothing to click on. "
                         "Fix: skip objects that are absent from the frame.")
    if max_clicks < 1:
        raise InputError(f"max_clicks must be >= 1, got {max_clicks}. Fix: pass --max-clicks 20.")
    if feed_logits is None:
        model = getattr(predictor, "model", None)
        feed_logits = bool(getattr(model, "supports_mask_input", True))
    clicks: List[Click] = []
    ious: List[float] = []
    pred = np.zeros_like(g)
    logits = None
    for k in range(max_clicks):
        c = next_click(g, pred, clicks)
        if c is None:  # perfect prediction: nothing left to correct
            ious.append(ious[-1] if ious else 1.0)
            break
        clicks.append(c)
        first = k == 0
        result = predictor.predict(points=[[cl.x, cl.y] for cl in clicks], labels=[cl.label for cl in clicks],
                                   box=None, mask_input=None if first or not feed_logits else logits,
                                   multimask=first)
        i = _pick(result, g, oracle) if first else 0
        pred = np.asarray(result.masks[i], dtype=bool)
        logits = _low_res(result, i)
        ious.append(mask_iou(g, pred))
        if len(ious) >= min_clicks and all(max(ious) >= t for t in thresholds):
            break
    ious = ious + [ious[-1]] * (max_clicks - len(ious))
    return SampleResult(ious, clicks)


def box_iou_sample(predictor, gt, multimask: bool = False, oracle: bool = False) -> float:
    """IoU of the prediction from the tight box of ``gt`` (image already set on the predictor).

    The box is SAM's inclusive tight box; an object one pixel wide or high would give a box of
    zero width or height, which the prompt contract refuses, so such a side ends 1 px later
    (still inside the image: coordinates are continuous, x in [0, W])."""
    g = _as_mask(gt, "gt")
    box = mask_to_box(g)
    if box is None:
        raise InputError("The ground-truth mask is empty, so it has no box. Fix: skip absent objects.")
    box[2], box[3] = max(box[2], box[0] + 1), max(box[3], box[1] + 1)  # x1 <= W - 1, so x1 + 1 <= W
    result = predictor.predict(points=None, labels=None, box=box, mask_input=None, multimask=multimask)
    i = _pick(result, g, oracle)
    return mask_iou(g, np.asarray(result.masks[i], dtype=bool))
