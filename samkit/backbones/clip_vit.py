"""CLIP's image ViT (OpenAI ``VisionTransformer``), keys as in OpenAI's and open_clip's files:
``conv1`` (patchifier, no bias), ``class_embedding``, ``positional_embedding`` (1 + grid^2 rows),
``ln_pre``, ``transformer.resblocks.N.*``, ``ln_post``, ``proj`` (width x output_dim).

Inputs of another size than ``input_resolution`` get the learned grid of position embeddings
resized bicubically (the class slot unchanged), so any multiple of the patch size works.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..layers.position import resize_abs_pos
from ..layers.residual_attention import ResidualTransformer


class VisionTransformer(nn.Module):
    """``B x 3 x H x W`` (normalised pixels) -> ``B x output_dim`` image embedding (the class
    token after ``ln_post``, times ``proj``)."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = ResidualTransformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def position_embedding(self, hw: Tuple[int, int]) -> torch.Tensor:
        """``(1 + h*w) x C``: the class slot, then the grid resized to ``h x w`` when it differs."""
        pos = self.positional_embedding
        grid = resize_abs_pos(pos[None], True, hw)  # 1 x h x w x C
        return torch.cat([pos[:1], grid.reshape(-1, pos.shape[1])], dim=0)

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Tokens entering the first block, ``B x (1 + h*w) x C`` (class token first, rows of
        patches in raster order), and the patch grid ``(h, w)``."""
        x = self.conv1(x.to(self.conv1.weight.dtype))
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1) + self.position_embedding((h, w)).to(x.dtype)
        return self.ln_pre(x), (h, w)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Last-block tokens ``B x N x C`` -> ``B x output_dim`` (class token)."""
        return self.ln_post(tokens[:, 0]) @ self.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.embed(x)
        return self.pool(self.transformer(tokens))

    def forward_layers(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Patch tokens after every block as maps ``B x C x h x w`` (class token dropped)."""
        tokens, (h, w) = self.embed(x)
        return [t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, h, w)
                for t in self.transformer.forward_layers(tokens)]
