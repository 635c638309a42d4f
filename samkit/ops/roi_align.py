"""RoIAlign in plain torch (no torchvision, no compiled extension).

Semantics of mmcv's ``RoIAlign(output_size, spatial_scale, sampling_ratio, pool_mode="avg",
aligned=True)`` (He et al., Mask R-CNN; the ``aligned`` half-pixel correction of Detectron2),
which is what Open-Vocabulary SAM runs:

* a box ``x1, y1, x2, y2`` (input pixels) maps to ``x1 * scale - 0.5 ... x2 * scale - 0.5``
  on the feature map (``aligned``; without it no shift and a width of at least 1);
* each of the ``ph x pw`` bins averages ``gh x gw`` bilinear samples at the centres of a regular
  sub-grid, ``gh = sampling_ratio`` or, when it is 0, ``ceil(roi_height / ph)`` (per box);
  a box of zero size has no samples and gives 0;
* a sample more than one pixel outside the map (``y < -1``, ``y > H``, same for x) contributes
  0; otherwise coordinates below 0 are clamped to 0 and the last row/column is repeated.

The bilinear weights factor into a row part and a column part, so every bin is
``Ay @ F @ Ax^T`` with ``Ay`` (ph x H) and ``Ax`` (pw x W) the averaged interpolation weights;
only the rows and columns a box touches are read.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import torch


def _axis_weights(start: torch.Tensor, size: torch.Tensor, bins: int, samples: int, length: int
                  ) -> Tuple[torch.Tensor, int]:
    """Averaged bilinear weights along one axis: ``bins x n`` over the map positions
    ``offset .. offset + n - 1`` (returned with ``offset``), for ``samples`` per bin."""
    dtype, device = start.dtype, start.device
    if samples == 0:
        return torch.zeros(bins, 1, dtype=dtype, device=device), 0
    bin_size = size / bins
    i = torch.arange(bins, device=device, dtype=dtype)[:, None]
    s = torch.arange(samples, device=device, dtype=dtype)[None, :]
    pos = start + i * bin_size + (s + 0.5) * bin_size / samples  # bins x samples
    valid = (pos >= -1.0) & (pos <= length)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    last = low >= length - 1
    low = torch.where(last, torch.full_like(low, length - 1), low)
    pos = torch.where(last, low.to(dtype), pos)
    high = torch.where(last, low, low + 1)
    frac = pos - low.to(dtype)
    w_low = torch.where(valid, 1.0 - frac, torch.zeros_like(frac))
    w_high = torch.where(valid, frac, torch.zeros_like(frac))
    lo = int(low[valid].min()) if bool(valid.any()) else 0
    hi = int(high[valid].max()) if bool(valid.any()) else 0
    n = hi - lo + 1
    out = torch.zeros(bins, samples, n, dtype=dtype, device=device)
    out.scatter_add_(2, (low - lo).clamp(0, n - 1)[..., None], w_low[..., None])
    out.scatter_add_(2, (high - lo).clamp(0, n - 1)[..., None], w_high[..., None])
    return out.sum(1), lo


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: Union[int, Sequence[int]],
              spatial_scale: float, sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """``features`` B x C x H x W, ``rois`` K x 5 (batch index, x1, y1, x2, y2 in input pixels)
    -> K x C x ph x pw (mmcv ``RoIAlign`` with ``pool_mode="avg"``)."""
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    _, c, h, w = features.shape
    out = features.new_zeros(rois.shape[0], c, ph, pw)
    offset = 0.5 if aligned else 0.0
    # the box arithmetic runs in the feature dtype, as the reference kernels do
    boxes = rois.to(features.dtype)
    scale = torch.tensor(spatial_scale, dtype=features.dtype)
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (boxes[k, 1:] * scale - offset).unbind()
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(float(rh / ph))
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(float(rw / pw))
        if gh <= 0 or gw <= 0:
            continue  # no sample in any bin: the reference kernels return 0
        ay, y0 = _axis_weights(y1, rh, ph, gh, h)
        ax, x0 = _axis_weights(x1, rw, pw, gw, w)
        window = features[b, :, y0:y0 + ay.shape[1], x0:x0 + ax.shape[1]]
        out[k] = torch.einsum("ph,chw,qw->cpq", ay, window, ax) / (gh * gw)
    return out
