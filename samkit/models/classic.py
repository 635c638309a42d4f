"""``classic``: ``GrabCutModel``, an offline, weight-free promptable segmenter (OpenCV GrabCut).

This model exists so that samkit does something useful on a machine that has no
checkpoint at all. It is a *fallback*: it has no learned notion of objects and is far below
every neural model in quality (see docs/results.md for its measured DAVIS figures).

How a prompt becomes a mask
---------------------------
Prompts follow ``samkit.prompts`` (continuous pixel coordinates, x in [0, W], y in [0, H]);
GrabCut works on pixel indices, so points and boxes are clipped to the last pixel (W - 1, H - 1)
here. Besides SAM-frame low-res logits, ``mask_input`` may be an H x W mask of the image.

* A region of interest (ROI) is taken from the box; with points only, from square windows
  of growing size around the points (one candidate per window: 25 %, 45 % and 75 % of the
  shorter image side, and one larger window while the mask still fills the window's border
  or no candidate scores 0.5); with a ``mask_input``, from the bounding box of that mask.
* The image is cropped to the ROI plus a context band and scaled so that its longest side
  is at most ``work_side`` (512) pixels. Outside the ROI is sure background; inside it is
  probable foreground (or the previous mask, when ``mask_input`` is given).
* Positive points become sure-foreground disks, negative points sure-background disks.
* ``cv2.grabCut`` (Rother et al., SIGGRAPH 2004) runs on the crop; the result keeps the
  connected components that hold a positive point (without points: the largest one and any
  of at least a quarter of its area) and its holes are filled. The crop mask is upscaled
  through its signed distance field (smooth edges).

Scores (a heuristic, not a predicted IoU)
-----------------------------------------
``score = quality * (1 - touch) * agree``, every term in [0, 1], where
``contrast = 0.5 * (edge + separation)``: ``edge`` = g_b / (g_b + g_mean), the image gradient
on the mask boundary against the mean gradient of the crop, and ``separation`` = 1 -
Bhattacharyya coefficient of the colour histograms of a band inside and a band outside the
boundary. ``quality`` is ``contrast * box_iou`` for a box prompt without negative points (a
drawn box is tight: the IoU of the mask's bounding box with the prompt box), ``0.25 * contrast + 0.75 * central``
for clicks only (``central`` = the clicks' distance to the mask boundary over the mask's
largest inner distance: people click inside, towards the middle), and ``contrast`` for a
``mask_input`` without a box. ``touch`` = share of the window border (not the image border)
that the mask covers, for click windows (the window cut the object); ``agree`` = share of
positive points inside and negative points outside the mask. Candidates are returned best
first. On DAVIS the weights were chosen by looking at 17 frames (docs/results.md); they are
not learned.

``low_res_logits`` (K x 256 x 256) follow SAM's frame: the image resized so that its longest
side is 256, padded bottom/right; values are a clipped signed distance to the mask
boundary in low-res pixels (positive inside), so ``> 0`` gives the mask back and the array
can be fed again as ``mask_input`` for a refinement click.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from samkit.errors import InputError, require
from samkit.families import register_builder
from samkit.prompts import Prompt, check_mask_input, check_prompt, require_prompt

LOW_RES = 256
LOGIT_CLIP = 20.0


def _cv2():
    return require("cv2", "cv", "The classic (GrabCut) model")


# ----------------------------------------------------------------------------- validation
def _check_image(image) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise InputError(
            f"the classic model needs an H x W x 3 RGB array, got {shape}. "
            "Fix: load the picture with samkit.io.image.load_image(path) first."
        )
    if image.dtype != np.uint8:
        raise InputError(
            f"the classic model needs a uint8 image, got dtype {image.dtype}. "
            "Fix: convert with np.clip(img, 0, 255).astype(np.uint8) (values in 0..255)."
        )
    if min(image.shape[:2]) < 2:
        raise InputError(f"image of size {image.shape[:2]} is too small. Fix: pass an image of at least 2x2 pixels.")
    return np.ascontiguousarray(image)


def _pixel_prompts(hw, points=None, labels=None, box=None):
    """Check prompts (``samkit.prompts`` rules) against an image of size ``hw`` = (H, W) and clip
    them to pixel indices. Returns ``(points N x 2 float64 or None, labels N int32 or None,
    box (4,) float64 or None)``."""
    h, w = hw
    prompt = check_prompt(points, labels, box, hw, dtype=np.float64)
    pts, lab, bx = prompt.points, prompt.labels, prompt.box
    if pts is not None:
        pts = np.clip(pts, 0, [w - 1, h - 1])
    if bx is not None:
        bx = np.clip(bx, 0, [w - 1, h - 1, w - 1, h - 1])
    return pts, lab, bx


def _mask_from_input(mask_input, hw) -> Optional[np.ndarray]:
    """``mask_input`` as H x W bool: SAM-frame logits (256 x 256, 1 x 256 x 256 or 1 x 1 x 256 x 256)
    or an image-size mask / logit map (> 0 is foreground)."""
    if mask_input is None:
        return None
    m = check_mask_input(mask_input, (LOW_RES, LOW_RES), image_hw=hw)[0, 0]
    if m.shape == tuple(hw):
        return m > 0
    nh, nw = _low_res_size(hw)
    crop = np.ascontiguousarray(m[:nh, :nw])
    return _cv2().resize(crop, (hw[1], hw[0]), interpolation=_cv2().INTER_LINEAR) > 0


def _low_res_size(hw):
    h, w = hw
    s = LOW_RES / max(h, w)
    return max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))


# ----------------------------------------------------------------------------- geometry
WINDOW_FRACS = (0.25, 0.45, 0.75, 1.2)  # window side / shorter image side, around the points


def _roi_window(hw, pts, lab, frac):
    """A square window (x0, y0, x1, y1 inclusive) around the positive points, of side about
    ``frac`` times the shorter image side plus the points' spread."""
    h, w = hw
    pos = pts[lab == 1]
    cx0, cy0 = pos.min(0)
    cx1, cy1 = pos.max(0)
    spread = max(cx1 - cx0, cy1 - cy0)
    half = max(spread / 2 + frac * min(h, w) * 0.5, spread * 0.75, 8.0)
    mx, my = (cx0 + cx1) / 2, (cy0 + cy1) / 2
    return np.array([max(0, mx - half), max(0, my - half), min(w - 1, mx + half), min(h - 1, my + half)])


