"""Heat-map peaks -> point and box prompts for a SAM-family model.

The rule, for the probability map P of one text (``samkit.vocab.heatmap``), computed on a
working grid of at most ``WORK_SIDE`` (256) pixels on the image's longer side (CLIP's dense grid
has 14-64 cells per side, so this loses nothing and keeps the search cheap):

1. the region is ``P > threshold`` (default 0.5: the text is more likely than all other classes
   together there; strict, so an exact tie between two classes is not a find);
2. the region is split into 8-connected components; components smaller than ``min_area`` (a
   fraction of the image, default 0.001) are dropped;
3. each component gives one instance: one positive point at the component's highest P
   (the pixel centre of that working cell, in image pixels) and the component's bounding box
   (scaled to image pixels, clipped to the image); its score is that peak probability;
4. instances are ordered by score, highest first, and at most ``max_instances`` (default 8)
   are kept.

No component passing the threshold means the text was not found: no prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

WORK_SIDE = 256
THRESHOLD = 0.5
MAX_INSTANCES = 8
MIN_AREA = 0.001


@dataclass(frozen=True)
class InstancePrompt:
    """One instance found in a heat map: ``point`` (2,) float32 x, y and ``box`` (4,) float32
    x0, y0, x1, y1 in image pixels, ``score`` its peak probability, ``area`` its image fraction."""

    point: np.ndarray
    box: np.ndarray
    score: float
    area: float


def work_size(image_hw: Sequence[int], side: int = WORK_SIDE) -> Tuple[int, int]:
    """(h, w) of the working grid: the image scaled down to at most ``side`` px, never up."""
    h, w = int(image_hw[0]), int(image_hw[1])
    s = min(1.0, side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def connected_components(mask: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """h x w bool -> (h x w int64 labels 1..n, 0 outside, n): 8-connected components.

    Label propagation: every pixel takes the largest index in its 3 x 3 neighbourhood within
    the region until nothing changes (at most h * w rounds; about the component's diameter)."""
    h, w = mask.shape
    idx = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(h, w)
    lab = torch.where(mask, idx, torch.zeros_like(idx))
    for _ in range(h * w):
        nxt = F.max_pool2d(lab[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(nxt, lab):
            break
        lab = nxt
    uniq = torch.unique(lab[mask])
    out = torch.zeros(h, w, dtype=torch.int64)
    if uniq.numel():
        out[mask] = torch.searchsorted(uniq, lab[mask]) + 1
    return out, int(uniq.numel())


def check_options(threshold: float, max_instances: int, min_area: float) -> None:
    if not 0.0 <= float(threshold) < 1.0:
        raise InputError(f"threshold must be in [0, 1), got {threshold!r}. Fix: use 0.5.")
    if isinstance(max_instances, bool) or int(max_instances) != max_instances or max_instances < 1:
        raise InputError(f"max_instances must be a whole number >= 1, got {max_instances!r}. Fix: use e.g. 8.")
    if not 0.0 <= float(min_area) < 1.0:
        raise InputError(f"min_area must be a fraction of the image in [0, 1), got {min_area!r}. Fix: use 0.001.")


def peaks_to_prompts(heat: torch.Tensor, image_hw: Sequence[int], threshold: float = THRESHOLD,
                     max_instances: int = MAX_INSTANCES, min_area: float = MIN_AREA) -> List[InstancePrompt]:
    """A probability map ``heat`` (h x w, any resolution covering the image) -> instances of the
    rule above, in image pixels of an image of ``image_hw`` = (H, W), best first."""
    check_options(threshold, max_instances, min_area)
    heat = torch.as_tensor(heat).float()
    h, w = heat.shape
    big_h, big_w = int(image_hw[0]), int(image_hw[1])
    sy, sx = big_h / h, big_w / w
    labels, n = connected_components(heat > float(threshold))
    found = []
    for c in range(1, n + 1):
        comp = labels == c
        area = float(comp.sum()) / (h * w)
        if area < float(min_area):
            continue
        masked = torch.where(comp, heat, torch.full_like(heat, -1.0))
        k = int(masked.flatten().argmax())
        r, col = divmod(k, w)
        rows, cols = torch.nonzero(comp.any(1)).flatten(), torch.nonzero(comp.any(0)).flatten()
        box = np.array([cols[0] * sx, rows[0] * sy, (cols[-1] + 1) * sx, (rows[-1] + 1) * sy], np.float64)
        box = np.clip(box, 0, [big_w, big_h, big_w, big_h]).astype(np.float32)
        point = np.array([(col + 0.5) * sx, (r + 0.5) * sy], np.float32)
        found.append(InstancePrompt(point, box, float(heat[r, col]), area))
    found.sort(key=lambda p: -p.score)
    return found[: int(max_instances)]


def text_prompts(clip, image, texts: Sequence[str], *, threshold: float = THRESHOLD,
                 max_instances: int = MAX_INSTANCES, min_area: float = MIN_AREA, **heat_options
                 ) -> List[List[InstancePrompt]]:
    """For every text, its instances (``peaks_to_prompts``) in ``image`` (H x W x 3 uint8).
    ``heat_options`` go to ``samkit.vocab.heatmap.heat_maps`` (features, background, templates,
    temperature, denoise)."""
    from ..io.image import load_image
    from .heatmap import heat_maps

    check_options(threshold, max_instances, min_area)
    img = load_image(image)
    maps = heat_maps(clip, img, texts, size=work_size(img.shape[:2]), **heat_options)
    return [peaks_to_prompts(m, img.shape[:2], threshold, max_instances, min_area) for m in maps]
