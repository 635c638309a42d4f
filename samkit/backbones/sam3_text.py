"""SAM 3's text encoder (official ``VETextEncoder``): a CLIP-style causal text transformer
whose every token (not a pooled one) is resized to the detector width.

Facts: CLIP's byte-level BPE (``samkit.text.clip_tokenizer``, the same merges file and
cleaning: ``ftfy``, HTML unescape, whitespace, lower case), start 49406 / end 49407, zero
padding, a context of 32 tokens; width 1024, 24 pre-norm blocks of 16 heads with packed q/k/v
(``nn.MultiheadAttention`` keys), exact GELU MLP of 4096, causal attention, LayerNorm
(eps 1e-5) after the blocks (``ln_final``). The tower's ``text_projection`` (width x 512) is in
the checkpoint but unused (no pooling); ``resizer`` (Linear width -> 256) maps every token.
The valid-token mask is ``ids != 0``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from ..layers.residual_attention import ResidualTransformer

CONTEXT_LENGTH = 32


class TextTower(nn.Module):
    """Token embedding + position embedding + causal residual transformer + ``ln_final``
    (official ``TextTransformer`` keys). ``ids B x L`` -> ``B x L x width``."""

    def __init__(self, context_length: int = CONTEXT_LENGTH, vocab_size: int = 49408, width: int = 1024,
                 heads: int = 16, layers: int = 24, output_dim: int = 512) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.transformer = ResidualTransformer(width, layers, heads, act=nn.GELU)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, output_dim))  # unused by SAM 3

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        return self.ln_final(self.transformer(x, causal=True))


class Sam3TextEncoder(nn.Module):
    """``encoder`` (:class:`TextTower`) + ``resizer``. ``forward(ids B x L)`` -> (features
    ``B x L x d_model``, valid mask ``B x L`` bool)."""

    reader = "SAM 3"

    def __init__(self, d_model: int = 256, width: int = 1024, heads: int = 16, layers: int = 24,
                 context_length: int = CONTEXT_LENGTH, vocab_size: int = 49408) -> None:
        super().__init__()
        self.context_length = context_length
        self.encoder = TextTower(context_length, vocab_size, width, heads, layers)
        self.resizer = nn.Linear(width, d_model)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """``texts`` -> ``N x context_length`` ids; a text that does not fit raises ``InputError``."""
        from ..text.clip_tokenizer import default_tokenizer

        ids = default_tokenizer().tokenize(list(texts), self.context_length, reader=self.reader)
        return ids.to(self.resizer.weight.device)

    def forward(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.resizer(self.encoder(ids)), ids != 0
