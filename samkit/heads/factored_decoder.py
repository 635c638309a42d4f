"""The mask decoder's image side, factored once per image: a click then costs little more than
its prompt tokens.

In the two-way transformer the ``L = h*w`` image tokens (``L x C``) change only through
attention to the ``N`` prompt tokens and LayerNorm. After block ``l`` they are exactly

    X_l = s ⊙ (B G_l) + Ft^T Hm + (nothing else)

with ``B`` the image embedding (+ the constant dense embedding), ``G_l`` a fixed ``C x C``
matrix (centring and LayerNorm gains of the blocks before), ``s`` a per-token scale (the
product of the LayerNorms' ``1/std``), and a low-rank part: ``Ft`` (``m x L``) holds each
token's attention to the prompt tokens (``H*N`` columns per block) and constant columns (the
biases, scaled like the tokens), ``Hm`` (``m x C``) what those columns add. Every product with
the image tokens that a click needs (the attention keys/values/queries of each block, the
LayerNorm statistics, the first transposed convolution of the upscaling) splits into
``(B G_l) W`` -- computed once per image (:func:`build_plan`) -- and products with ``Ft``,
which has ``m`` (~60 to 120) rows instead of ``C = 256`` columns. A click never forms an
``L x C`` tensor; LayerNorm variances come from the expansion
``|s a + b|^2 = s^2 |a|^2 + 2 s a.b + |b|^2`` with the cross term taken through the per-image
products with the (fixed) directions each low-rank group adds.

Same function as the reference decoder up to float rounding (tests compare logits); used for
eval-mode decoding of points and boxes on a shared image embedding (``MaskDecoder``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..layers import Attention
from .upscale import conv_t2x2_bias, conv_t2x2_weight


def _center(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _bias(linear: nn.Linear) -> torch.Tensor:
    if linear.bias is not None:
        return linear.bias
    return linear.weight.new_zeros(linear.weight.shape[0])


def _proj_t(m: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``m`` L x C through ``linear``'s weight (no bias), transposed: ``out x L``."""
    return (linear.weight @ m.t()).contiguous()


# --------------------------------------------------------------------------------- the plan
def _group_rights(rights: List[torch.Tensor], attn: Attention) -> List[torch.Tensor]:
    """The fixed right factors present before a block's LayerNorm: those of the state, the
    block's attention update (``Wo^T``, I x C) and its output bias (1 x C)."""
    return rights + [attn.out_proj.weight.t(), _bias(attn.out_proj)[None]]


def _after_norm(rights: List[torch.Tensor], norm: nn.LayerNorm) -> List[torch.Tensor]:
    """Right factors after ``norm``: centred and scaled by its gain, plus its bias (1 x C)."""
    return [_center(r) * norm.weight for r in rights] + [norm.bias[None]]


def _attn_side(m: torch.Tensor, pe: torch.Tensor, attn: Attention, query_side: bool) -> Dict[str, torch.Tensor]:
    """Per-image products of one attention with the image tokens ``m`` (L x C, no positional
    part) and ``pe``: token->image keys / values, or (``query_side``) image->token queries."""
    if query_side:
        return {"qT": _proj_t(m, attn.q_proj), "pqT": _proj_t(pe, attn.q_proj)}
    return {"kT": _proj_t(m, attn.k_proj), "pkT": _proj_t(pe, attn.k_proj), "vT": _proj_t(m, attn.v_proj)}


def build_plan(tr, conv1: nn.ConvTranspose2d, x0: torch.Tensor, pe: torch.Tensor,
               conv1_extra: Optional[torch.Tensor] = None) -> dict:
    """Everything a click needs from the image: ``x0`` 1 x L x C image tokens (embedding + the
    shared dense embedding), ``pe`` 1 x L x C positional encoding, ``conv1`` the upscaling's first
    transposed convolution; ``conv1_extra`` L x 4Cout added after it (SAM 2's ``conv_s1``
    features in block order)."""
    m, pe = x0[0], pe[0]
    rights: List[torch.Tensor] = []
    states = []
    for layer in tr.layers:
        st = dict(_attn_side(m, pe, layer.cross_attn_token_to_image, False),
                  **_attn_side(m, pe, layer.cross_attn_image_to_token, True))
        mc = _center(m)
        pre = _group_rights(rights, layer.cross_attn_image_to_token)
        st["norm"] = (mc * mc).sum(-1)
        st["cross"] = [(r @ mc.t()).contiguous() for r in pre]  # d x L per group
        if not states:  # the first block's tokens carry no scale: keys/queries with their positional part
            st.update(kT=st["kT"] + st.pop("pkT"), qT=st["qT"] + st.pop("pqT"), pkT=None, pqT=None)
        states.append(st)
        rights = _after_norm(pre, layer.norm4)
        m = mc * layer.norm4.weight
    final = _attn_side(m, pe, tr.final_attn_token_to_image, False)
    weight = conv_t2x2_weight(conv1)
    base = conv_t2x2_bias(conv1)[None]
    if conv1_extra is not None:
        base = base + conv1_extra
    return {"states": states, "final": final, "conv1": m @ weight, "conv1_weight": weight.contiguous(),
            "conv1_base": base.contiguous(), "length": m.shape[0]}


