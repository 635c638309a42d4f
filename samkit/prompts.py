"""Prompts: what a point, a box and a mask input are, and the one place they are checked.

``ImagePredictor.predict`` / ``predict_batch``, the ``classic`` model (``GrabCutModel``) and
``VideoTracker.add_prompt`` (against the video's frame size) all check their prompts here, so
the rules and the error messages are the same everywhere.

Rules
-----
* Coordinates are continuous pixel coordinates of the original (upright) image, x to the right
  and y down: pixel (row i, column j) covers [j, j + 1) x [i, i + 1), so x lies in [0, W] and y
  in [0, H], both ends included. A point at (W, H), the image's far corner, is valid; a model
  that works on pixel indices (``classic``) clips it to the last pixel itself.
* ``points`` N x 2 (x, y) with ``labels`` N, each exactly 1 (foreground) or 0 (background).
  SAM's padding label -1 is refused everywhere: it marks "no point" inside a padded batch and
  is not a prompt (leave padded points out). Points without labels, labels without points and
  a label count that differs from the point count are refused. An empty points array (N = 0,
  with empty or no labels) means "no points": it is not a prompt by itself.
* ``box`` (4,) x0, y0, x1, y1 with x1 > x0 and y1 > y0 (an inverted or zero-size box is
  refused), inside [0, W] x [0, H]. A box partly outside the image is refused too, and the
  message gives the clipped box as the fix (clipping silently would change what was asked).
* NaN or infinity in a point, a box or a mask is refused.
* Batched form (``ImagePredictor.predict_batch``): points B x P x 2, labels B x P, boxes
  B x 4, the same rules for every row; an empty array is no prompt.
* ``mask_input``: low-res logits of an earlier prediction (``Masks.low_res_logits[i]``),
  h x w, 1 x h x w or 1 x 1 x h x w (B x 1 x h x w in batched form), where h x w is the
  model's ``mask_input_size`` (256 x 256 for SAM). ``classic`` also takes an H x W mask of
  the image (> 0 is object).
* A video ``mask`` prompt is H x W, the frame size (non-zero is object), and cannot be
  combined with points or a box.
* Something must be given: points, a box or a mask ("no prompt given").
* Exemplars (SAM 3's concept prompts, ``check_exemplars``): boxes N x 4 with the box rules
  above, labels N of 1 (positive: find more like it) or 0 (negative), all 1 by default.

Every violation raises ``InputError`` naming the problem (with the expected shape or range)
and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError

LABELS = (0, 1)  # background, foreground


@dataclass(frozen=True)
class Prompt:
    """Checked prompts, each None when not given: ``points`` N x 2 (batched B x P x 2) float,
    ``labels`` N (B x P) int32, ``box`` (4,) (batched B x 4) float."""

    points: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None

    @property
    def empty(self) -> bool:
        """True when there is neither a point nor a box."""
        return self.points is None and self.box is None


def _as_array(value: Any, name: str, dtype=np.float64) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric, got {value!r}. Fix: pass a list or array of numbers.") from exc


def _size_text(size_hw: Sequence[int]) -> str:
    h, w = size_hw
    return f"({w} x {h}, width x height)"


def check_points(points, labels, size_hw: Sequence[int], *, batched: bool = False,
                 dtype=np.float32) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Points N x 2 (batched B x P x 2) and labels N (B x P) against an image of ``size_hw``
    = (H, W). Returns ``(points of dtype, labels int32)``, or ``(None, None)`` when there are no
    points (None or an empty array)."""
    pts = None if points is None else _as_array(points, "points")
    if pts is None or pts.size == 0:
        if labels is not None and _as_array(labels, "labels").size > 0:
            raise InputError("labels were given without points. Fix: pass points=[[x, y], ...] with one label "
                             "per point.")
        return None, None
    want = "B x P x 2 ([[[x, y], ...], ...])" if batched else "N x 2 ([[x, y], ...])"
    if pts.ndim != (3 if batched else 2) or pts.shape[-1] != 2:
        raise InputError(f"points must have shape {want}, got {pts.shape}. Fix: give (x, y) pixel pairs, "
                         "e.g. points=[[x, y]].")
    if labels is None:
        raise InputError("points were given without labels. Fix: pass labels=[1, ...], one per point "
                         "(1 foreground, 0 background).")
    lab = _as_array(labels, "labels")
    if lab.shape != pts.shape[:-1]:
        raise InputError(f"labels have shape {lab.shape} but the points need {pts.shape[:-1]}. "
                         "Fix: give one label per point.")
    ok = np.isin(lab, LABELS)
    if not ok.all():
        got = ", ".join(f"{v:g}" for v in sorted(set(lab[~ok].tolist())))
        raise InputError(f"labels must be 1 (foreground) or 0 (background), got {got}. "
                         "Fix: use 1 for object points and 0 for background points (SAM's padding label -1 "
                         "is not a prompt: leave padded points out).")
    if not np.isfinite(pts).all():
        raise InputError("points contain NaN or infinity. Fix: pass finite pixel coordinates.")
    h, w = size_hw
    bad = (pts[..., 0] < 0) | (pts[..., 0] > w) | (pts[..., 1] < 0) | (pts[..., 1] > h)
    if bad.any():
        x, y = pts[bad][0].tolist()
        raise InputError(f"point ({x:g}, {y:g}) lies outside the image {_size_text(size_hw)}. Fix: points are "
                         f"(x, y) pixels of the original image, x in [0, {w}] and y in [0, {h}].")
    return pts.astype(dtype), lab.astype(np.int32)


