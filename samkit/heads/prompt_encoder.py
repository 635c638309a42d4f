"""The prompt encoder shared by every family (SAM layout of the keys)."""
from __future__ import annotations

from typing import Optional, Tuple, Type

import torch
from torch import nn

from ..layers import LayerNorm2d, PositionEmbeddingRandom


class PromptEncoder(nn.Module):
    """Embeds points, boxes and mask logits.

    Point labels: 1 foreground, 0 background, 2 / 3 box top-left / bottom-right corners,
    -1 padding (``not_a_point_embed``). Coordinates are pixels of the ``input_image_size`` frame.

    Options for the family differences:
      ``with_mask_input``: a mask-downscaling branch exists (False for EfficientSAM);
      ``pad_keeps_pe``: padding points keep their positional encoding (EfficientSAM) instead of
      being zeroed (SAM);
      ``pad_points``: append one padding point when no box is given (SAM, SAM 2; not EfficientSAM).
    """

    def __init__(self, embed_dim: int = 256, image_embedding_size: Tuple[int, int] = (64, 64),
                 input_image_size: Tuple[int, int] = (1024, 1024), mask_in_chans: int = 16,
                 activation: Type[nn.Module] = nn.GELU, with_mask_input: bool = True,
                 pad_keeps_pe: bool = False, pad_points: bool = True) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.with_mask_input = with_mask_input
        self.pad_keeps_pe = pad_keeps_pe
        self.pad_points = pad_points
        if with_mask_input:
            self.mask_downscaling = nn.Sequential(
                nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
                LayerNorm2d(mask_in_chans // 4),
                activation(),
                nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
                LayerNorm2d(mask_in_chans),
                activation(),
                nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
            )
            self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """``1 x C x h x w`` positional encoding of the image embedding grid. Outside training
        the same tensor is returned until the Fourier matrix changes (decoders key caches on it)."""
        if self.training or torch.is_grad_enabled():
            return self.pe_layer(self.image_embedding_size).unsqueeze(0)
        g = self.pe_layer.positional_encoding_gaussian_matrix
        key = (g.data_ptr(), g._version, g.device, g.dtype, tuple(self.image_embedding_size))
        cached = self.__dict__.get("_dense_pe")
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                cached = (key, self.pe_layer(self.image_embedding_size).unsqueeze(0))
            self.__dict__["_dense_pe"] = cached
        return cached[1]

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # centre of the pixel
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        if not self.pad_keeps_pe:
            emb = torch.where(labels == -1, torch.zeros_like(emb), emb)
        emb = emb + (labels == -1) * self.not_a_point_embed.weight
        for value in range(4):
            emb = emb + (labels == value) * self.point_embeddings[value].weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        tl = emb[:, 0, :] + self.point_embeddings[2].weight
        br = emb[:, 1, :] + self.point_embeddings[3].weight
        return torch.stack([tl, br], dim=1)

    def forward(self, points: Optional[Tuple[torch.Tensor, torch.Tensor]], boxes: Optional[torch.Tensor],
                masks: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """points: (B x N x 2, B x N); boxes: B x 4; masks: B x 1 x 4h x 4w logits.
        Returns sparse ``B x M x C`` and dense ``B x C x h x w`` embeddings."""
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        device = self.point_embeddings[0].weight.device
        parts = []
        if points is not None:
            coords, labels = points
            parts.append(self._embed_points(coords, labels, pad=self.pad_points and boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        sparse = torch.cat(parts, dim=1) if parts else torch.empty((bs, 0, self.embed_dim), device=device)
        if masks is not None:
            if not self.with_mask_input:
                raise ValueError("this model has no mask input")
            dense = self.mask_downscaling(masks)
        elif self.with_mask_input:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        else:
            dense = None
        return sparse, dense
