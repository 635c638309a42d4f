"""A synthetic DenseClip whose answers are known without pretrained weights.

Every known word ("red", "blue", "ground" by default) owns one axis of the embedding space.
``encode_text`` maps a text that contains exactly one known word (as a whole word, so the
prompt templates keep it: "a photo of a red.") to that word's axis, and any other text to a
deterministic pseudo-random unit vector orthogonal to all word axes. ``dense_features`` gives
each pixel the axis of the word whose colour is nearest (red, blue, grey by default) and
averages the pixels of every ``cell`` x ``cell`` block (the grid covers the whole image,
as the protocol asks), then L2-normalises. So "red" selects exactly the red pixels, "blue" the
blue ones, and the grey background belongs to "ground" (one of the background classes).
"""
from __future__ import annotations

import hashlib
import re
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

COLOURS: Dict[str, Tuple[int, int, int]] = {"red": (220, 30, 30), "blue": (30, 40, 210), "ground": (128, 128, 128)}


class SyntheticClip:
    """DenseClip test double (see module docstring). ``calls`` counts texts encoded."""

    def __init__(self, colours: Dict[str, Tuple[int, int, int]] = COLOURS, dim: int = 32, cell: int = 8,
                 name: str = "synthetic-clip") -> None:
        self.colours = dict(colours)
        self.words = list(self.colours)
        self.dim = dim
        self.cell = cell
        self.name = name
        self.calls = 0
        self.dense_calls = 0

    def _axis(self, k: int) -> torch.Tensor:
        v = torch.zeros(self.dim)
        v[k] = 1.0
        return v

    def _other(self, text: str) -> torch.Tensor:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = torch.from_numpy(np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32))
        v[: len(self.words)] = 0.0
        return F.normalize(v, dim=0)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += len(texts)
        rows = []
        for t in texts:
            hits = [k for k, w in enumerate(self.words) if re.search(rf"\b{re.escape(w)}\b", t)]
            rows.append(self._axis(hits[0]) if len(hits) == 1 else self._other(t))
        return torch.stack(rows)

    def dense_features(self, image: np.ndarray) -> torch.Tensor:
        self.dense_calls += 1
        img = torch.from_numpy(np.asarray(image)).float()  # H x W x 3
        cols = torch.tensor([self.colours[w] for w in self.words], dtype=torch.float32)  # K x 3
        nearest = torch.cdist(img.reshape(-1, 3), cols).argmin(1)
        h, w = img.shape[:2]
        onehot = F.one_hot(nearest, self.dim).float().reshape(h, w, self.dim).permute(2, 0, 1)
        grid = (-(-h // self.cell), -(-w // self.cell))
        pooled = F.adaptive_avg_pool2d(onehot[None], grid)[0]
        return F.normalize(pooled, dim=0)


def two_squares(h: int = 96, w: int = 128):
    """A grey H x W image with a red and a blue rectangle -> (image, red mask, blue mask)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = COLOURS["ground"]
    red = np.zeros((h, w), bool)
    blue = np.zeros((h, w), bool)
    red[16:52, 12:56] = True
    blue[44:84, 72:116] = True
    img[red] = COLOURS["red"]
    img[blue] = COLOURS["blue"]
    return img, red, blue
