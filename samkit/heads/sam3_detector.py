"""SAM 3's concept detector: geometry (exemplar) encoder, DETR-style fusion encoder, decoder
with box refinement and the presence token, and the dot-product scorer (official key names:
``geometry_encoder``, ``transformer.encoder``, ``transformer.decoder``, ``dot_prod_scoring``).

Everything is batch first: image tokens ``B x HW x C`` (the 72 x 72 detector level at 1008 px),
prompt tokens ``B x P x C`` with a padding mask ``B x P`` (True = padding, never attended).

Facts (official ``model_builder``, d_model 256, 8 heads, ReLU MLPs of 2048, dropout off in eval):

* Geometry encoder: boxes are normalised ``cx, cy, w, h``; each box token is the sum of a linear
  map of its 4 numbers, a 7 x 7 conv over RoIAlign (torchvision semantics: not aligned,
  adaptive sampling) of the LayerNorm-ed image features, a linear map of ``[sine(cy), sine(cx),
  h, w]`` (128 frequencies per axis, scale 2 pi) and the label embedding (1 positive, 0
  negative); a CLS token is appended after the valid boxes (it is there even without boxes);
  then a linear + LayerNorm, 3 pre-norm layers (self-attention without position, cross-attention
  to the image with the sine position added to the keys) and a LayerNorm.
* Prompt = the text tokens followed by the geometry tokens.
* Encoder: 6 pre-norm layers, self-attention over the image tokens with the position added to
  queries and keys, cross-attention to the prompt (no position), MLP.
* Decoder: 200 learned queries with learned reference boxes (sigmoid), plus a presence token
  in front; 6 post-norm layers (self-attention, cross-attention to the prompt, cross-attention
  to the image with a box relative-position bias, MLP); query positions from the sine
  encoding of the current boxes (``ref_point_head``); after every layer the boxes are refined
  (``bbox_embed`` on the LayerNorm-ed queries added in inverse-sigmoid space) and the presence
  logit is ``presence_token_head(LayerNorm(presence))`` clamped to [-10, 10].
* Box RPB: for every query and image row/column, the signed distances to the box edges
  (normalised, x8, ``sign * log2(1 + |d|) / 3``) go through two small MLPs (x, y) into one bias
  per head, added for rows and columns; the presence token gets no bias.
* Scores: ``hs_proj(queries) . prompt_proj(mean over valid prompt tokens of
  LayerNorm(p + MLP(p)))`` / 16, clamped to [-12, 12]. The final probability of an instance is
  ``sigmoid(score) * sigmoid(presence)``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP, PackedAttention
from ..ops.roi_align import roi_align


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def sine_features(v: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """``(...,)`` -> ``(..., num_feats)``: ``v * 2 pi / T^(2 (i//2) / num_feats)``, sin on even and
    cos on odd channels, interleaved (upstream ``_encode_xy``)."""
    i = torch.arange(num_feats, dtype=torch.float32, device=v.device)
    denom = temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)
    a = (v * (2 * math.pi))[..., None] / denom
    return torch.stack((a[..., 0::2].sin(), a[..., 1::2].cos()), dim=-1).flatten(-2)


def append_token(seq: torch.Tensor, pad: torch.Tensor, token: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Put ``token`` (C,) right after the valid entries of each row of the right-padded
    ``seq`` B x N x C (``pad`` B x N, True = padding). Returns B x (N+1) x C and its padding."""
    b, n, c = seq.shape
    out = torch.cat([seq, seq.new_zeros(b, 1, c)], dim=1)
    lengths = (~pad).sum(1)
    out[torch.arange(b, device=seq.device), lengths] = token.to(seq.dtype)
    new_pad = torch.arange(n + 1, device=seq.device)[None, :] >= (lengths + 1)[:, None]
    return out, new_pad


class FusionLayer(nn.Module):
    """Pre-norm self-attention + cross-attention + ReLU MLP (upstream ``TransformerEncoderLayer``,
    keys ``self_attn``, ``cross_attn_image``, ``linear1``, ``linear2``, ``norm1..3``).

    ``pos_at_self``: add ``query_pos`` to the self-attention queries and keys (detector encoder);
    ``pos_at_cross_keys``: add ``memory_pos`` to the cross-attention keys (geometry encoder)."""

    def __init__(self, d_model: int = 256, heads: int = 8, ffn: int = 2048, pos_at_self: bool = True,
                 pos_at_cross_keys: bool = False) -> None:
        super().__init__()
        self.self_attn = PackedAttention(d_model, heads)
        self.cross_attn_image = PackedAttention(d_model, heads)
        self.linear1 = nn.Linear(d_model, ffn)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.pos_at_self = pos_at_self
        self.pos_at_cross_keys = pos_at_cross_keys

    def forward(self, x: torch.Tensor, memory: torch.Tensor, x_pad: Optional[torch.Tensor] = None,
                query_pos: Optional[torch.Tensor] = None, memory_pos: Optional[torch.Tensor] = None,
                memory_pad: Optional[torch.Tensor] = None) -> torch.Tensor:
        t = self.norm1(x)
        qk = t + query_pos if self.pos_at_self else t
        x = x + self.self_attn(qk, qk, t, key_padding_mask=x_pad)
        t = self.norm2(x)
        key = memory + memory_pos if self.pos_at_cross_keys else memory
        x = x + self.cross_attn_image(t, key, memory, key_padding_mask=memory_pad)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class GeometryEncoder(nn.Module):
    """Box exemplars -> prompt tokens. ``forward(boxes B x N x 4 cxcywh in [0, 1], labels B x N,
    pad B x N or None, image B x C x h x w, image_pos B x C x h x w)`` -> (B x (N+1) x C, pad)."""

    def __init__(self, d_model: int = 256, heads: int = 8, ffn: int = 2048, layers: int = 3, roi_size: int = 7) -> None:
        super().__init__()
        self.d_model = d_model
        self.roi_size = roi_size
        self.label_embed = nn.Embedding(2, d_model)
        self.cls_embed = nn.Embedding(1, d_model)
        self.boxes_direct_project = nn.Linear(4, d_model)
        self.boxes_pool_project = nn.Conv2d(d_model, d_model, roi_size)
        self.boxes_pos_enc_project = nn.Linear(d_model + 2, d_model)
        self.final_proj = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.img_pre_norm = nn.LayerNorm(d_model)
        self.encode = nn.ModuleList(FusionLayer(d_model, heads, ffn, pos_at_self=False, pos_at_cross_keys=True)
                                    for _ in range(layers))
        self.encode_norm = nn.LayerNorm(d_model)

    def _box_tokens(self, boxes: torch.Tensor, labels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        b, n, _ = boxes.shape
        h, w = image.shape[-2:]
        normed = self.img_pre_norm(image.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        xyxy = cxcywh_to_xyxy(boxes) * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        rois = torch.cat([torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(n)[:, None],
                          xyxy.reshape(-1, 4)], dim=1)
        pooled = roi_align(normed, rois, self.roi_size, 1.0, sampling_ratio=0, aligned=False)
        tok = self.boxes_direct_project(boxes) + self.boxes_pool_project(pooled).reshape(b, n, self.d_model)
        cx, cy, bw, bh = boxes.unbind(-1)
        half = self.d_model // 2
        pos = torch.cat([sine_features(cy, half), sine_features(cx, half), bh[..., None], bw[..., None]], dim=-1)
        return tok + self.boxes_pos_enc_project(pos) + self.label_embed(labels.long())

    def forward(self, boxes: torch.Tensor, labels: torch.Tensor, pad: Optional[torch.Tensor], image: torch.Tensor,
                image_pos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b, n = boxes.shape[:2]
        if pad is None:
            pad = torch.zeros(b, n, dtype=torch.bool, device=image.device)
        if n:
            tokens = self._box_tokens(boxes, labels, image)
        else:
            tokens = image.new_zeros(b, 0, self.d_model)
        tokens, pad = append_token(tokens, pad, self.cls_embed.weight[0])
        x = self.norm(self.final_proj(tokens))
        mem = image.flatten(2).transpose(1, 2)
        mem_pos = image_pos.flatten(2).transpose(1, 2)
        for layer in self.encode:
            x = layer(x, mem, x_pad=pad, memory_pos=mem_pos)
        return self.encode_norm(x), pad


class DetrEncoder(nn.Module):
    """``layers`` :class:`FusionLayer` over the image tokens (keys ``layers.N``)."""

    def __init__(self, d_model: int = 256, heads: int = 8, ffn: int = 2048, layers: int = 6) -> None:
        super().__init__()
        self.layers = nn.ModuleList(FusionLayer(d_model, heads, ffn) for _ in range(layers))

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, prompt: torch.Tensor,
                prompt_pad: torch.Tensor) -> torch.Tensor:
        """``tokens`` / ``pos`` B x HW x C, ``prompt`` B x P x C -> B x HW x C."""
        for layer in self.layers:
            tokens = layer(tokens, prompt, query_pos=pos, memory_pad=prompt_pad)
        return tokens


class DecoderLayer(nn.Module):
    """Post-norm decoder layer (keys ``self_attn``/``norm2``, ``ca_text``/``catext_norm``,
    ``cross_attn``/``norm1``, ``linear1``, ``linear2``/``norm3``)."""

    def __init__(self, d_model: int = 256, heads: int = 8, ffn: int = 2048) -> None:
        super().__init__()
        self.self_attn = PackedAttention(d_model, heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ca_text = PackedAttention(d_model, heads)
        self.catext_norm = nn.LayerNorm(d_model)
        self.cross_attn = PackedAttention(d_model, heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, ffn)
        self.linear2 = nn.Linear(ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, query_pos: torch.Tensor, prompt: torch.Tensor, prompt_pad: torch.Tensor,
                memory_key: torch.Tensor, memory: torch.Tensor, rpb: torch.Tensor) -> torch.Tensor:
        q = x + query_pos
        x = self.norm2(x + self.self_attn(q, q, x))
        x = self.catext_norm(x + self.ca_text(x + query_pos, prompt, prompt, key_padding_mask=prompt_pad))
        x = self.norm1(x + self.cross_attn(x + query_pos, memory_key, memory, bias=rpb))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class DetrDecoder(nn.Module):
    """Queries + presence token through ``layers`` :class:`DecoderLayer` with box refinement."""

    def __init__(self, d_model: int = 256, heads: int = 8, ffn: int = 2048, layers: int = 6,
                 num_queries: int = 200) -> None:
        super().__init__()
        self.heads = heads
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.reference_points = nn.Embedding(num_queries, 4)
        self.boxRPB_embed_x = MLP(2, d_model, heads, 2)
        self.boxRPB_embed_y = MLP(2, d_model, heads, 2)
        self.presence_token = nn.Embedding(1, d_model)
        self.presence_token_head = MLP(d_model, d_model, 1, 3)
        self.presence_token_out_norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)

    def box_sine(self, boxes: torch.Tensor) -> torch.Tensor:
        """``B x Q x 4`` cxcywh -> ``B x Q x 2C``: sine of y, x, w, h (C/2 frequencies each)."""
        half = self.norm.normalized_shape[0] // 2
        cx, cy, w, h = boxes.unbind(-1)
        return torch.cat([sine_features(cy, half), sine_features(cx, half), sine_features(w, half),
                          sine_features(h, half)], dim=-1)

    def rpb(self, boxes: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """Box relative-position bias ``B x heads x (Q+1) x HW`` (a zero row for the presence token)."""
        h, w = hw
        xyxy = cxcywh_to_xyxy(boxes)
        ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype) / h
        xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype) / w

        def log_scale(d: torch.Tensor) -> torch.Tensor:
            d = d * 8
            return torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8)

        dy = self.boxRPB_embed_y(log_scale(ys[None, None, :, None] - xyxy[:, :, None, 1::2]))  # B x Q x h x heads
        dx = self.boxRPB_embed_x(log_scale(xs[None, None, :, None] - xyxy[:, :, None, 0::2]))  # B x Q x w x heads
        bias = (dy[:, :, :, None, :] + dx[:, :, None, :, :]).flatten(2, 3).permute(0, 3, 1, 2)
        return F.pad(bias, (0, 0, 1, 0))

    def forward(self, memory: torch.Tensor, pos: torch.Tensor, hw: Tuple[int, int], prompt: torch.Tensor,
                prompt_pad: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``memory`` / ``pos`` B x HW x C -> (queries B x Q x C after the output LayerNorm,
        boxes B x Q x 4 cxcywh in [0, 1], presence logits B x 1), all of the last layer."""
        b = memory.shape[0]
        ref = self.reference_points.weight.sigmoid()[None].expand(b, -1, -1)
        x = torch.cat([self.presence_token.weight, self.query_embed.weight])[None].expand(b, -1, -1)
        memory_key = memory + pos
        for layer in self.layers:
            query_pos = F.pad(self.ref_point_head(self.box_sine(ref)), (0, 0, 1, 0))
            x = layer(x, query_pos, prompt, prompt_pad, memory_key, memory, self.rpb(ref, hw))
            queries = self.norm(x[:, 1:])
            ref = (self.bbox_embed(queries) + inverse_sigmoid(ref)).sigmoid()
        presence = self.presence_token_head(self.presence_token_out_norm(x[:, :1])).squeeze(-1).clamp(-10.0, 10.0)
        return queries, ref, presence


class DotProductScoring(nn.Module):
    """Instance logits ``B x Q`` from the queries and the mean of the valid prompt tokens."""

    def __init__(self, d_model: int = 256, ffn: int = 2048, clamp: float = 12.0) -> None:
        super().__init__()
        self.prompt_mlp = _ResidualMLP(d_model, ffn)
        self.prompt_proj = nn.Linear(d_model, d_model)
        self.hs_proj = nn.Linear(d_model, d_model)
        self.clamp = clamp

    def forward(self, queries: torch.Tensor, prompt: torch.Tensor, prompt_pad: torch.Tensor) -> torch.Tensor:
        p = self.prompt_mlp(prompt)
        valid = (~prompt_pad).to(p.dtype)[..., None]
        pooled = (p * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        scores = (self.hs_proj(queries) @ self.prompt_proj(pooled)[..., None]).squeeze(-1)
        return (scores / math.sqrt(self.prompt_proj.out_features)).clamp(-self.clamp, self.clamp)


class _ResidualMLP(nn.Module):
    """``out_norm(x + layers.1(relu(layers.0(x))))`` (upstream ``MLP(residual=True, out_norm)``)."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(d_model, hidden), nn.Linear(hidden, d_model)])
        self.out_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_norm(x + self.layers[1](F.relu(self.layers[0](x))))


def concat_prompt(parts: List[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Concatenate prompt pieces ``(B x P_i x C, pad B x P_i)`` along the tokens."""
    return torch.cat([p for p, _ in parts], dim=1), torch.cat([m for _, m in parts], dim=1)
