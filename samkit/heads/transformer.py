"""Two-way transformer of the SAM mask decoder (tokens <-> image), shared by every family."""
from __future__ import annotations

from typing import Optional, Tuple, Type

import torch
from torch import nn

from ..layers import Attention, MLPBlock
from . import fast_two_way as fast


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of the tokens, token->image cross-attention, MLP on the tokens,
    image->token cross-attention. ``skip_first_layer_pe``: the first block's self-attention
    sees no positional encoding (its queries are the raw prompt embeddings).

    ``self_attn_mode``: "sam" (SAM: ``q = k = queries + pe``, ``v = queries``, residual on
    ``queries``; the first block replaces the queries by its self-attention, no residual) or
    "efficient_sam" (EfficientSAM: ``queries += pe`` first (not in the first block), then
    ``queries = queries + self_attn(queries, queries, queries)`` in every block)."""

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int = 2048,
                 activation: Type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 skip_first_layer_pe: bool = False, self_attn_mode: str = "sam") -> None:
        super().__init__()
        if self_attn_mode not in ("sam", "efficient_sam"):
            raise ValueError(f"self_attn_mode must be 'sam' or 'efficient_sam', got {self_attn_mode!r}")
        self.self_attn_mode = self_attn_mode
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def token_self_attention(self, queries: torch.Tensor, query_pe: torch.Tensor,
                             key_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The tokens' self-attention (per ``self_attn_mode``) followed by ``norm1``. ``key_bias``
        (N): added to every query's score of each token as a key (the log multiplicity of merged
        repeated tokens, ``factored_decoder.merge_repeated``)."""
        if self.self_attn_mode == "efficient_sam":
            if not self.skip_first_layer_pe:
                queries = queries + query_pe
            queries = queries + self.self_attn(queries, queries, queries, key_bias)
        elif self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, key_bias)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, key_bias)
        return self.norm1(queries)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        queries = self.token_self_attention(queries, query_pe)
        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``image_embedding`` B x C x h x w, ``image_pe`` B x C x h x w, ``point_embedding`` B x N x C
    -> (tokens B x N x C, image B x hw x C)."""

    def __init__(self, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8, mlp_dim: int = 2048,
                 activation: Type[nn.Module] = nn.ReLU, attention_downsample_rate: int = 2,
                 self_attn_mode: str = "sam") -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, activation, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0), self_attn_mode=self_attn_mode)
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)
        self.fast = True  # eval-mode fast path; False runs reference_forward

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor,
                first_layer: Optional[dict] = None, out_tokens: Optional[int] = None,
                state: Optional[dict] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``image_embedding`` 1 or B x C x h x w (1: shared by all B prompt sets). In eval mode
        the exact low-rank fast path runs (see ``fast_two_way``); ``first_layer`` optionally holds
        the first block's image-side projections of a shared image (from :meth:`first_layer`).
        ``out_tokens``: return only the first ``out_tokens`` tokens (B x out_tokens x C); the fast
        path then runs the final attention for those rows only; ``state`` (fast path) receives
        what ``fast_two_way.final_attention`` needs to add more rows later."""
        if self.training or not self.fast:
            queries, keys = self.reference_forward(image_embedding, image_pe, point_embedding)
            return (queries if out_tokens is None else queries[:, :out_tokens]), keys
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        b = point_embedding.shape[0]
        if first_layer is None and keys.shape[0] == 1 and key_pe.shape[0] == 1 and b > 1:
            first_layer = self.first_layer(image_embedding, image_pe)
        if first_layer is not None:
            keys, key_pe = first_layer["keys"], first_layer["key_pe"]
        else:
            keys, key_pe = keys.contiguous(), key_pe.contiguous()
        queries, keys = fast.transformer_forward(self, point_embedding, keys, key_pe, first_layer,
                                                 out_tokens=out_tokens, state=state)
        if keys.shape[0] != b:
            keys = keys.expand(b, -1, -1)
        return queries, keys

    def first_layer(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> dict:
        """Image-only projections of the first block for one shared image (1 x C x h x w)."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        return fast.first_layer_projections(self.layers[0], keys, key_pe)

    def reference_forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                          point_embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The published formulation (used in training and as the tests' reference)."""
        b = point_embedding.shape[0]
        if image_embedding.shape[0] != b:
            image_embedding = image_embedding.expand(b, -1, -1, -1)
        if image_pe.shape[0] != b:
            image_pe = image_pe.expand(b, -1, -1, -1)
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
