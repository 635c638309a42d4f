"""MobileCLIP's text transformer as the distilled text encoder of SAM3-LiteText and EfficientSAM3
(official ``MobileCLIPTextTransformer`` + ``TextStudentEncoder`` of SimonZeng7108/efficientsam3).

Facts (``sam3/model_builder.py`` ``_create_student_text_encoder``, ``backbones/mobile_clip.py``):

* ``MobileCLIP-S0`` (variant ``"mct"``): width 512, a RepMixer block, 4 pre-norm transformer
  blocks of 8 heads, a RepMixer block (6 blocks). ``MobileCLIP-S1``: width 512, 12 transformer
  blocks of 8 heads. ``MobileCLIP2-L``: width 768, 12 blocks of 12 heads. Every MLP is
  ``ceil(4 * width / 16) * 16`` wide with exact GELU; LayerNorm eps 1e-5; no attention mask at all
  (neither causal nor padding: the student reads its padding tokens, as upstream trained it).
* Embedding: ``embedding_layer`` (49408 tokens) plus a learned position table
  (``positional_embedding.pos_embed.pos_embed``, ``1 x 1 x 77 x width`` in the released files);
  upstream truncates the table to the model's context (16 or 32) after loading, i.e. positions
  are the table's first rows. No embedding scale is applied.
* RepMixer block (kernel 11 along the tokens, on ``B x C x 1 x L``): ``x + s1 * (mixer(x) -
  norm(x))`` with ``mixer = BN(x) + BN(dwconv(x))`` and ``norm = BN(x)``, then ``x + s2 *
  convffn(x)`` with ``convffn = fc2(GELU(fc1(BN(dwconv(x)))))`` (1x1 convolutions).
* ``final_layer_norm``; the CLIP ``projection_layer`` (width x width) is in the files but unused
  (every token is kept, none pooled); ``projector`` (Linear width -> 256) maps every token to
  SAM 3's detector width. Tokens: CLIP's BPE (``samkit.text.clip_tokenizer``), valid = ``ids != 0``.

Module names give the official keys below ``detector.backbone.language_backbone.``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

POS_TABLE = 77  # rows of the released position tables (MobileCLIP's context)


@dataclass(frozen=True)
class MobileClipTextConfig:
    """Numbers of one MobileCLIP text student. ``repmixer``: the S0 ("mct") layout, a RepMixer
    block before and after the ``layers`` transformer blocks."""

    width: int = 512
    layers: int = 4
    heads: int = 8
    repmixer: bool = True
    context_length: int = 16
    table: int = POS_TABLE
    vocab_size: int = 49408
    kernel: int = 11
    d_model: int = 256
    name: str = "MobileCLIP-S0"

    @property
    def mlp(self) -> int:
        return int(math.ceil(self.width * 4.0 / 16.0) * 16)


VARIANTS: Dict[str, MobileClipTextConfig] = {
    "MobileCLIP-S0": MobileClipTextConfig(512, 4, 8, True, name="MobileCLIP-S0"),
    "MobileCLIP-S1": MobileClipTextConfig(512, 12, 8, False, name="MobileCLIP-S1"),
    "MobileCLIP2-L": MobileClipTextConfig(768, 12, 12, False, name="MobileCLIP2-L"),
}
_SHORT = {"s0": "MobileCLIP-S0", "s1": "MobileCLIP-S1", "l": "MobileCLIP2-L"}


def variant_config(variant: str, context_length: int) -> MobileClipTextConfig:
    """``variant``: ``"MobileCLIP-S0"`` / ``"MobileCLIP-S1"`` / ``"MobileCLIP2-L"`` (or ``s0`` /
    ``s1`` / ``l``); ``context_length``: 16, 32 or 77 (at most the 77-row table)."""
    name = _SHORT.get(str(variant).lower(), variant)
    if name not in VARIANTS:
        raise ValueError(f"unknown MobileCLIP text variant {variant!r}; known: {', '.join(VARIANTS)}")
    if not 2 <= int(context_length) <= POS_TABLE:
        raise ValueError(f"context_length {context_length} must be within 2..{POS_TABLE}")
    return replace(VARIANTS[name], context_length=int(context_length))


# --------------------------------------------------------------------------- pieces
class _LearnedPositions(nn.Module):
    """``pos_embed``: ``1 x 1 x table x C``; ``forward(n)`` -> its first ``n`` rows, ``1 x n x C``."""

    def __init__(self, table: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, table, dim))

    def forward(self, n: int) -> torch.Tensor:
        return self.pos_embed[0, :, :n]


class PositionalEmbedding(nn.Module):
    """Official nesting (``positional_embedding.pos_embed.pos_embed``)."""

    def __init__(self, table: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = _LearnedPositions(table, dim)

    def forward(self, n: int) -> torch.Tensor:
        if n > self.pos_embed.pos_embed.shape[2]:
            raise ValueError(f"{n} tokens exceed the position table of {self.pos_embed.pos_embed.shape[2]}")
        return self.pos_embed(n)


class QKVSelfAttention(nn.Module):
    """Unmasked multi-head self-attention with one packed ``qkv_proj`` (3C x C, q/k/v in that
    order) and ``out_proj``. ``B x L x C -> B x L x C``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"heads {heads} must divide the width {dim}")
        self.heads = heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv_proj(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))``, then ``x + fc2(GELU(fc1(LN(x))))``. Official keys:
    ``pre_norm_mha.{0: LN, 1: attention}``, ``pre_norm_ffn.{0: LN, 1: fc1, 4: fc2}`` (the other
    slots are dropout / activation). ``B x L x C -> B x L x C``."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.pre_norm_mha = nn.Sequential(nn.LayerNorm(dim), QKVSelfAttention(dim, heads), nn.Identity())
        self.pre_norm_ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp), nn.GELU(), nn.Identity(),
                                          nn.Linear(mlp, dim), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pre_norm_mha(x)
        return x + self.pre_norm_ffn(x)


