"""Segment-everything decoding: many single-point prompts against one image, batched.

The same function as ``SamModel.decode`` (prompt encoder -> two-way transformer -> mask
heads) for a batch of B one-point prompts that share one image embedding, arranged for a
large B (64 by default) on CPU. The math is that of ``samkit.heads.fast_two_way`` (shared first
block, low-rank attention); what changes is where the large B x L x C temporaries go
(L = 64 * 64 image tokens, C = 256 channels):

* **No broadcast copies.** The first block's image-side keys / values / queries are shared
  (1 x L x I); a batched product against them runs with the heads as the batch
  (H x (B N) x dh @ H x dh x L) instead of broadcasting them B times.
* **The residual is the accumulator.** The image->token attention update ``P^T U`` (P the
  attention of every image token over the N prompt tokens, per head) is accumulated straight
  into the image tokens (``baddbmm``), and the output bias rides in ``U``: softmax rows of each
  head sum to one, so adding ``bias / H`` to every row of ``U`` adds ``bias`` to every token.
* **Fused bias and GELU.** The two transposed convolutions of the mask upscaling are single
  matrix products; on CPU the oneDNN linear adds the bias (and the second one's GELU) in its
  epilogue instead of first copying the bias into a 100M-element output.

Only the order of floating-point sums changes; tests compare against ``SamModel.decode``.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..heads import fast_two_way as fast
from ..layers.inplace import gelu_


def supported(model) -> bool:
    """True when ``model`` decodes points exactly as ``SamModel`` does (SAM, MobileSAM, EdgeSAM
    when they keep its ``decode``) with the eval-mode fast transformer and SAM's upscaling."""
    from ..heads import MaskDecoder, TwoWayTransformer
    from ..layers import LayerNorm2d
    from ..models.sam import SamModel

    if not isinstance(model, SamModel) or type(model).decode is not SamModel.decode or model.training:
        return False
    dec = model.mask_decoder
    if not isinstance(dec, MaskDecoder) or not isinstance(dec.transformer, TwoWayTransformer):
        return False
    if dec.training or not dec.transformer.fast or dec.use_high_res_features or dec.pred_obj_scores:
        return False
    if dec.dynamic_multimask_via_stability or len(dec.transformer.layers) < 1:
        return False
    ups = list(dec.output_upscaling)
    if len(ups) != 5 or not isinstance(ups[1], LayerNorm2d):
        return False
    gelus = [m for m in (ups[2], ups[4]) if isinstance(m, nn.GELU) and m.approximate == "none"]
    if len(gelus) != 2:
        return False
    layer = dec.transformer.layers[0]
    n_tokens = 1 + dec.num_mask_tokens + 2  # IoU token, mask tokens, the point and SAM's padding point
    return all(fast.low_rank_pays(a, n_tokens) for a in (layer.cross_attn_token_to_image,
                                                         layer.cross_attn_image_to_token))