# --------------------------------------------------------------------------------- a click
#: :func:`merge_repeated` takes two prompt tokens as one when they differ by at most this share of
#: the largest prompt-token value (float rounding; clicks 0.01 pixel apart differ by ~1e-4)
REPEAT_TOL = 1e-5

class FactoredKeys:
    """Image tokens of a click in factored form: ``s`` B x L (None: ones), ``ft`` B x m x L (a
    view of a buffer sized for the whole transformer), ``hm`` B x m x C; ``groups``: (offset,
    rows, per-head values B x H x N x dh or None) per low-rank group in creation order,
    ``rights`` their fixed right factors."""

    def __init__(self, batch: int, capacity: int, length: int, like: torch.Tensor) -> None:
        self.s: Optional[torch.Tensor] = None
        self.buf = like.new_empty(batch, capacity, length)
        self.m = 0
        self.hm: Optional[torch.Tensor] = None
        self.groups: List[Tuple[int, int, Optional[torch.Tensor]]] = []
        self.rights: List[torch.Tensor] = []

    @property
    def ft(self) -> torch.Tensor:
        return self.buf[:, : self.m]

    def add_group(self, ft: Optional[torch.Tensor], hm: torch.Tensor, v: Optional[torch.Tensor],
                  right: torch.Tensor) -> None:
        """Rows ``ft`` B x rows x L (None: ones) with ``hm`` B x rows x C."""
        rows = hm.shape[1]
        if self.m + rows > self.buf.shape[1]:
            raise RuntimeError("factored decoder: low-rank buffer too small")
        dst = self.buf[:, self.m : self.m + rows]
        dst.fill_(1.0) if ft is None else dst.copy_(ft)
        self.groups.append((self.m, rows, v))
        self.rights.append(right)
        self.hm = hm if self.hm is None else torch.cat([self.hm, hm], dim=1)
        self.m += rows


def _heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``B x N x I`` -> ``H x (B N) x dh``."""
    b, n, inner = x.shape
    return x.view(b, n, heads, inner // heads).permute(2, 0, 1, 3).reshape(heads, b * n, inner // heads)


def _batch_first(p: torch.Tensor, b: int) -> torch.Tensor:
    """``H x (B N) x L`` -> ``B x (H N) x L`` (a view for B = 1)."""
    heads, bn, length = p.shape
    if b == 1:
        return p.view(1, heads * bn, length)
    return p.view(heads, b, bn // b, length).transpose(0, 1).reshape(b, heads * (bn // b), length)


def _scores(xh: torch.Tensor, mT: torch.Tensor, pT: torch.Tensor, fk: FactoredKeys, proj_w: torch.Tensor,
            b: int) -> torch.Tensor:
    """Per-head scores of ``xh`` (H x (B N) x dh, already scaled) against the image tokens plus
    positional encoding projected by ``proj_w`` (I x C): H x (B N) x L (without the projection
    bias)."""
    heads, bn, dh = xh.shape
    length = mT.shape[-1]
    if pT is None:  # the first block (plan: positional part folded in; no scale, no low-rank part yet)
        return torch.bmm(xh, mT.view(heads, dh, length))
    s = torch.bmm(xh, mT.view(heads, dh, length))
    s.view(heads, b, bn // b, length).mul_(fk.s[None, :, None, :])
    s = s.baddbmm_(xh, pT.view(heads, dh, length))
    if fk.m:
        n = bn // b
        hw = (fk.hm @ proj_w.t()).view(b, -1, heads, dh)  # B x m x H x dh
        coef = torch.einsum("hbnd,bmhd->bhnm", xh.view(heads, b, n, dh), hw).reshape(b, heads * n, -1)
        if b == 1:
            s.view(1, heads * n, length).baddbmm_(coef, fk.ft)
        else:
            s = s.add_(torch.bmm(coef, fk.ft).view(b, heads, n, length).transpose(0, 1).reshape(heads, bn, length))
    return s


def token_to_image(attn: Attention, q_in: torch.Tensor, side: Dict[str, torch.Tensor], fk: FactoredKeys) -> torch.Tensor:
    """Tokens ``q_in`` B x N x C attend to the factored image tokens (keys with positional
    encoding, values without) -> B x N x C (after ``out_proj``). The key bias adds a constant to
    each query's scores (softmax ignores it); the value bias passes through (rows sum to one)."""
    b, n, _ = q_in.shape
    heads, inner = attn.num_heads, attn.internal_dim
    dh = inner // heads
    qh = _heads_first(attn.q_proj(q_in) * dh ** -0.5, heads)
    p = torch.softmax(_scores(qh, side["kT"], side["pkT"], fk, attn.k_proj.weight, b), dim=-1)  # H x BN x L
    length = p.shape[-1]
    ps = p if fk.s is None else (p.view(heads, b, n, length) * fk.s[None, :, None, :]).view(heads, b * n, length)
    out = torch.bmm(ps, side["vT"].view(heads, dh, length).transpose(1, 2)).view(heads, b, n, dh)
    if fk.m:
        pf = torch.bmm(_batch_first(p, b), fk.ft.transpose(1, 2)).view(b, heads, n, -1)  # B x H x N x m
        hv = (fk.hm @ attn.v_proj.weight.t()).view(b, -1, heads, dh)
        out = out + torch.einsum("bhnm,bmhd->hbnd", pf, hv)
    out = out.permute(1, 2, 0, 3).reshape(b, n, inner) + _bias(attn.v_proj)
    return attn.out_proj(out)


