"""Pre- and post-processing of the image families in numpy and PIL (no torch).

Each function reproduces one torch step of samkit (tested against it in tests/test_runtime.py):

* :func:`resize_longest_side` = ``samkit.models.base.resize_longest_side_pil`` (PIL bilinear on
  uint8; SAM, MobileSAM, EdgeSAM);
* :func:`resize_bilinear` = ``F.interpolate(x, size, mode="bilinear", align_corners=False,
  antialias=...)`` (SAM 2 family with antialias, EfficientSAM without; upsampling the SAM 2
  low-resolution masks);
* :func:`resize_bicubic` = ``F.interpolate(x, size, mode="bicubic", align_corners=False)``
  (EfficientSAM's masks);
* :func:`stability_score` = ``samkit.ops.stability_score`` (0.0 where the low mask is empty);
* :func:`dynamic_multimask_index` = the SAM 2 decoder's single-mask fallback.
"""
from __future__ import annotations

import functools
from typing import Dict, Sequence, Tuple

import numpy as np
from PIL import Image


def resize_longest_side(image: np.ndarray, target: int) -> np.ndarray:
    """H x W x 3 uint8 -> the image with its longest side ``target`` (``int(s * scale + 0.5)``), PIL bilinear."""
    h, w = image.shape[:2]
    scale = target / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))