def decode_points(model, features, frame_points: torch.Tensor, multimask: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """``frame_points`` B x 2 foreground points in model-frame pixels -> (low-res logits
    B x K x 4h x 4w, predicted IoU B x K), K = 3 with ``multimask`` else 1. Needs
    :func:`supported`."""
    pe, dec = model.prompt_encoder, model.mask_decoder
    b = frame_points.shape[0]
    labels = torch.ones(b, 1, dtype=torch.int, device=frame_points.device)
    sparse, dense = pe((frame_points[:, None, :], labels), None, None)
    tokens = dec.prompt_tokens(sparse)
    image_pe = pe.get_dense_pe()
    embed = features.embed
    _, c, h, w = embed.shape
    first = dec._first_layer(features.cache, embed, image_pe, dense)
    if first is None:
        first = dec.transformer.first_layer(embed if dense is None else embed + dense[:1], image_pe)
    queries, keys = _transformer(dec.transformer, tokens, first)
    wanted = list(range(1, dec.num_mask_tokens)) if multimask else [0]
    mask_tokens = queries[:, 1 : 1 + dec.num_mask_tokens, :]
    hyper = torch.stack([dec.output_hypernetworks_mlps[i](mask_tokens[:, i, :]) for i in wanted], dim=1)
    masks = _upscale(dec, keys, hyper, h, w)
    iou = dec.iou_prediction_head(queries[:, 0, :])
    return masks, (iou[:, 1:] if multimask else iou[:, 0:1])


# ----------------------------------------------------------------------------- transformer
def _transformer(tr, tokens: torch.Tensor, first: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Prompt tokens B x N x C and the first block's shared projections -> (tokens B x N x C,
    image tokens B x L x C)."""
    key_pe = first["key_pe"]
    layer = tr.layers[0]
    queries = layer.token_self_attention(tokens, tokens)
    queries = layer.norm2(queries + _token_to_shared_image(layer.cross_attn_token_to_image, queries + tokens,
                                                           first["k"], first["v"]))
    queries = layer.norm3(queries + layer.mlp(queries))
    keys = _image_to_token_(layer.cross_attn_image_to_token, queries + tokens, queries, first["keys"],
                            image_q=first["q"])
    keys = layer.norm4(keys)
    for layer in tr.layers[1:]:
        queries = layer.token_self_attention(queries, tokens)
        k_pe = keys + key_pe
        queries = layer.norm2(queries + fast.token_to_image(layer.cross_attn_token_to_image, queries + tokens,
                                                            k_pe, keys))
        queries = layer.norm3(queries + layer.mlp(queries))
        keys = layer.norm4(_image_to_token_(layer.cross_attn_image_to_token, queries + tokens, queries, keys,
                                            image_pe=k_pe))
        del k_pe
    out = fast.token_to_image(tr.final_attn_token_to_image, queries + tokens, keys + key_pe, keys)
    return tr.norm_final_attn(queries + out), keys


def _token_to_shared_image(attn, q_in: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``q_in`` B x N x C attends to shared projected image keys / values ``k``, ``v`` (1 x L x I);
    the heads are the batch of the products. -> B x N x C."""
    b, n, _ = q_in.shape
    heads, inner = attn.num_heads, attn.internal_dim
    dh = inner // heads
    length = k.shape[1]
    q = attn.q_proj(q_in) * dh ** -0.5
    qh = q.reshape(b * n, heads, dh).transpose(0, 1)  # H x BN x dh
    s = torch.bmm(qh, k[0].view(length, heads, dh).permute(1, 2, 0))  # H x BN x L
    p = torch.softmax(s, dim=-1)
    o = torch.bmm(p, v[0].view(length, heads, dh).transpose(0, 1))  # H x BN x dh
    return attn.out_proj(o.transpose(0, 1).reshape(b, n, inner))


def _image_to_token_(attn, k_in: torch.Tensor, v_in: torch.Tensor, keys: torch.Tensor,
                     image_q: torch.Tensor = None, image_pe: torch.Tensor = None) -> torch.Tensor:
    """Image tokens attend to the B x N prompt tokens (keys from ``k_in``, values from ``v_in``)
    and the result is added to ``keys`` (the residual; 1 x L x C shared, or B x L x C updated in
    place). Image queries: ``image_q`` (shared projected queries 1 x L x I) or the low-rank form
    on ``image_pe`` (B x L x C image tokens plus positional encoding). -> B x L x C."""
    b, n, _ = k_in.shape
    heads, inner, c = attn.num_heads, attn.internal_dim, attn.embedding_dim
    dh = inner // heads
    scale = dh ** -0.5
    length = keys.shape[1]
    k = attn.k_proj(k_in).view(b, n, heads, dh) * scale
    v = attn.v_proj(v_in).view(b, n, heads, dh)
    u = torch.einsum("bnhd,chd->bhnc", v, attn.out_proj.weight.view(c, heads, dh))  # B x H x N x C
    if attn.out_proj.bias is not None:  # every head's attention sums to one over the N tokens
        u = u + attn.out_proj.bias / heads
    u = u.reshape(b, heads * n, c)
    if image_q is not None:
        kh = k.permute(2, 0, 1, 3).reshape(heads, b * n, dh)
        s = torch.bmm(kh, image_q[0].view(length, heads, dh).permute(1, 2, 0)).view(heads, b, n, length)
        p = torch.softmax(s, dim=2).permute(1, 0, 2, 3).reshape(b, heads * n, length)
    else:
        m = torch.einsum("bnhd,hdc->bhnc", k, attn.q_proj.weight.view(heads, dh, c)).reshape(b, heads * n, c)
        s = torch.bmm(m, image_pe.transpose(1, 2)).view(b, heads, n, length)
        if attn.q_proj.bias is not None:
            s = s + torch.einsum("bnhd,hd->bhn", k, attn.q_proj.bias.view(heads, dh))[..., None]
        p = torch.softmax(s, dim=2).view(b, heads * n, length)
    if keys.shape[0] == b:
        return keys.baddbmm_(p.transpose(1, 2), u)
    return torch.baddbmm(keys.expand(b, -1, -1), p.transpose(1, 2), u)


# ----------------------------------------------------------------------------- mask upscaling
def _upscale(dec, keys: torch.Tensor, hyper: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Image tokens ``keys`` B x (h w) x C, hypernetwork vectors ``hyper`` B x K x C/8 -> mask
    logits B x K x 4h x 4w (ConvT 2x2 -> LayerNorm2d -> GELU -> ConvT 2x2 -> GELU -> dot)."""
    dc1, norm, _, dc2, _ = dec.output_upscaling
    b, length, c = keys.shape
    c4, c8 = dc1.out_channels, dc2.out_channels
    y = _linear(keys.reshape(b * length, c), _conv_weight(dc1), _conv_bias(dc1), gelu=False)  # BL x (ky kx c4)
    y = gelu_(F.layer_norm(y.view(-1, c4), (c4,), norm.weight, norm.bias, norm.eps))
    z = _linear(y, _conv_weight(dc2), _conv_bias(dc2), gelu=True)  # (B h w ky1 kx1) x (ky2 kx2 c8)
    k = hyper.shape[1]
    masks = torch.matmul(z.view(b, -1, c8), hyper.transpose(1, 2))  # B x (h w ky1 kx1 ky2 kx2) x K
    masks = masks.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return masks.reshape(b, k, 4 * h, 4 * w)


def _conv_weight(conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution as a linear layer's weight (4 Cout x Cin, rows in
    (ky, kx, cout) order)."""
    return conv.weight.permute(2, 3, 1, 0).reshape(4 * conv.out_channels, conv.in_channels).contiguous()


def _conv_bias(conv: nn.ConvTranspose2d) -> torch.Tensor:
    if conv.bias is None:
        return torch.zeros(4 * conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)
    return conv.bias.repeat(4)


_ONEDNN: List[bool] = []  # [usable] once probed


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gelu: bool) -> torch.Tensor:
    """``x @ weight.T + bias`` (then exact GELU): oneDNN's fused linear on CPU when available
    (bias and GELU in the product's epilogue), else ``addmm`` + in-place GELU."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and _onednn_ok():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none", [],
                                                  "none" if gelu else "")
    y = torch.addmm(bias, x, weight.t())
    return gelu_(y) if gelu else y


def _onednn_ok() -> bool:
    if not _ONEDNN:
        ok = False
        try:
            if torch.backends.mkldnn.is_available():
                x, wt, bias = torch.ones(2, 3), torch.ones(4, 3), torch.zeros(4)
                out = torch.ops.mkldnn._linear_pointwise(x, wt, bias, "gelu", [], "none")
                ok = bool(torch.allclose(out, F.gelu(torch.full((2, 4), 3.0))))
        except (AttributeError, RuntimeError):
            ok = False
        _ONEDNN.append(ok)
    return _ONEDNN[0]

