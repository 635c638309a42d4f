"""Point grids and crop boxes of segment-everything mode (the rules of the SAM paper's
automatic mask generation: an n x n grid of cell-centre points per crop layer, layer i split
into 2**i x 2**i overlapping crops)."""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from ..errors import InputError


def point_grid(n_per_side: int) -> np.ndarray:
    """``n*n x 2`` float64 (x, y) in [0, 1]: cell centres ``(k + 0.5) / n``, x fastest."""
    if n_per_side < 1:
        raise InputError(f"points_per_side must be >= 1, got {n_per_side}; fix: use e.g. 32")
    half = 1.0 / (2 * n_per_side)
    axis = np.linspace(half, 1.0 - half, n_per_side)
    xs = np.tile(axis[None, :], (n_per_side, 1))
    ys = np.tile(axis[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> List[np.ndarray]:
    """One grid per crop layer; layer i has ``int(n_per_side / downscale**i)`` points per side."""
    if downscale < 1:
        raise InputError(f"crop_n_points_downscale_factor must be >= 1, got {downscale}; fix: use 1 or 2")
    grids = []
    for i in range(n_layers + 1):
        n = int(n_per_side / (downscale ** i))
        if n < 1:
            raise InputError(f"crop layer {i} would have {n} points per side; fix: lower crop_n_layers "
                             f"or crop_n_points_downscale_factor, or raise points_per_side")
        grids.append(point_grid(n))
    return grids


def crop_boxes(image_hw: Tuple[int, int], n_layers: int, overlap_ratio: float) -> Tuple[List[List[int]], List[int]]:
    """xyxy crop boxes and their layer index. Layer 0 is the whole image; layer i >= 1 has
    ``2**i`` crops per side of length ``ceil((overlap * (n - 1) + side) / n)`` that overlap by
    ``int(overlap_ratio * short_side * 2 / n)`` pixels, clipped to the image."""
    if n_layers < 0:
        raise InputError(f"crop_n_layers must be >= 0, got {n_layers}; fix: use 0 (no crops) or 1")
    h, w = image_hw
    short = min(h, w)
    boxes: List[List[int]] = [[0, 0, w, h]]
    layers: List[int] = [0]
    for layer in range(1, n_layers + 1):
        n = 2 ** layer
        overlap = int(overlap_ratio * short * (2 / n))
        cw = int(math.ceil((overlap * (n - 1) + w) / n))
        ch = int(math.ceil((overlap * (n - 1) + h) / n))
        x0s = [int((cw - overlap) * i) for i in range(n)]
        y0s = [int((ch - overlap) * i) for i in range(n)]
        for x0 in x0s:  # x outer, y inner: the official enumeration order
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + cw, w), min(y0 + ch, h)])
                layers.append(layer)
    return boxes, layers



def coarse_to_fine_levels(n_per_side: int, coarsest: int = 2) -> List[np.ndarray]:
    """Fast segment-everything: the points of ``point_grid(n_per_side)`` split into levels,
    coarsest first, each an ``n*n`` bool selection. Level k takes the rows and columns
    ``i % s == s // 2`` for stride ``s = 2**k`` (an evenly spread sub-grid of about ``n / s``
    points per side), from the largest stride with at least ``coarsest`` points per side down
    to ``s = 1``, which selects every point; a point is decided once, at the first level that
    selects it, so no point is decoded twice."""
    idx = np.arange(n_per_side)
    strides = [1]
    while n_per_side // (strides[-1] * 2) >= coarsest:
        strides.append(strides[-1] * 2)
    levels = []
    for s in reversed(strides):
        axis = idx % s == s // 2 if s > 1 else np.ones(n_per_side, bool)
        levels.append((axis[:, None] & axis[None, :]).reshape(-1))  # row (y) major, x fastest
    return levels
