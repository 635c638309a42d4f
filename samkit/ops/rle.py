"""Run-length encoding in the COCO layout (column-major runs starting with background).

``mask_to_rle`` / ``rle_to_mask`` handle uncompressed RLE (``{"size": [h, w], "counts":
[int, ...]}``) in pure PyTorch/NumPy; ``rle_to_coco`` / ``coco_to_mask`` use pycocotools for
the compressed string form (extra ``samkit[coco]``).
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from ..errors import InputError, require
from ..mask_codecs import rle_decode


def mask_to_rle(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """``N x H x W`` bool -> N uncompressed RLE dicts (column-major, first run = background)."""
    if masks.dim() != 3:
        raise InputError(f"masks must be N x H x W, got shape {tuple(masks.shape)}; fix: add a batch axis")
    n, h, w = masks.shape
    flat = masks.bool().permute(0, 2, 1).reshape(n, h * w)
    out: List[Dict[str, Any]] = []
    if h * w == 0:
        return [{"size": [h, w], "counts": [0]} for _ in range(n)]
    change = (flat[:, 1:] ^ flat[:, :-1]).nonzero()
    rows, cols = change[:, 0], change[:, 1] + 1
    split = torch.bincount(rows, minlength=n).tolist()
    per_mask = torch.split(cols, split)
    first = flat[:, 0].tolist()
    for i in range(n):
        edges = torch.cat([torch.zeros(1, dtype=torch.int64, device=flat.device), per_mask[i],
                           torch.full((1,), h * w, dtype=torch.int64, device=flat.device)])
        runs = (edges[1:] - edges[:-1]).tolist()
        out.append({"size": [h, w], "counts": ([0] + runs) if first[i] else runs})
    return out


def rle_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Uncompressed RLE -> H x W bool array (the one decoder: :func:`samkit.mask_codecs.rle_decode`)."""
    return rle_decode(rle)


def rle_area(rle: Dict[str, Any]) -> int:
    """Foreground pixel count of an uncompressed RLE."""
    return int(sum(rle["counts"][1::2]))


def rle_to_coco(rle: Dict[str, Any]) -> Dict[str, Any]:
    """Uncompressed RLE -> COCO compressed RLE with a str ``counts`` (JSON-serialisable)."""
    mask_utils = require("pycocotools.mask", "coco", "COCO RLE output")
    h, w = rle["size"]
    coco = mask_utils.frPyObjects(rle, h, w)
    coco["counts"] = coco["counts"].decode("utf-8")
    return coco


def masks_to_coco_rle(masks: torch.Tensor) -> List[Dict[str, Any]]:
    """``N x H x W`` bool -> N COCO compressed RLE dicts."""
    return [rle_to_coco(r) for r in mask_to_rle(masks)]


def coco_to_mask(rle: Dict[str, Any]) -> np.ndarray:
    """COCO compressed RLE (str or bytes counts) -> H x W bool array (through pycocotools)."""
    return rle_decode(rle)
