"""Inference path of the mask decoder's upscaling, channels-last and as plain GEMMs.

``output_upscaling`` is ConvTranspose2d(C, C/4, 2, 2) -> norm -> act -> ConvTranspose2d(C/4,
C/8, 2, 2) -> act, then each mask is the dot product of a hypernetwork vector with the C/8
channels of every pixel. A 2x2 stride-2 transposed convolution never overlaps, so it is one
matrix product per input pixel (``x @ W``, ``W`` = C_in x (2*2*C_out)), and the transformer
already hands over its image tokens channels-last. We keep the second product's output in
2x2-block order and only reorder the K requested masks at the end (K x 4h x 4w values instead
of C/8 x 4h x 4w). Same function as the reference, different summation order.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import LayerNorm2d
from ..layers.inplace import add_, gelu_


#: eager masks are put in raster order by one row gather (False: the 8-d permute that exported
#: graphs use; kept reachable for benchmarks)
GATHER_REORDER = True


def conv_t2x2_weight(conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution as one matrix ``Cin x (2*2*Cout)`` (columns ky, kx, cout)."""
    return conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, 4 * conv.out_channels)


def conv_t2x2_bias(conv: nn.ConvTranspose2d) -> torch.Tensor:
    """Its bias per column of :func:`conv_t2x2_weight` (``4 Cout``; zeros without a bias)."""
    if conv.bias is None:
        return conv.weight.new_zeros(4 * conv.out_channels)
    return conv.bias.repeat(4)


