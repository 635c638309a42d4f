"""Inference fast path of the two-way transformer: the same function, far fewer FLOPs.

The reference forward projects all ``L = h*w`` image tokens (``L x C -> L x I``, I = C / 2)
in every cross-attention, for every prompt. Two exact rewrites remove almost all of it:

* **Shared first layer.** When every prompt of a batch sees the same image tokens (the image
  embedding plus the constant "no mask" dense embedding: point and box prompts), the first
  block's image-side projections (token->image keys/values, image->token queries) are computed
  once per image and, given a ``cache`` dict, reused across calls.
* **Low rank.** With ``N`` prompt tokens and ``H`` heads, attention between them and ``L`` image
  tokens only ever needs ``H*N`` directions of the image features. Token->image:
  ``softmax(s q_h W_k,h X^T) X W_v,h^T`` (the key bias adds a per-query constant, which softmax
  ignores; softmax rows sum to 1, so the value bias passes through). Image->token:
  ``softmax(X (s W_q,h^T k_h^T) + s b_q,h k_h^T)`` and ``sum_h P_h (v_h W_o,h^T)``. Cost
  ``2 H N L C`` instead of ``2 L C I``: used whenever ``H*N < I``.

Only the order of floating-point sums changes; tests compare against the reference forward.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from ..layers import Attention
from ..layers.inplace import add_


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``B x L x I -> B x heads x L x I/heads``."""
    b, n, i = x.shape
    return x.view(b, n, heads, i // heads).transpose(1, 2)


def token_to_image(attn: Attention, q_in: torch.Tensor, keys_pe: torch.Tensor, keys: torch.Tensor,
                   kv: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """``q_in`` B x N x C attends to image tokens (``keys_pe`` for keys, ``keys`` for values,
    each 1 or B x L x C). ``kv``: precomputed projected keys/values (1 x L x I each)."""
    b, n, _ = q_in.shape
    heads, inner = attn.num_heads, attn.internal_dim
    dh = inner // heads
    scale = dh ** -0.5
    q = attn.q_proj(q_in)
    if kv is not None:
        k, v = kv
        s = torch.matmul(_split(q, heads) * scale, _split(k, heads).transpose(-1, -2))  # B x H x N x L
        out = torch.matmul(torch.softmax(s, dim=-1), _split(v, heads))  # B x H x N x dh
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, inner))
    c = keys.shape[-1]
    wk = attn.k_proj.weight.view(heads, dh, c)
    a = torch.einsum("bnhd,hdc->bhnc", q.view(b, n, heads, dh) * scale, wk).reshape(b, heads * n, c)
    s = _matmul_shared(a, keys_pe.transpose(1, 2))  # B x HN x L
    ctx = _matmul_shared(torch.softmax(s, dim=-1), keys)  # B x HN x C
    wv = attn.v_proj.weight.view(heads, dh, c)
    out = torch.einsum("bhnc,hdc->bnhd", ctx.view(b, heads, n, c), wv).reshape(b, n, inner)
    if attn.v_proj.bias is not None:
        out = out + attn.v_proj.bias
    return attn.out_proj(out)


