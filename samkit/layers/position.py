"""Position encodings: SAM's random Fourier features (prompt encoder), the sine encodings of
the SAM 2 family (FPN / ViTDet necks, memory encoder, perceiver, object pointers) and the
resizing of learned absolute ViT embeddings."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
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


# ------------------------------------------------------------------------------ sine encodings
def sine_encoding_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sine encoding of scalar positions: ``(...,)`` -> ``(..., dim)``.

    First half ``sin(p / T^(2*(i//2)/(dim/2)))``, second half the cosines (upstream's
    ``get_1d_sine_pe``; used for the temporal position of object pointers)."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float32, device=positions.device)
    denom = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)
    ang = positions.to(torch.float32).unsqueeze(-1) / denom
    return torch.cat([ang.sin(), ang.cos()], dim=-1)


#: the one cache of 2-D sine encodings; see :func:`sine_encoding_2d`
_SINE_2D: Dict[tuple, torch.Tensor] = {}
_SINE_2D_MAX = 64


def sine_encoding_2d(height: int, width: int, num_feats: int, device: Union[str, torch.device, None] = None,
                     temperature: float = 10000.0, normalize: bool = True,
                     scale: Optional[float] = None) -> torch.Tensor:
    """Normalised 2-D sine position encoding (DETR style) of an ``height x width`` grid:
    ``1 x num_feats x H x W`` float32.

    Rows and columns are numbered 1..H / 1..W; with ``normalize`` they are divided by
    (last + 1e-6) and multiplied by ``scale`` (2*pi). The first ``num_feats/2`` channels encode
    y, the rest x; within each half the channels alternate sin, cos with frequencies
    ``T^(-2*(i//2)/(num_feats/2))``.

    Cache policy (the only one): the result depends only on the arguments, so it is built
    once per (arguments, device, inference mode) without autograd and shared; tensors made
    under inference mode are kept apart so that they never reach autograd. At most
    ``_SINE_2D_MAX`` grids are kept. The returned tensor is shared: never modify it in place."""
    if num_feats % 2:
        raise ValueError(f"num_feats must be even, got {num_feats}")
    if scale is not None and not normalize:
        raise ValueError("scale needs normalize=True")
    scale = 2 * math.pi if scale is None else float(scale)
    device = torch.device("cpu") if device is None else torch.device(device)
    key = (height, width, num_feats, float(temperature), normalize, scale, str(device),
           torch.is_inference_mode_enabled())
    out = _SINE_2D.get(key)
    if out is None:
        if len(_SINE_2D) >= _SINE_2D_MAX:
            _SINE_2D.clear()
        with torch.no_grad():
            out = _sine_grid(height, width, num_feats, device, float(temperature), normalize, scale)
        _SINE_2D[key] = out
    return out


def _sine_grid(height: int, width: int, num_feats: int, device: torch.device, temperature: float,
               normalize: bool, scale: float) -> torch.Tensor:
    """Uncached body of :func:`sine_encoding_2d`: ``1 x num_feats x H x W``."""
    half = num_feats // 2
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    if normalize:
        eps = 1e-6
        y = y / (y[-1:] + eps) * scale
        x = x / (x[-1:] + eps) * scale
    i = torch.arange(half, dtype=torch.float32, device=device)
    denom = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / half)

    def enc(v: torch.Tensor) -> torch.Tensor:  # (L,) -> (L, half), sin on even, cos on odd channels
        a = v[:, None] / denom
        return torch.stack((a[:, 0::2].sin(), a[:, 1::2].cos()), dim=2).flatten(1)

    py = enc(y)[:, None, :].expand(height, width, half)
    px = enc(x)[None, :, :].expand(height, width, half)
    return torch.cat((py, px), dim=2).permute(2, 0, 1).unsqueeze(0).contiguous()


class PositionEmbeddingSine(nn.Module):
    """Module form of :func:`sine_encoding_2d` (the FPN / ViTDet necks' ``position_encoding``):
    ``forward(x: B x * x H x W) -> B x num_pos_feats x H x W`` in ``x``'s dtype (an expanded
    view of the shared cached grid). No parameters or buffers."""

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, normalize: bool = True,
                 scale: Optional[float] = None) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        if scale is not None and not normalize:
            raise ValueError("scale needs normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = float(temperature)
        self.normalize = normalize
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = sine_encoding_2d(x.shape[-2], x.shape[-1], self.num_pos_feats, x.device, self.temperature,
                               self.normalize, self.scale)
        return pos.expand(x.shape[0], -1, -1, -1).to(x.dtype)


# ------------------------------------------------------------------------- learned absolute
def resize_abs_pos(pos: torch.Tensor, has_cls_token: bool, hw: Tuple[int, int]) -> torch.Tensor:
    """``1 x N x C`` pretrained absolute embedding (a square grid, optionally after a leading
    class-token slot) -> ``1 x h x w x C``; resized bicubically (align_corners=False) only when
    the grid differs from ``hw`` (ViTDet / EfficientSAM / EfficientTAM ViTs)."""
    if has_cls_token:
        pos = pos[:, 1:]
    n = pos.shape[1]
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"position embedding with {n} slots is not a square grid")
    h, w = hw
    grid = pos.reshape(1, side, side, -1)
    if (side, side) == (h, w):
        return grid
    grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1)