def check_box(box, size_hw: Sequence[int], *, batched: bool = False, dtype=np.float32) -> Optional[np.ndarray]:
    """A box (4,) x0, y0, x1, y1 (batched: boxes B x 4) against an image of ``size_hw`` =
    (H, W). Returns it as ``dtype``, or None when not given (or an empty batch)."""
    if box is None:
        return None
    name = "boxes" if batched else "box"
    bx = _as_array(box, name)
    if batched and bx.size == 0:
        return None
    if bx.ndim != (2 if batched else 1) or bx.shape[-1] != 4:
        want = "B x 4 ([[x0, y0, x1, y1], ...])" if batched else "(4,) [x0, y0, x1, y1]"
        raise InputError(f"{name} must have shape {want}, got {bx.shape}. Fix: give 4 numbers x0, y0, x1, y1 "
                         "in pixels (top-left, then bottom-right corner).")
    if not np.isfinite(bx).all():
        raise InputError(f"{name} contains NaN or infinity. Fix: pass finite pixel coordinates.")
    rows = bx.reshape(-1, 4)
    inverted = (rows[:, 2] <= rows[:, 0]) | (rows[:, 3] <= rows[:, 1])
    if inverted.any():
        raise InputError(f"box {_fmt(rows[inverted][0])} is inverted or empty: x1 must exceed x0 and y1 must "
                         "exceed y0. Fix: order it as x0, y0, x1, y1 (top-left, then bottom-right corner) with a "
                         "non-zero width and height.")
    h, w = size_hw
    outside = (rows[:, 0] < 0) | (rows[:, 1] < 0) | (rows[:, 2] > w) | (rows[:, 3] > h)
    if outside.any():
        row = rows[outside][0]
        clipped = np.clip(row, 0, [w, h, w, h])
        fix = (f"clip it to the image: box={_fmt(clipped)}" if clipped[2] > clipped[0] and clipped[3] > clipped[1]
               else "give the box in pixels of the original image")
        raise InputError(f"box {_fmt(row)} extends outside the image {_size_text(size_hw)}, where x is in "
                         f"[0, {w}] and y in [0, {h}]. Fix: {fix}.")
    return bx.astype(dtype)


def _fmt(row) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in row) + "]"


def check_prompt(points, labels, box, size_hw: Sequence[int], *, batched: bool = False,
                 dtype=np.float32) -> Prompt:
    """Points, labels and box checked against an image of ``size_hw`` = (H, W) (see the module
    rules). Coordinates come back as ``dtype``, labels as int32."""
    pts, lab = check_points(points, labels, size_hw, batched=batched, dtype=dtype)
    return Prompt(pts, lab, check_box(box, size_hw, batched=batched, dtype=dtype))