def _conv_bn(dim: int, kernel: int) -> nn.Sequential:
    """Depth-wise ``1 x kernel`` convolution (no bias) + BatchNorm, children ``conv`` / ``bn``."""
    return nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(dim, dim, (1, kernel), padding=(0, kernel // 2), groups=dim, bias=False)),
        ("bn", nn.BatchNorm2d(dim))]))


class _SkipBN(nn.Module):
    """MobileOne block reduced to what the released files hold: ``rbr_skip`` (BatchNorm of the
    input) plus, when ``kernel`` is given, one ``rbr_conv.0`` branch (depth-wise conv + BN)."""

    def __init__(self, dim: int, kernel: int = 0) -> None:
        super().__init__()
        self.rbr_skip = nn.BatchNorm2d(dim)
        self.rbr_conv = nn.ModuleList([_conv_bn(dim, kernel)]) if kernel else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.rbr_skip(x)
        if self.rbr_conv is not None:
            out = out + self.rbr_conv[0](x)
        return out


class RepMixer(nn.Module):
    """``x + layer_scale * (mixer(x) - norm(x))`` on ``B x C x 1 x L``."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.norm = _SkipBN(dim)
        self.mixer = _SkipBN(dim, kernel)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * (self.mixer(x) - self.norm(x))


class ConvFFN(nn.Module):
    """``fc2(GELU(fc1(conv(x))))``: depth-wise conv + BN, then 1x1 convolutions C -> mlp -> C."""

    def __init__(self, dim: int, mlp: int, kernel: int) -> None:
        super().__init__()
        self.conv = _conv_bn(dim, kernel)
        self.fc1 = nn.Conv2d(dim, mlp, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(mlp, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    """Token mixing by a depth-wise convolution along the tokens (MobileCLIP-S0's first and last
    blocks): ``x = token_mixer(x)``, then ``x + layer_scale * convffn(x)``. ``B x L x C -> B x L x C``."""

    def __init__(self, dim: int, mlp: int, kernel: int = 11) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, kernel)
        self.convffn = ConvFFN(dim, mlp, kernel)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.token_mixer(x.transpose(1, 2).unsqueeze(2))
        y = y + self.layer_scale * self.convffn(y)
        return y.squeeze(2).transpose(1, 2)


# --------------------------------------------------------------------------- the encoder
class MobileClipTextTransformer(nn.Module):
    """Token + position embedding, the blocks, ``final_layer_norm``. ``ids B x L`` -> ``B x L x width``."""

    def __init__(self, cfg: MobileClipTextConfig) -> None:
        super().__init__()
        self.config = cfg
        w = cfg.width
        self.embedding_layer = nn.Embedding(cfg.vocab_size, w)
        self.positional_embedding = PositionalEmbedding(cfg.table, w)
        blocks = [TransformerBlock(w, cfg.heads, cfg.mlp) for _ in range(cfg.layers)]
        if cfg.repmixer:
            blocks = [RepMixerBlock(w, cfg.mlp, cfg.kernel), *blocks, RepMixerBlock(w, cfg.mlp, cfg.kernel)]
        self.transformer = nn.ModuleList(blocks)
        self.final_layer_norm = nn.LayerNorm(w)
        self.projection_layer = nn.Parameter(torch.zeros(w, w))  # CLIP's pooled projection: unused here

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding_layer(ids) + self.positional_embedding(ids.shape[1]).to(self.embedding_layer.weight.dtype)
        for block in self.transformer:
            x = block(x)
        return self.final_layer_norm(x)


class Sam3StudentTextEncoder(nn.Module):
    """``encoder`` (:class:`MobileClipTextTransformer`) + ``projector`` (Linear width -> 256):
    SAM 3's text-encoder contract. ``tokenize(texts) -> N x context_length`` ids (a text that does
    not fit raises ``InputError``); ``forward(ids N x L)`` -> (features ``N x L x 256``, valid
    ``N x L`` bool = ``ids != 0``)."""

    def __init__(self, cfg: MobileClipTextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.context_length = cfg.context_length
        self.reader = f"{cfg.name} (the text encoder of this model)"
        self.encoder = MobileClipTextTransformer(cfg)
        self.projector = nn.Linear(cfg.width, cfg.d_model)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        from ..text.clip_tokenizer import default_tokenizer

        try:
            ids = default_tokenizer().tokenize(list(texts), self.context_length, reader=self.reader)
        except InputError as exc:
            if self.context_length < 32 and "tokens long" in str(exc):
                raise InputError(f"{exc} Or use the context-32 variant of this model (its name ends in _32), "
                                 f"which reads up to 30 tokens.") from None
            raise
        return ids.to(self.projector.weight.device)

    def forward(self, ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.projector(self.encoder(ids)), ids != 0


def mobileclip_text_encoder(variant: str, context_length: int) -> Sam3StudentTextEncoder:
    """The MobileCLIP text student of SAM 3 (``"MobileCLIP-S0"`` / ``"MobileCLIP-S1"`` /
    ``"MobileCLIP2-L"``, or ``s0`` / ``s1`` / ``l``) reading ``context_length`` tokens (16 or 32
    for the released models), un-initialised; for ``Sam3Model(cfg, text_encoder=...)``."""
    return Sam3StudentTextEncoder(variant_config(variant, context_length))