def _context(roi, hw, frac=0.35, min_px=16):
    h, w = hw
    x0, y0, x1, y1 = roi
    m = max(min_px, frac * max(x1 - x0, y1 - y0))
    return (int(max(0, np.floor(x0 - m))), int(max(0, np.floor(y0 - m))),
            int(min(w, np.ceil(x1 + m) + 1)), int(min(h, np.ceil(y1 + m) + 1)))


def _disk(mask, xy, r, value):
    _cv2().circle(mask, (int(round(xy[0])), int(round(xy[1]))), int(max(1, r)), int(value), -1)


# ----------------------------------------------------------------------------- core
class _Crop:
    """A crop of the image (x0, y0, x1, y1 exclusive end) scaled by ``s``."""

    def __init__(self, image, ctx, work_side):
        cv2 = _cv2()
        x0, y0, x1, y1 = ctx
        self.ctx = ctx
        self.s = min(1.0, work_side / max(x1 - x0, y1 - y0))
        crop = image[y0:y1, x0:x1]
        if self.s < 1.0:
            size = (max(2, int(round((x1 - x0) * self.s))), max(2, int(round((y1 - y0) * self.s))))
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        self.img = np.ascontiguousarray(crop)
        self.bgr = np.ascontiguousarray(crop[..., ::-1])

    def to_crop(self, xy):
        return ((xy[0] - self.ctx[0]) * self.s, (xy[1] - self.ctx[1]) * self.s)


