"""Position encodings shared by the prompt encoder and the decoders."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features (Tancik et al.) as in SAM. Buffer
    ``positional_encoding_gaussian_matrix``: 2 x num_pos_feats; output 2*num_pos_feats channels."""

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``... x 2`` coordinates normalised to [0, 1] -> ``... x 2F``."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an ``h x w`` grid of cell centres: ``2F x h x w``."""
        h, w = size
        g = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=g.device, dtype=g.dtype) + 0.5) / h
        xs = (torch.arange(w, device=g.device, dtype=g.dtype) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """``B x N x 2`` pixel (x, y) in a frame of ``image_size`` (h, w) -> ``B x N x 2F``."""
        c = coords.clone().to(self.positional_encoding_gaussian_matrix.dtype)
        c[:, :, 0] = c[:, :, 0] / image_size[1]
        c[:, :, 1] = c[:, :, 1] / image_size[0]
        return self._pe_encoding(c)
