"""Prompts for training: from ground-truth masks, and from where two masks disagree.

Every random choice is drawn from a generator seeded by (run seed, stream position, ...), never
from a global state, so a sample is the same whichever rank reads it and after a resume.

* :func:`prepare` turns one image and its masks into what a model of a given geometry needs: the
  preprocessed input (the family's own resize / pad / normalise rule, ``model.preprocess``), ``M``
  ground-truth masks on the low-resolution grid of the model frame, the valid (non-padding) part
  of that grid, and one prompt per mask: its box (SAM's jitter: noise of 10 % of the side, at
  most 20 pixels) or one pixel inside it, in model-frame coordinates.
* :func:`disagreement_points` is the prompt-in-the-loop step of EdgeSAM: a new point drawn
  uniformly from the pixels where two masks disagree (inside the valid region); a false negative
  (in the target, not in the prediction) gives a positive point, a false positive a negative one;
  masks that agree get a padding point (label -1). Uniform draws are the argmax of a per-pixel
  random field, so a pixel that flips far from the winner does not change the draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..models.base import ImageTransform
from .data import RawSample

MAX_BOX_NOISE = 20.0  # pixels, SAM's cap


@dataclass
class Prepared:
    """One image for one model geometry. ``x``: 1 x 3 x S x S; ``targets``: M x h x w bool (low-res
    grid of the frame); ``valid``: h x w bool; ``boxes``: M x 4 and ``points``: M x 1 x 2 model-frame
    pixels; ``use_box``: M bool; ``weight``: M float (0 for an empty mask); ``pos``: stream position;
    ``transform``: the image's :class:`ImageTransform`; ``full``: M x H x W bool masks of the
    original image (only for evaluation)."""

    key: str
    digest: str
    pos: int
    x: torch.Tensor
    transform: ImageTransform
    targets: torch.Tensor
    valid: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    use_box: torch.Tensor
    weight: torch.Tensor
    full: Optional[torch.Tensor] = None


def sample_rng(seed: int, pos: int, *tags: int) -> np.random.Generator:
    """The generator of stream position ``pos`` (and sub-stream ``tags``)."""
    return np.random.default_rng([int(seed), int(pos), *map(int, tags)])


def low_res_size(transform: ImageTransform, grid: Tuple[int, int]) -> Tuple[int, int]:
    """(rows, cols) of the low-res grid covered by the image (the rest is padding)."""
    f = transform.frame
    return (min(grid[0], -(-transform.input_size[0] * grid[0] // f)),
            min(grid[1], -(-transform.input_size[1] * grid[1] // f)))


def masks_to_grid(masks: np.ndarray, transform: ImageTransform, grid: Tuple[int, int]) -> torch.Tensor:
    """``M x H x W`` bool masks of the original image -> ``M x h x w`` bool on the low-res grid of the
    model frame (resized as the image is, area-averaged, > 0.5, zero in the padding)."""
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None]
    if m.shape[0] == 0:
        return torch.zeros(0, *grid, dtype=torch.bool)
    f = transform.frame
    rows = max(1, round(transform.input_size[0] * grid[0] / f))
    cols = max(1, round(transform.input_size[1] * grid[1] / f))
    small = F.interpolate(m, (rows, cols), mode="area") if rows <= m.shape[-2] and cols <= m.shape[-1] else \
        F.interpolate(m, (rows, cols), mode="bilinear", align_corners=False)
    out = F.pad(small, (0, grid[1] - cols, 0, grid[0] - rows))[:, 0]
    return out > 0.5


def _box_prompt(mask: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)
    if noise > 0:
        side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        box = box + np.clip(rng.normal(0.0, 1.0, 4) * noise * side, -MAX_BOX_NOISE, MAX_BOX_NOISE)
    h, w = mask.shape
    box = np.clip(box, 0, [w, h, w, h])
    box[2], box[3] = max(box[2], box[0]), max(box[3], box[1])
    return box


def _point_prompt(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(xs)))
    return np.array([xs[i], ys[i]], dtype=np.float64)


def pick_masks(n: int, m: int, rng: np.random.Generator) -> List[int]:
    """``m`` of ``n`` mask indices: without replacement when ``n >= m``, else every mask then
    random repeats (so every image gives exactly ``m`` prompts)."""
    if n == 0:
        return []
    if n >= m:
        return sorted(rng.choice(n, size=m, replace=False).tolist())
    return list(range(n)) + rng.integers(0, n, size=m - n).tolist()


def prepare(raw: RawSample, model, pos: int, seed: int, masks_per_image: int, box_prob: float = 0.5,
            box_noise: float = 0.1, need_masks: bool = True, keep_full: bool = False,
            first: bool = False) -> Prepared:
    """``raw`` for ``model``'s geometry (see the module docstring). ``first``: the first
    ``masks_per_image`` masks in file order, exact boxes (evaluation) instead of a random draw."""
    with torch.no_grad():
        x, t = model.preprocess(raw.image)
    x = x.detach().cpu()
    grid = tuple(model.mask_input_size)
    valid = torch.zeros(grid, dtype=torch.bool)
    vr, vc = low_res_size(t, grid)
    valid[:vr, :vc] = True
    rng = sample_rng(seed, pos, 1)
    m = masks_per_image
    if not need_masks:
        z = torch.zeros(0)
        return Prepared(raw.key, raw.digest, pos, x, t, torch.zeros(0, *grid, dtype=torch.bool), valid,
                        z.view(0, 4), z.view(0, 1, 2), z.bool(), z)
    idx = list(range(min(m, len(raw.masks)))) if first else pick_masks(len(raw.masks), m, rng)
    h, w = raw.image.shape[:2]
    full = np.zeros((m, h, w), dtype=bool)
    for j, k in enumerate(idx):
        full[j] = raw.masks[k]()
    weight = torch.tensor([1.0 if full[j].any() else 0.0 for j in range(m)])
    boxes = np.zeros((m, 4))
    points = np.zeros((m, 2))
    for j in range(m):
        mask = full[j] if weight[j] > 0 else np.ones((h, w), dtype=bool)
        boxes[j] = _box_prompt(mask, rng, 0.0 if first else box_noise)
        points[j] = _point_prompt(mask, rng)
    use_box = torch.ones(m, dtype=torch.bool) if first else torch.from_numpy(rng.random(m) < box_prob)
    to_frame = torch.float32
    return Prepared(
        raw.key, raw.digest, pos, x, t, masks_to_grid(full, t, grid), valid,
        t.boxes_to_frame(torch.from_numpy(boxes).to(to_frame)),
        t.coords_to_frame(torch.from_numpy(points).to(to_frame))[:, None, :],
        use_box, weight, torch.from_numpy(full) if keep_full else None)


# --------------------------------------------------------------------------- disagreement
def random_fields(seed: int, positions: Sequence[int], per_image: int, iteration: int,
                  grid: Tuple[int, int]) -> torch.Tensor:
    """``(len(positions) * per_image) x h x w`` uniform fields, one generator per image and iteration."""
    out = [sample_rng(seed, p, 2, iteration).random((per_image, *grid), dtype=np.float32) for p in positions]
    return torch.from_numpy(np.concatenate(out, axis=0))


def disagreement_points(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                        field: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """New clicks from ``N x h x w`` bool ``pred`` and ``target`` inside ``valid`` (``N x h x w`` or
    ``h x w``), drawn with the uniform ``field`` (``N x h x w``). Returns (``N x 2`` (col, row) grid
    cells as float, ``N`` labels: 1 where the target has the pixel (false negative), 0 where only
    the prediction has it (false positive), -1 where the masks agree)."""
    error = (pred ^ target) & valid
    score = torch.where(error, field.to(torch.float32), torch.full_like(field, -1.0, dtype=torch.float32))
    flat = score.flatten(1).argmax(dim=1)
    w = pred.shape[-1]
    rows, cols = flat // w, flat % w
    any_error = error.flatten(1).any(dim=1)
    hit = target.flatten(1).gather(1, flat[:, None])[:, 0]
    labels = torch.where(any_error, hit.long(), torch.full_like(flat, -1))
    cells = torch.stack([cols, rows], dim=1).to(torch.float32)
    return cells, labels


def cells_to_frame(cells: torch.Tensor, grid: Tuple[int, int], frame: int) -> torch.Tensor:
    """Low-res grid cells (col, row) -> model-frame pixel coordinates of the cell centre."""
    scale = torch.tensor([frame / grid[1], frame / grid[0]], dtype=cells.dtype, device=cells.device)
    return (cells + 0.5) * scale - 0.5