def _grabcut(crop: _Crop, init: np.ndarray, iters: int) -> np.ndarray:
    cv2 = _cv2()
    gc = init.copy()
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    if not fg.any():
        return np.zeros(gc.shape, bool)
    if fg.all():  # GrabCut needs background samples: use the crop's outer ring as probable background
        gc[[0, -1], :] = cv2.GC_PR_BGD
        gc[:, [0, -1]] = cv2.GC_PR_BGD
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means initialisation draws from OpenCV's RNG: make results repeatable
    cv2.grabCut(crop.bgr, gc, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def _clean(mask: np.ndarray, seeds, negatives=(), neg_radius: float = 2.0) -> np.ndarray:
    """Keep the components holding a positive seed (without seeds: the largest and those of at
    least a quarter of its area), drop components that a negative point touches (unless that
    empties the mask or they hold a positive seed), and fill holes that hold no negative point."""
    cv2 = _cv2()
    if not mask.any():
        return mask
    h, w = mask.shape

    def at(p):
        return int(np.clip(round(p[1]), 0, h - 1)), int(np.clip(round(p[0]), 0, w - 1))

    n, cc = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    keep = {int(cc[at(p)]) for p in seeds} - {0}
    if not keep:  # no seed: the largest part and every part at least a quarter of its size
        sizes = np.bincount(cc.ravel(), minlength=n)
        sizes[0] = 0
        keep.update(int(i) for i in np.nonzero(sizes >= 0.25 * sizes.max())[0])
    pos_parts = {int(cc[at(p)]) for p in seeds} - {0}
    touched = set()
    for p in negatives:
        disk = np.zeros((h, w), np.uint8)
        _disk(disk, p, neg_radius * 2 + 2, 1)
        touched.update(int(v) for v in np.unique(cc[disk > 0]) if v > 0)
    drop = touched - pos_parts
    if keep - drop:
        keep -= drop
    out = np.isin(cc, list(keep))
    # fill holes: background not connected to the crop border and holding no negative point
    n2, cc2 = cv2.connectedComponents((~out).astype(np.uint8), connectivity=4)
    border = set(np.unique(np.concatenate([cc2[0], cc2[-1], cc2[:, 0], cc2[:, -1]])).tolist())
    border.update(int(cc2[at(p)]) for p in negatives)
    holes = (cc2 > 0) & ~np.isin(cc2, list(border))
    return out | holes


def _sdf(mask: np.ndarray, cap: float) -> np.ndarray:
    """Signed distance (pixels, positive inside) of a boolean mask, clipped to [-cap, cap].

    A mask without inside (or outside) pixels has no boundary, and OpenCV then returns
    FLT_MAX, which overflows when rescaled: hence the cap. With ``cap`` >= 3 the clipping never
    changes the sign of a bilinear mix of neighbouring pixels (neighbours differ by at most
    1.37 in OpenCV's 3 x 3 L2 metric), so the upscaled mask is unchanged."""
    cv2 = _cv2()
    m = mask.astype(np.uint8)
    inside = np.minimum(cv2.distanceTransform(m, cv2.DIST_L2, 3), cap + 0.5)
    outside = np.minimum(cv2.distanceTransform(1 - m, cv2.DIST_L2, 3), cap + 0.5)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def _score(crop: _Crop, mask, window_touch: float, seeds_pos, seeds_neg, mode: str, box=None) -> float:
    """The documented heuristic (module docstring); ``mode`` is "box", "click" or "mask"."""
    cv2 = _cv2()
    if not mask.any() or mask.all():
        return 0.0
    gray = cv2.cvtColor(crop.img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    grad = np.sqrt(gx * gx + gy * gy)
    m8 = mask.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    boundary = (cv2.dilate(m8, k) - cv2.erode(m8, k)) > 0
    gb = float(grad[boundary].mean()) if boundary.any() else 0.0
    edge = gb / (gb + float(grad.mean()) + 1e-6)
    r = max(2, int(0.02 * max(mask.shape)))
    kr = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    inner = (m8 - cv2.erode(m8, kr)) > 0
    outer = (cv2.dilate(m8, kr) - m8) > 0
    if inner.any() and outer.any():
        q = (crop.img // 32).astype(np.int32)
        code = q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]
        hi = np.bincount(code[inner], minlength=512).astype(np.float64)
        ho = np.bincount(code[outer], minlength=512).astype(np.float64)
        bc = float(np.sqrt((hi / hi.sum()) * (ho / ho.sum())).sum())
        sep = 1.0 - bc
    else:
        sep = 0.0
    hw = mask.shape
    votes = []
    for (x, y), want in [(p, True) for p in seeds_pos] + [(p, False) for p in seeds_neg]:
        xi, yi = int(np.clip(round(x), 0, hw[1] - 1)), int(np.clip(round(y), 0, hw[0] - 1))
        votes.append(bool(mask[yi, xi]) == want)
    agree = float(np.mean(votes)) if votes else 1.0
    contrast = 0.5 * (edge + sep)
    if mode == "click":
        d = cv2.distanceTransform(np.pad(m8, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        depth = [d[min(hw[0] - 1, max(0, int(round(y)))), min(hw[1] - 1, max(0, int(round(x))))] for x, y in seeds_pos]
        central = float(np.mean(depth) / d.max()) if depth else 0.0
        quality = 0.25 * contrast + 0.75 * central
    elif mode == "box" and box is not None and not len(seeds_neg):
        ys, xs = np.nonzero(mask)
        quality = contrast * _box_iou((xs.min(), ys.min(), xs.max(), ys.max()), box)
    else:
        quality = contrast
    return float(quality * (1.0 - window_touch) * agree)


def _box_iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return float(inter / area)


def _window_touch(mask, crop: _Crop, roi, hw) -> float:
    """Share of the ROI's border, where it is not the image border, covered by the mask."""
    h, w = hw
    x0, y0, x1, y1 = [v * crop.s for v in (roi[0] - crop.ctx[0], roi[1] - crop.ctx[1],
                                            roi[2] - crop.ctx[0], roi[3] - crop.ctx[1])]
    mh, mw = mask.shape
    xa, xb = int(np.clip(round(x0), 0, mw - 1)), int(np.clip(round(x1), 0, mw - 1))
    ya, yb = int(np.clip(round(y0), 0, mh - 1)), int(np.clip(round(y1), 0, mh - 1))
    sides = []
    if roi[1] > 0:
        sides.append(mask[ya, xa:xb + 1])
    if roi[3] < h - 1:
        sides.append(mask[yb, xa:xb + 1])
    if roi[0] > 0:
        sides.append(mask[ya:yb + 1, xa])
    if roi[2] < w - 1:
        sides.append(mask[ya:yb + 1, xb])
    if not sides:
        return 0.0
    return float(np.concatenate(sides).mean())


class GrabCutModel:
    """Weight-free promptable segmentation (GrabCut), the ``classic`` model. ``neural = False``.

    ``work_side``: longest side of the working crop (pixels); ``iters``: GrabCut iterations.
    ``spec`` is set by ``samkit.registry.load_model``.
    """

    neural = False
    supports_mask_input = True

    def __init__(self, work_side: int = 512, iters: int = 5):
        self.work_side = int(work_side)
        self.iters = int(iters)
        self.spec = None

    def __repr__(self) -> str:
        return f"GrabCutModel(work_side={self.work_side}, iters={self.iters})"

    # ------------------------------------------------------------------ public
    def predict_image(self, image, points=None, labels=None, box=None, mask_input=None, multimask=True):
        """Segment ``image`` (H x W x 3 uint8) from prompts in original pixel coordinates.

        ``points`` N x 2 (x, y), ``labels`` N (1 foreground, 0 background), ``box`` (4,) xyxy,
        ``mask_input`` 256 x 256 low-res logits of a previous prediction (or an H x W mask).
        Returns ``samkit.masks.Masks`` with K = 3 candidates (1 if ``multimask`` is False),
        best score first, and ``low_res_logits`` K x 256 x 256.
        """
        from samkit.masks import Masks

        masks, scores, low = self.segment(image, points, labels, box, mask_input, multimask)
        return Masks(masks, scores, low_res_logits=low)

    def segment(self, image, points=None, labels=None, box=None, mask_input=None, multimask=True):
        """Same as ``predict_image`` but returns plain arrays ``(K x H x W bool, (K,) float32,
        K x 256 x 256 float32)``."""
        image = _check_image(image)
        hw = image.shape[:2]
        pts, lab, bx = _pixel_prompts(hw, points, labels, box)
        require_prompt(Prompt(pts, lab, bx), mask_input)
        prev = _mask_from_input(mask_input, hw)
        if prev is not None and not prev.any():
            prev = None
        has_pos = pts is not None and bool((lab == 1).any())
        if bx is None and not has_pos and prev is None:
            raise InputError(
                "the classic model needs a box, at least one foreground point (label 1) or a non-empty "
                "mask_input: background points alone do not say where the object is. "
                "Fix: add --point X,Y (or points=[[x, y]], labels=[1]) or --box X0,Y0,X1,Y1."
            )
        if pts is None:
            pts, lab = np.zeros((0, 2)), np.zeros((0,), np.int32)

        cands = []  # (score, H x W mask, 256 x 256 logits, window touch)
        if bx is not None or prev is not None:
            if bx is not None:
                roi = bx
            else:
                ys, xs = np.nonzero(prev)
                allx = np.concatenate([xs, pts[lab == 1, 0]])
                ally = np.concatenate([ys, pts[lab == 1, 1]])
                roi = np.array([allx.min(), ally.min(), allx.max(), ally.max()], dtype=np.float64)
                pad = 0.1 * max(roi[2] - roi[0], roi[3] - roi[1]) + 4
                roi = np.array([max(0, roi[0] - pad), max(0, roi[1] - pad),
                                min(hw[1] - 1, roi[2] + pad), min(hw[0] - 1, roi[3] + pad)])
            for variant in ("full", "core", "coarse"):
                cands.append(self._run(image, roi, pts, lab, prev, variant, touch=False, box_prompt=bx is not None))
        else:
            # three windows; grow (at most once) while the largest one still cuts the object
            # or no candidate scores at least 0.5
            for i, frac in enumerate(WINDOW_FRACS):
                if i >= 3 and cands[-1][3] <= 0.3 and max(c[0] for c in cands) >= 0.5:
                    break
                cands.append(self._run(image, _roi_window(hw, pts, lab, frac), pts, lab, None, "click", touch=True))
        cands.sort(key=lambda c: -c[0])
        cands = cands[:1] if not multimask else cands[:3]
        masks = np.stack([c[1] for c in cands])
        scores = np.array([c[0] for c in cands], dtype=np.float32)
        low = np.stack([c[2] for c in cands]).astype(np.float32)
        return masks, scores, low

    # ------------------------------------------------------------------ internals
    def _run(self, image, roi, pts, lab, prev, variant, touch, box_prompt=False):
        cv2 = _cv2()
        hw = image.shape[:2]
        ctx = _context(roi, hw)
        side = self.work_side if variant != "coarse" else max(64, self.work_side // 2)
        crop = _Crop(image, ctx, side)
        ch, cw = crop.img.shape[:2]
        init = np.full((ch, cw), cv2.GC_BGD, np.uint8)
        rx0, ry0 = crop.to_crop(roi[:2])
        rx1, ry1 = crop.to_crop(roi[2:])
        xa, ya = int(np.floor(rx0)), int(np.floor(ry0))
        xb, yb = int(np.ceil(rx1)) + 1, int(np.ceil(ry1)) + 1
        if prev is not None:
            x0, y0, x1, y1 = ctx
            pm = prev[y0:y1, x0:x1].astype(np.uint8)
            pm = cv2.resize(pm, (cw, ch), interpolation=cv2.INTER_NEAREST) > 0
            region = np.where(pm, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
            init[ya:yb, xa:xb] = region[ya:yb, xa:xb]
        else:
            init[ya:yb, xa:xb] = cv2.GC_PR_FGD
        if variant == "core":
            # a tight box touches the object on every side: its central ellipse is likely object
            ex, ey = max(1, int((xb - xa) * 0.12)), max(1, int((yb - ya) * 0.12))
            cv2.ellipse(init, ((xa + xb) // 2, (ya + yb) // 2), (ex, ey), 0, 0, 360, int(cv2.GC_FGD), -1)
        diag = float(np.hypot(xb - xa, yb - ya))
        r_pos = max(2.0, 0.02 * diag) if variant != "click" else max(3.0, 0.04 * diag)
        r_neg = max(2.0, 0.02 * diag)
        pos_c = [crop.to_crop(p) for p in pts[lab == 1]]
        neg_c = [crop.to_crop(p) for p in pts[lab == 0]]
        for p in neg_c:
            _disk(init, p, r_neg, cv2.GC_BGD)
        for p in pos_c:
            _disk(init, p, r_pos, cv2.GC_FGD)
        m = _grabcut(crop, init, self.iters)
        m = _clean(m, pos_c, neg_c, r_neg)
        t = _window_touch(m, crop, roi, hw) if touch else 0.0
        mode = "click" if variant == "click" else ("box" if box_prompt else "mask")
        score = _score(crop, m, t, pos_c, neg_c, mode, (rx0, ry0, rx1, ry1))
        full, low = self._to_image(m, crop, hw)
        return score, full, low, t

    def _to_image(self, m, crop: _Crop, hw):
        """Crop mask -> full-resolution bool mask and 256 x 256 SAM-frame logits."""
        cv2 = _cv2()
        h, w = hw
        x0, y0, x1, y1 = crop.ctx
        nh, nw = _low_res_size(hw)
        s = nw / w
        ratio = s / crop.s  # low-res pixels per work pixel
        # the cap keeps every low-res logit that it touches beyond LOGIT_CLIP (so clipped as before)
        d = _sdf(m, cap=max(3.0, LOGIT_CLIP / ratio + 2.0))
        full = np.zeros((h, w), bool)
        if (x1 - x0, y1 - y0) != (d.shape[1], d.shape[0]):
            up = cv2.resize(d, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        else:
            up = d
        full[y0:y1, x0:x1] = up > 0
        low = np.full((LOW_RES, LOW_RES), -LOGIT_CLIP, np.float32)
        lx0, ly0 = int(np.floor(x0 * s)), int(np.floor(y0 * s))
        lx1, ly1 = min(nw, int(np.ceil(x1 * s))), min(nh, int(np.ceil(y1 * s)))
        if lx1 > lx0 and ly1 > ly0:
            # signed distance in low-res pixels: rescale the work-pixel distance by the size ratio
            part = cv2.resize(d, (lx1 - lx0, ly1 - ly0), interpolation=cv2.INTER_LINEAR)
            part = part * ratio
            low[ly0:ly1, lx0:lx1] = np.clip(part, -LOGIT_CLIP, LOGIT_CLIP)
        return full, low


@register_builder("classic")
def build_classic(**kwargs) -> GrabCutModel:
    """The builder of the ``classic`` spec."""
    return GrabCutModel(**kwargs)