def image_to_token(attn: Attention, k_in: torch.Tensor, v_in: torch.Tensor, side: Dict[str, torch.Tensor],
                   fk: FactoredKeys, key_bias: Optional[torch.Tensor] = None) -> None:
    """The image tokens attend to the prompt tokens (keys from ``k_in``, values from ``v_in``,
    B x N x C; ``key_bias`` N: each token's log multiplicity, see :func:`merge_repeated`); the
    update (and ``out_proj``'s bias) joins ``fk`` as two low-rank groups."""
    b, n, _ = k_in.shape
    heads, inner, c = attn.num_heads, attn.internal_dim, attn.embedding_dim
    dh = inner // heads
    kh = _heads_first(attn.k_proj(k_in) * dh ** -0.5, heads)  # H x BN x dh
    v = attn.v_proj(v_in).view(b, n, heads, dh).transpose(1, 2)  # B x H x N x dh
    s = _scores(kh, side["qT"], side["pqT"], fk, attn.q_proj.weight, b)
    per_token = torch.einsum("hxd,hd->hx", kh, _bias(attn.q_proj).view(heads, dh))  # H x BN
    if key_bias is not None:
        per_token = per_token + key_bias.repeat(b)
    s = s.add_(per_token[..., None])
    p = torch.softmax(s.view(heads, b, n, -1), dim=2).view(heads, b * n, -1)  # over the prompt tokens
    wo_t = attn.out_proj.weight.t()  # I x C
    hm = torch.einsum("bhnd,hdc->bhnc", v, wo_t.view(heads, dh, c)).reshape(b, heads * n, c)
    fk.add_group(_batch_first(p, b), hm, v, wo_t)
    bo = _bias(attn.out_proj)
    fk.add_group(None, bo.expand(b, 1, c), None, bo[None])


def layer_norm(norm: nn.LayerNorm, st: Dict[str, torch.Tensor], fk: FactoredKeys) -> None:
    """``norm`` applied to the factored tokens, in place. Per token ``|Y C|^2 = s^2 |B G C|^2
    + sum_j ft_j (2 s w_j + (Gram ft)_j)`` with ``w_j`` the cross term of row ``j``: the per-image
    ``(B G C) R^T`` (``st["cross"]``) times the group's coefficients."""
    ft = fk.ft
    b, m, length = ft.shape
    c = fk.hm.shape[-1]
    acc = torch.empty_like(ft)
    for (off, rows, v), cr in zip(fk.groups, st["cross"]):
        if v is None:
            acc[:, off : off + rows] = cr[None]
        else:
            heads, dh = v.shape[1], v.shape[3]
            torch.matmul(v, cr.view(heads, dh, length), out=acc[:, off : off + rows].view(b, heads, -1, length))
    acc.mul_(2.0 if fk.s is None else 2.0 * fk.s[:, None, :])
    hc = _center(fk.hm)
    acc.baddbmm_(hc @ hc.transpose(1, 2), ft)  # + Gram ft
    total = acc.mul_(ft).sum(1)
    base = st["norm"][None]
    total = total.add_(base if fk.s is None else fk.s * fk.s * base)
    r = torch.rsqrt(total.div_(c).add_(norm.eps))  # B x L
    ft.mul_(r[:, None, :])
    fk.s = r if fk.s is None else fk.s * r
    fk.hm = hc * norm.weight
    fk.rights = [_center(right) * norm.weight for right in fk.rights]
    fk.add_group(None, norm.bias.expand(b, 1, c), None, norm.bias[None])