def conv_s1_blocks(feat_s1: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """SAM 2's ``conv_s1`` level ``B x C/4 x 2h x 2w`` as a view in the block order of the first
    transposed convolution's output, ``B x h x w x ky x kx x C/4``."""
    return feat_s1.view(feat_s1.shape[0], feat_s1.shape[1], h, 2, w, 2).permute(0, 2, 4, 3, 5, 1)


def _transposed_conv_2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``B x h x w x Cin`` -> ``B x h x w x 2 x 2 x Cout`` (dims: row, col, ky, kx, channel)."""
    b, h, w, cin = x.shape
    cout = conv.out_channels
    weight = conv_t2x2_weight(conv)
    if conv.bias is not None:  # the bias rides in the GEMM's accumulator
        y = torch.addmm(conv.bias.repeat(4), x.reshape(b * h * w, cin), weight)
    else:
        y = x.reshape(b * h * w, cin) @ weight
    return y.view(b, h, w, 2, 2, cout)


def _norm_channels_last(norm: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """LayerNorm2d (per pixel over channels) or GroupNorm(1, C) (per image) on ``B x H x W x C``."""
    if isinstance(norm, LayerNorm2d):
        return F.layer_norm(y, (int(norm.weight.shape[0]),), norm.weight, norm.bias, norm.eps)  # a static size (ONNX)
    if isinstance(norm, nn.GroupNorm) and norm.num_groups == 1:
        # GroupNorm(1, C) normalises each image over all its values: one layer_norm over the
        # flattened image (a fast vectorised kernel; var_mean is several times slower here),
        # then the per-channel affine in one pass
        b, c = y.shape[0], y.shape[-1]
        z = F.layer_norm(y.reshape(b, -1), (y[0].numel(),), eps=norm.eps)
        if norm.affine:
            z = torch.addcmul(norm.bias, z.view(b, -1, c), norm.weight)
        return z.view_as(y)
    raise TypeError(f"unsupported upscaling norm {type(norm).__name__}")


def _act_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The decoder's activation on a temporary we own, in place when it is GELU / ReLU."""
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return gelu_(x)
    if isinstance(act, nn.ReLU):
        return x.relu_() if not (x.requires_grad or torch.jit.is_tracing()) else act(x)
    return act(x)


def upscale_masks(decoder, x: torch.Tensor, hyper_in: torch.Tensor,
                  high_res_features: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """``x`` B x h x w x C transformer image tokens, ``hyper_in`` B x K x C/8 ->
    mask logits B x K x 4h x 4w. ``high_res_features`` (SAM 2): (B|1 x C/8 x 4h x 4w,
    B|1 x C/4 x 2h x 2w), added after each transposed convolution.

    Norm and activations are per pixel, so the 2x2 blocks never need reordering in between:
    intermediate tensors stay in block order (``B x h x w x ky1 x kx1 [x ky2 x kx2] x C``) and
    only the K output masks are put in raster order (row ``4i + 2 ky1 + ky2``)."""
    return project_masks(upscale_features(decoder, x, high_res_features), hyper_in)


def upscale_features(decoder, x: torch.Tensor,
                     high_res_features: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """The upscaled per-pixel features of :func:`upscale_masks`: ``B x h x w x 2 x 2 x 2 x 2 x C/8``
    (block order: row, col, ky1, kx1, ky2, kx2, channel)."""
    dc1 = decoder.output_upscaling[0]
    y = _transposed_conv_2x2(x, dc1)  # B x h x w x 2 x 2 x C/4
    if high_res_features is not None:
        y = add_(y, conv_s1_blocks(high_res_features[1], x.shape[1], x.shape[2]))
    s0 = None if high_res_features is None else high_res_blocks(high_res_features[0], x.shape[1], x.shape[2])
    return upscale_rest(decoder, y, s0)


def high_res_blocks(feat_s0: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """SAM 2's finest level ``B x C/8 x 4h x 4w`` as a view in block order ``B x h x w x ky1 x kx1 x
    ky2 x kx2 x C/8`` (``.contiguous()`` of it can be kept per image)."""
    c8 = feat_s0.shape[1]
    return feat_s0.view(feat_s0.shape[0], c8, h, 2, 2, w, 2, 2).permute(0, 2, 5, 3, 6, 4, 7, 1)


def upscale_rest(decoder, y: torch.Tensor, s0: Optional[torch.Tensor] = None, fused: bool = False) -> torch.Tensor:
    """The upscaling after the first transposed convolution (its bias and SAM 2's ``conv_s1``
    features already added): ``y`` B x h x w x 2 x 2 x C/4 -> :func:`upscale_features`' output.
    ``s0``: SAM 2's ``conv_s0`` features in block order (:func:`high_res_blocks`). ``fused``
    (eager CPU inference): the second product takes its bias, ``s0`` and GELU in one pass."""
    _, norm, act1, dc2, act2 = decoder.output_upscaling
    b, h, w = y.shape[:3]
    y = _act_(act1, _norm_channels_last(norm, y))
    if fused and not torch.jit.is_tracing():
        z = _second_product_fused(dc2, act2, y.reshape(b * h * w * 4, -1), s0, b)
        if z is not None:
            return z.view(b, h, w, 2, 2, 2, 2, -1)
    z = _transposed_conv_2x2(y.reshape(b, h, w * 4, -1), dc2)  # B x h x 4w x 2 x 2 x C/8 (rows h, w, ky1, kx1)
    z = z.view(b, h, w, 2, 2, 2, 2, -1)  # B x h x w x ky1 x kx1 x ky2 x kx2 x C/8
    if s0 is not None:
        z = add_(z, s0)
    return _act_(act2, z)


def _second_product_fused(dc2: nn.ConvTranspose2d, act2: nn.Module, y: torch.Tensor,
                          s0: Optional[torch.Tensor], b: int) -> Optional[torch.Tensor]:
    """``y`` (B h w 4) x C/4 -> (B h w 4) x (4 C/8) after the bias, ``s0`` and GELU, or None when
    no fused form applies. Without ``s0``: oneDNN's linear with bias and GELU in its epilogue;
    with it: ``s0`` + bias is the product's accumulator."""
    if not (isinstance(act2, nn.GELU) and act2.approximate == "none") or y.device.type != "cpu":
        return None
    weight, bias = conv_t2x2_weight(dc2), conv_t2x2_bias(dc2)
    if s0 is not None:
        cols = weight.shape[1]
        acc = torch.add(s0.reshape(s0.shape[0], -1, cols), bias)  # ours: the product's accumulator
        acc = acc.expand(b, -1, -1).reshape(y.shape[0], cols)
        return gelu_(acc.addmm_(y, weight))
    if y.dtype != torch.float32 or not onednn_linear_ok():
        return None
    return torch.ops.mkldnn._linear_pointwise(y, weight.t().contiguous(), bias, "gelu", [], "none")


_ONEDNN: list = []  # [usable] once probed


def onednn_linear_ok() -> bool:
    """Whether oneDNN's fused linear (``torch.ops.mkldnn._linear_pointwise``) runs here and
    gives exact GELU."""
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


def project_masks(z: torch.Tensor, hyper_in: torch.Tensor) -> torch.Tensor:
    """Upscaled features ``z`` (:func:`upscale_features`) and ``hyper_in`` B x K x C/8 -> mask
    logits B x K x 4h x 4w in raster order."""
    b, h, w = z.shape[:3]
    k = hyper_in.shape[1]
    masks = torch.matmul(z.reshape(b, -1, z.shape[-1]), hyper_in.transpose(1, 2))  # B x (h w ky1 kx1 ky2 kx2) x K
    if torch.jit.is_tracing() or not GATHER_REORDER:  # exported graphs: a Transpose (no index constant)
        masks = masks.view(b, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(b, k, 4 * h, 4 * w)
    # eager: one gather of whole rows in raster order, several times faster than the 8-d
    # strided copy with its innermost runs of 2 (bitwise the same values)
    masks = torch.index_select(masks, 1, _raster_index(h, w, masks.device))
    return masks.transpose(1, 2).contiguous().view(b, k, 4 * h, 4 * w)


@functools.lru_cache(maxsize=8)
def _raster_index(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Row ``r`` of the raster-order mask (``16 h w`` rows, (4h) x (4w) pixels) is row
    ``_raster_index(h, w)[r]`` of the block order (h, w, ky1, kx1, ky2, kx2)."""
    with torch.inference_mode(False):
        block = torch.arange(16 * h * w, device=device).view(h, w, 2, 2, 2, 2)
        return block.permute(0, 2, 4, 1, 3, 5).reshape(-1)