def check_exemplars(exemplars, labels, size_hw: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Exemplar boxes (concept prompts of SAM 3) N x 4 x0, y0, x1, y1 (one box (4,) is taken as
    N = 1), checked like boxes (inside the image, not inverted, finite), with ``labels`` N of
    1 (more like this) or 0 (not like this; default all 1). Returns (boxes float64 N x 4,
    labels int64 N)."""
    if exemplars is None:
        raise InputError("exemplar_labels were given without exemplars. Fix: pass exemplars=[[x0, y0, x1, y1]].")
    ex = _as_array(exemplars, "exemplars")
    if ex.ndim == 1:
        ex = ex[None]
    if ex.size == 0:
        raise InputError("exemplars is empty. Fix: pass at least one box, exemplars=[[x0, y0, x1, y1]].")
    if ex.ndim != 2 or ex.shape[-1] != 4:
        raise InputError(f"exemplars must have shape N x 4 ([[x0, y0, x1, y1], ...]), got {ex.shape}. Fix: give "
                         "4 numbers per box in pixels (top-left, then bottom-right corner).")
    try:
        boxes = check_box(ex, size_hw, batched=True, dtype=np.float64)
    except InputError as exc:
        raise InputError(f"exemplar {exc}") from None
    if labels is None:
        return boxes, np.ones(len(boxes), np.int64)
    lab = _as_array(labels, "exemplar_labels").reshape(-1)
    if lab.shape[0] != boxes.shape[0]:
        raise InputError(f"{lab.shape[0]} exemplar_labels for {boxes.shape[0]} exemplars. Fix: give one label per "
                         "box (1: find more like it, 0: not like it).")
    if not np.isin(lab, LABELS).all():
        raise InputError("exemplar_labels must be 1 (positive: find more like this box) or 0 (negative). Fix: use "
                         "1 or 0 per box.")
    return boxes, lab.astype(np.int64)


def require_prompt(prompt: Prompt, mask: Any = None, mask_name: str = "mask_input") -> None:
    """Refuse a request without any prompt (``mask`` is the mask input or mask prompt, if any)."""
    if prompt.empty and mask is None:
        raise InputError(f"no prompt given: a prompt needs points, a box or a {mask_name}. Fix: pass "
                         "points=[[x, y]] with labels=[1], or box=[x0, y0, x1, y1].")


def check_mask_input(mask_input, size_hw: Sequence[int], *, batch: int = 1,
                     image_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Low-res logits h x w, 1 x h x w, 1 x 1 x h x w (or ``batch`` x 1 x h x w) with (h, w) =
    ``size_hw``, the model's ``mask_input_size``; with ``image_hw`` an image-size mask is also
    taken. Returns B' x 1 x h x w float32 (B' = 1 or ``batch``)."""
    m = _as_array(mask_input, "mask_input", np.float32)
    shape = m.shape
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    sizes = [tuple(size_hw)] + ([tuple(image_hw)] if image_hw is not None else [])
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[2:]) not in sizes or m.shape[0] not in (1, batch):
        h, w = size_hw
        lead = "1" if batch == 1 else f"1 or {batch}"
        extra = f" or an {image_hw[0]} x {image_hw[1]} mask of the image" if image_hw is not None else ""
        raise InputError(f"mask_input must be {lead} x {h} x {w} low-res logits (as returned in "
                         f"out.low_res_logits){extra}, got shape {shape}. Fix: pass out.low_res_logits[best][None] "
                         "from a previous prediction on the same image.")
    if not np.isfinite(m).all():
        raise InputError("mask_input contains NaN or infinity. Fix: pass the finite low_res_logits of a "
                         "previous prediction.")
    return m


def check_mask(mask, size_hw: Sequence[int]) -> np.ndarray:
    """A mask prompt H x W (``size_hw``, the frame size), bool or numbers (non-zero is object).
    Returns it as an array, values unchanged."""
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    h, w = size_hw
    if m.ndim != 2 or m.shape != (h, w) or m.dtype.kind not in "biuf":
        raise InputError(f"mask must be an H x W = {h} x {w} array (the frame size; bool, or non-zero for the "
                         f"object), got shape {m.shape} of {m.dtype}. Fix: pass one 2-D mask of the frame's size "
                         "per object.")
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise InputError("mask contains NaN or infinity. Fix: pass a bool mask (True = object).")
    return m


def check_video_prompt(points, labels, box, mask, size_hw: Sequence[int],
                       dtype=np.float32) -> Tuple[Prompt, Optional[np.ndarray]]:
    """A video prompt on a frame of ``size_hw``: points/labels and/or a box, or a mask alone.
    Returns ``(Prompt, mask H x W or None)``."""
    prompt = check_prompt(points, labels, box, size_hw, dtype=dtype)
    if mask is None:
        require_prompt(prompt, mask_name="mask")
        return prompt, None
    if not prompt.empty:
        raise InputError("a mask prompt cannot be combined with points or a box. Fix: pass either the mask "
                         "or the points/box.")
    return prompt, check_mask(mask, size_hw)