def _taps(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two-tap bilinear indices and weights (align_corners=False, torch's float32 arithmetic)."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, (np.float32(1.0) - l1).astype(np.float32), l1


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``out x in`` float64 weights of :func:`resize_bilinear` along one axis."""
    i0, i1, l0, l1 = _taps(in_size, out_size)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), l0)
    np.add.at(m, (rows, i1), l1)
    return m


@functools.lru_cache(maxsize=32)
def _sam_band(low: int, input_size: int, valid: int, out: int) -> Tuple[np.ndarray, np.ndarray]:
    """One axis of :func:`sam_postprocess` as taps: ``low`` -> ``input_size`` bilinear, the first
    ``valid`` samples kept, bilinear to ``out``, composed into one ``out x low`` matrix whose rows
    are non-zero on a band of at most k consecutive inputs -> (first input ``out``, weights ``out x k``
    float32) with input ``first + j`` taken with weight ``w[:, j]``. Made once per image size."""
    m = _bilinear_matrix(valid, out) @ _bilinear_matrix(low, input_size)[:valid]
    nz = m != 0
    k = max(1, int(nz.sum(1).max()))
    first = np.minimum(nz.argmax(1), low - k)
    w = np.take_along_axis(m, first[:, None] + np.arange(k)[None, :], 1).astype(np.float32)
    first.setflags(write=False)
    w.setflags(write=False)
    return first, w


def _band_apply(x: np.ndarray, first: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``... x n x c`` -> ``... x len(first) x c``: row i = sum_j w[i, j] * x[first[i] + j]."""
    out = x[..., first, :] * w[:, 0, None]
    for j in range(1, w.shape[1]):
        out += x[..., first + j, :] * w[:, j, None]
    return out


def sam_postprocess(low: np.ndarray, input_size: int, input_hw: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """segment-anything's mask postprocessing of low-res logits ``... x h x w``: bilinear to
    ``input_size`` square, crop to the resized image ``input_hw``, bilinear to ``size`` (H, W).
    Both steps are linear per axis, so they run as one ``H x h`` and one ``W x w`` map per axis,
    applied as a band of a few taps per output (the same numbers up to float rounding, without
    the ``input_size`` square in between, nor a dense matrix product: a multi-threaded BLAS on a
    busy machine made that 4x slower than the graph run)."""
    low = np.asarray(low, dtype=np.float32)
    (h, w), (nh, nw) = low.shape[-2:], (int(input_hw[0]), int(input_hw[1]))
    rows = _band_apply(low, *_sam_band(h, int(input_size), nh, int(size[0])))  # ... x H x w
    cols = _band_apply(np.ascontiguousarray(np.swapaxes(rows, -1, -2)), *_sam_band(w, int(input_size), nw, int(size[1])))
    return np.ascontiguousarray(np.swapaxes(cols, -1, -2))


def _aa_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``out x in`` float32 weights of torch's antialiased bilinear (PIL's triangle filter
    widened by the scale when reducing, normalised over the taps inside the input)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        j = np.arange(lo, hi)
        w = np.clip(1.0 - np.abs((j - center + 0.5) * invscale), 0.0, None)
        total = w.sum()
        m[i, lo:hi] = w / total if total > 0 else w
    return m.astype(np.float32)


def resize_bilinear(x: np.ndarray, size: Sequence[int], antialias: bool = False) -> np.ndarray:
    """``... x H x W`` float32 -> ``... x size[0] x size[1]``, as ``F.interpolate(...,
    mode="bilinear", align_corners=False, antialias=antialias)``. Upsampling is the same with
    or without antialias."""
    x = np.asarray(x, dtype=np.float32)
    (h, w), (oh, ow) = x.shape[-2:], (int(size[0]), int(size[1]))
    if antialias and (oh < h or ow < w):
        wy, wx = _aa_matrix(h, oh), _aa_matrix(w, ow)
        return np.matmul(np.matmul(wy, x), wx.T).astype(np.float32)
    c0, c1, cl0, cl1 = _taps(w, ow)
    t = x[..., c0] * cl0 + x[..., c1] * cl1  # columns first, then rows: torch's order of operations
    r0, r1, rl0, rl1 = _taps(h, oh)
    return (t[..., r0, :] * rl0[:, None] + t[..., r1, :] * rl1[:, None]).astype(np.float32)


def _cubic_taps(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Four-tap bicubic indices ``out x 4`` (clamped to the input) and weights ``out x 4``
    (A = -0.75, align_corners=False: torch's ``upsample_bicubic2d``)."""
    a = np.float32(-0.75)
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(src)
    t = (src - base).astype(np.float32)
    x1, x2 = t + 1, 1 - t
    w = np.stack([((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a, ((a + 2) * t - (a + 3)) * t * t + 1,
                  ((a + 2) * x2 - (a + 3)) * x2 * x2 + 1, ((a * (x2 + 1) - 5 * a) * (x2 + 1) + 8 * a) * (x2 + 1) - 4 * a],
                 axis=1).astype(np.float32)
    idx = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, in_size - 1)
    return idx, w


def resize_bicubic(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``... x H x W`` float32 -> ``... x size[0] x size[1]``, as ``F.interpolate(...,
    mode="bicubic", align_corners=False)`` (EfficientSAM's mask upsampling)."""
    x = np.asarray(x, dtype=np.float32)
    ci, cw = _cubic_taps(x.shape[-1], int(size[1]))
    t = sum(x[..., ci[:, k]] * cw[:, k] for k in range(4))  # columns first, then rows
    ri, rw = _cubic_taps(x.shape[-2], int(size[0]))
    return sum(t[..., ri[:, k], :] * rw[:, k, None] for k in range(4)).astype(np.float32)


def normalise_chw(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``3 x H x W`` (or ``1 x 3 x H x W``) float32 -> ``(x - mean) / std`` per channel."""
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return ((x - m) / s).astype(np.float32)


def preprocess(image: np.ndarray, spec: dict, input_name: str) -> Tuple[Dict[str, np.ndarray], Tuple[int, int]]:
    """H x W x 3 uint8 -> ({input_name: encoder input}, (h, w) of the resized image inside the
    model frame) by the manifest's ``image`` section ``spec``: ``longest_side`` gives the resized
    h x w x 3 float32 image (0..255; the graph normalises and pads), ``stretch`` the normalised
    1 x 3 x S x S tensor."""
    pre, size = spec["preprocess"], int(spec["input_size"])
    if pre["rule"] == "longest_side":
        resized = resize_longest_side(image, size)
        return {input_name: np.ascontiguousarray(resized, dtype=np.float32)}, tuple(resized.shape[:2])
    x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    x = resize_bilinear(x, (size, size), antialias=bool(pre.get("antialias")))
    return {input_name: normalise_chw(x, pre["mean"], pre["std"])[None]}, (size, size)


def stability_score(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """``... x H x W`` -> ``...`` float32: count(> threshold + offset) / count(> threshold - offset),
    0.0 where the second count is 0."""
    high = np.count_nonzero(logits > threshold + offset, axis=(-2, -1))
    low = np.count_nonzero(logits > threshold - offset, axis=(-2, -1))
    return np.where(low > 0, high.astype(np.float32) / np.maximum(low, 1).astype(np.float32), np.float32(0.0))


def dynamic_multimask_index(low: np.ndarray, iou: np.ndarray, delta: float, thresh: float) -> np.ndarray:
    """SAM 2's single-mask output among all tokens (``low`` N x 4 x h x w, ``iou`` N x 4): token 0
    when it is stable (stability at offset ``delta`` >= ``thresh``, or no logit above ``-delta``,
    which SAM 2 scores 1.0), else the multimask token (1..3) with the highest IoU. Returns (N,)."""
    best = np.argmax(iou[:, 1:], axis=-1) + 1
    single = low[:, 0]
    stable = stability_score(single, 0.0, delta) >= thresh
    stable |= ~np.any(single > -delta, axis=(-2, -1))
    return np.where(stable, 0, best)