def merge_repeated(tokens: torch.Tensor, start: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Tokens B x N x C -> (the tokens with the repeats among rows ``start:`` left out, B x N' x C;
    the log multiplicity of every kept row, N', or None when nothing repeats).

    A token equal to another one (in every prompt of the batch) stays equal to it through every
    block: self-attention, the token->image attention and the MLP treat each token alike, and as
    keys and values of the self- and image->token attentions ``k`` equal tokens weigh as one
    token with ``log k`` added to its scores. So the decoder runs on one copy each. EfficientSAM
    pads every prompt to 6 points with one and the same padding point: a click is 7 tokens
    instead of 11, and the factored image tokens' rank shrinks with them. "Equal" allows the
    float rounding of the positional encoding, ``REPEAT_TOL`` of the largest value: ``sin`` and
    ``cos`` of the same argument differ by up to ~2e-6 between the vectorised body and the tail
    of a row (EfficientSAM's padding tokens 1.7e-6 apart, arguments up to ~20)."""
    prompts = tokens[:, start:]
    n = prompts.shape[1]
    if n < 2:
        return tokens, None
    diff = (prompts[:, :, None] - prompts[:, None]).abs().amax(-1).amax(0)  # n x n
    same = diff <= REPEAT_TOL * float(prompts.abs().max())
    first = same.float().argmax(1)  # each row's first equal row (itself if none before it)
    keep = first == torch.arange(n, device=first.device)
    if bool(keep.all()):
        return tokens, None
    rows = torch.nonzero(keep)[:, 0]
    counts = torch.bincount(first, minlength=n)[rows].to(tokens.dtype)
    rows = torch.cat([torch.arange(start, device=tokens.device), start + rows])
    return tokens[:, rows], torch.cat([counts.new_zeros(start), counts.log()])


def transformer_forward(tr, plan: dict, point_embedding: torch.Tensor, out_tokens: Optional[int] = None,
                        state: Optional[dict] = None, key_bias: Optional[torch.Tensor] = None,
                        ) -> Tuple[torch.Tensor, FactoredKeys]:
    """The blocks and the final attention of ``tr`` on a planned image -> (tokens B x N' x C,
    factored image tokens). ``out_tokens`` as in ``fast_two_way.transformer_forward``;
    ``state`` receives ``final_rows(start, stop)`` for more token rows later; ``key_bias``:
    the tokens' log multiplicities (:func:`merge_repeated`)."""
    queries = point_embedding
    b, n, _ = point_embedding.shape
    capacity = len(tr.layers) * (tr.layers[0].cross_attn_image_to_token.num_heads * n + 3)
    fk = FactoredKeys(b, capacity, plan["length"], point_embedding)
    for layer, st in zip(tr.layers, plan["states"]):
        queries = layer.token_self_attention(queries, point_embedding, key_bias)
        queries = layer.norm2(queries + token_to_image(layer.cross_attn_token_to_image, queries + point_embedding,
                                                       st, fk))
        queries = layer.norm3(queries + layer.mlp(queries))
        image_to_token(layer.cross_attn_image_to_token, queries + point_embedding, queries, st, fk, key_bias)
        layer_norm(layer.norm4, st, fk)

    def final_rows(start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        q, pe = queries[:, start:stop], point_embedding[:, start:stop]
        out = token_to_image(tr.final_attn_token_to_image, q + pe, plan["final"], fk)
        return tr.norm_final_attn(q + out)

    if state is not None:
        state["final_rows"] = final_rows
    return final_rows(0, out_tokens), fk


def conv1_output(plan: dict, fk: FactoredKeys, i: int) -> torch.Tensor:
    """The upscaling's first transposed convolution (+ bias, + ``conv1_extra``) of prompt ``i``'s
    factored tokens: 1 x L x 4Cout (columns ky, kx, cout)."""
    pick = slice(i, i + 1)
    y = torch.addcmul(plan["conv1_base"], plan["conv1"], fk.s[pick, :, None])  # 1 x L x 4Cout, ours
    return y.baddbmm_(fk.ft[pick].transpose(1, 2), fk.hm[pick] @ plan["conv1_weight"])