def image_to_token(attn: Attention, x_pe: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor,
                   q: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
                   key_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Image tokens ``x_pe`` (1 or B x L x C) attend to ``k_in``/``v_in`` (B x N x C);
    ``q``: precomputed projected image queries (1 x L x I). Returns B x L x C, plus ``residual``
    (1 or B x L x C) when given: it starts the GEMM's accumulator (one pass fewer than adding it after).
    ``key_bias`` (N): added to every score of each prompt token (a log multiplicity)."""
    b, n, _ = k_in.shape
    heads, inner, c = attn.num_heads, attn.internal_dim, attn.embedding_dim
    dh = inner // heads
    scale = dh ** -0.5
    k = attn.k_proj(k_in).view(b, n, heads, dh)
    v = attn.v_proj(v_in).view(b, n, heads, dh)
    wo = attn.out_proj.weight.view(c, heads, dh)
    u = torch.einsum("bnhd,chd->bhnc", v, wo).reshape(b, heads * n, c)  # per-head values through out_proj
    # scores are laid out B x H x N x L: softmax over the few prompt tokens then runs along a
    # strided axis of long rows, far faster than over a last axis of length N
    if q is not None:
        s = torch.matmul(k.permute(0, 2, 1, 3) * scale, _split(q, heads).transpose(-1, -2))  # B x H x N x L
    else:
        wq = attn.q_proj.weight.view(heads, dh, c)
        m = torch.einsum("bnhd,hdc->bhnc", k * scale, wq).reshape(b, heads * n, c)
        s = _matmul_shared(m, x_pe.transpose(1, 2)).view(b, heads, n, -1)  # B x H x N x L
        if attn.q_proj.bias is not None:
            bias = torch.einsum("bnhd,hd->bhn", k * scale, attn.q_proj.bias.view(heads, dh))
            s = s + bias[..., None]
    if key_bias is not None:
        s = s + key_bias.view(1, 1, -1, 1)
    p = torch.softmax(s, dim=2).reshape(b, heads * n, -1)  # B x HN x L
    if residual is not None:
        acc = residual.expand(b, -1, -1)
        acc = acc + attn.out_proj.bias if attn.out_proj.bias is not None else acc.clone()  # B x L x C, ours
        if torch.jit.is_tracing():
            return torch.baddbmm(acc, p.transpose(1, 2), u)
        return acc.baddbmm_(p.transpose(1, 2), u)
    if attn.out_proj.bias is not None:  # the bias rides in the GEMM's accumulator
        return torch.baddbmm(attn.out_proj.bias.expand(b, p.shape[-1], c), p.transpose(1, 2), u)
    return torch.matmul(p.transpose(1, 2), u)  # B x L x C


def _matmul_shared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` B x M x K @ ``b`` (1 or B) x K x N; a shared ``b`` runs as one GEMM."""
    if b.shape[0] == 1 and a.shape[0] > 1:
        bsz, m, k = a.shape
        return (a.reshape(bsz * m, k) @ b[0]).view(bsz, m, -1)
    return torch.matmul(a, b)


def low_rank_pays(attn: Attention, n_tokens: int) -> bool:
    return attn.num_heads * n_tokens < attn.internal_dim


def first_layer_projections(layer, keys: torch.Tensor, key_pe: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Image-only projections of the first block for a shared image (``keys``/``key_pe`` 1 x L x C)."""
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    keys, key_pe = keys.contiguous(), key_pe.contiguous()  # token-major copies, read by every layer
    k_pe = keys + key_pe
    return {"k": t2i.k_proj(k_pe), "v": t2i.v_proj(keys), "q": i2t.q_proj(k_pe), "keys": keys, "key_pe": key_pe}


def block_forward(layer, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                  key_pe: torch.Tensor, pre: Optional[Dict[str, torch.Tensor]] = None,
                  low_rank: Optional[bool] = None, key_bias: Optional[torch.Tensor] = None,
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """One TwoWayAttentionBlock. ``keys`` 1 or B x L x C; ``pre`` from :func:`first_layer_projections`.
    ``low_rank``: None chooses per attention (:func:`low_rank_pays`), True always takes the
    low-rank form (exact for any token count: a traced graph must not depend on it).
    ``key_bias`` (N): each token's log multiplicity as a key (``factored_decoder.merge_repeated``)."""
    queries = layer.token_self_attention(queries, query_pe, key_bias)
    n = queries.shape[1]
    q = queries + query_pe
    t2i = layer.cross_attn_token_to_image
    k_pe = keys + key_pe if pre is None else None  # a shared first block needs only its projections
    if pre is not None:
        attn_out = token_to_image(t2i, q, k_pe, keys, kv=(pre["k"], pre["v"]))
    elif low_rank or (low_rank is None and low_rank_pays(t2i, n)):
        attn_out = token_to_image(t2i, q, k_pe, keys)
    else:
        attn_out = t2i(q, _expand(k_pe, q), _expand(keys, q))
    queries = layer.norm2(queries + attn_out)
    queries = layer.norm3(queries + layer.mlp(queries))
    q = queries + query_pe
    i2t = layer.cross_attn_image_to_token
    if pre is not None or low_rank or (low_rank is None and low_rank_pays(i2t, n)):
        keys = image_to_token(i2t, k_pe, q, queries, q=None if pre is None else pre["q"], residual=keys,
                              key_bias=key_bias)
    else:
        keys = add_(i2t(_expand(k_pe, q), q, queries, key_bias), keys)  # a fresh B x L x C temporary
    keys = layer.norm4(keys)
    return queries, keys


def _expand(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.expand(like.shape[0], -1, -1) if x.shape[0] != like.shape[0] else x


def transformer_forward(tr, point_embedding: torch.Tensor, keys: torch.Tensor, key_pe: torch.Tensor,
                        first_layer: Optional[Dict[str, torch.Tensor]] = None, low_rank: Optional[bool] = None,
                        out_tokens: Optional[int] = None, state: Optional[dict] = None,
                        key_bias: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The blocks and final attention of a ``TwoWayTransformer`` ``tr`` on image tokens ``keys``
    / ``key_pe`` (1 or B x L x C, token-major) and prompt tokens ``point_embedding`` B x N x C
    -> (tokens B x N' x C, image tokens 1 or B x L x C). ``low_rank`` as in :func:`block_forward`.

    ``out_tokens``: only the first ``out_tokens`` tokens leave the final token->image attention
    (N' = out_tokens; None: all N). Its queries are independent rows (own softmax, own
    LayerNorm), so dropping the rows nobody reads (the prompt tokens, unrequested mask tokens)
    changes nothing in the rows kept and saves ``(N - N') / N`` of that attention.
    ``state``: a dict that receives what :func:`final_attention` needs for more rows later.
    ``key_bias`` as in :func:`block_forward`."""
    queries = point_embedding
    for i, layer in enumerate(tr.layers):
        queries, keys = block_forward(layer, queries, keys, point_embedding, key_pe,
                                      first_layer if i == 0 else None, low_rank, key_bias)
    k_pe = keys + key_pe
    if state is not None:
        state.update(queries=queries, point_embedding=point_embedding, keys=keys, k_pe=k_pe, low_rank=low_rank)
    return final_attention(tr, queries, point_embedding, keys, k_pe, low_rank, 0, out_tokens), keys


def final_attention(tr, queries: torch.Tensor, point_embedding: torch.Tensor, keys: torch.Tensor,
                    k_pe: torch.Tensor, low_rank: Optional[bool] = None, start: int = 0,
                    stop: Optional[int] = None) -> torch.Tensor:
    """The final token->image attention and norm of ``tr`` for the token rows ``start:stop``
    (queries after the blocks B x N x C, ``k_pe`` = keys + key_pe 1 or B x L x C) -> B x N' x C."""
    if start != 0 or stop is not None:
        queries, point_embedding = queries[:, start:stop], point_embedding[:, start:stop]
    q = queries + point_embedding
    attn = tr.final_attn_token_to_image
    if low_rank or (low_rank is None and low_rank_pays(attn, q.shape[1])):
        out = token_to_image(attn, q, k_pe, keys)
    else:
        out = attn(q, _expand(k_pe, q), _expand(keys, q))
    return tr.norm_final_attn(queries + out)
