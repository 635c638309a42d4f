"""The click path's exact rewrites give today's outputs (reduced decoders, random weights).

* The final token->image attention runs only for the output tokens the heads read
  (``MaskDecoder.output_token_count``; ``prune_tokens=False`` is the path before it); SAM 2's
  single-mask request decodes the multimask tokens only when the single mask is unstable.
* ``upscale_masks`` puts the masks in raster order by one row gather (``GATHER_REORDER``;
  False: the 8-d permute the exported graphs keep): bitwise the same.
Both against the published formulation (``TwoWayTransformer.fast = False``) too.
"""
from __future__ import annotations

import pytest
import torch

from samkit.heads import MaskDecoder, TwoWayTransformer
from samkit.heads import upscale
from samkit.models.base import postprocess_crop_upscale, ImageTransform

C, GRID = 64, 16


def _decoder(sam2: bool) -> MaskDecoder:
    torch.manual_seed(0)
    tr = TwoWayTransformer(depth=2, embedding_dim=C, num_heads=8, mlp_dim=128)
    dec = MaskDecoder(transformer_dim=C, transformer=tr, iou_head_hidden_dim=32, use_high_res_features=sam2,
                      pred_obj_scores=sam2, pred_obj_scores_mlp=sam2, use_multimask_token_for_obj_ptr=sam2,
                      iou_prediction_use_sigmoid=sam2, dynamic_multimask_via_stability=sam2)
    with torch.no_grad():  # larger weights than the default init, for logits well away from 0
        for p in dec.parameters():
            p.mul_(2.0)
    return dec.eval()


def _inputs(sam2: bool, batch: int, points: int):
    g = torch.Generator().manual_seed(1)
    embed = torch.randn(1, C, GRID, GRID, generator=g)
    pe = torch.randn(1, C, GRID, GRID, generator=g)
    sparse = torch.randn(batch, points, C, generator=g)
    dense = torch.randn(1, C, 1, 1, generator=g).expand(batch, C, GRID, GRID)  # "no mask": shared
    high = None
    if sam2:
        high = (torch.randn(1, C // 8, 4 * GRID, 4 * GRID, generator=g),
                torch.randn(1, C // 4, 2 * GRID, 2 * GRID, generator=g))
    return embed, pe, sparse, dense, high


def _run(dec, inputs, multimask, fast=True, prune=True, gather=True):
    """(decoder outputs, rows of the final attention in each of its calls)."""
    embed, pe, sparse, dense, high = inputs
    dec.transformer.fast, dec.prune_tokens, saved = fast, prune, upscale.GATHER_REORDER
    upscale.GATHER_REORDER = gather
    rows = []
    hook = dec.transformer.norm_final_attn.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[1]))
    try:
        with torch.inference_mode():
            out = dec(embed, pe, sparse, dense, multimask, high_res_features=high, cache={})
    finally:
        hook.remove()
        dec.transformer.fast, dec.prune_tokens, upscale.GATHER_REORDER = True, True, saved
    return out, rows


# (sam2 layout, batch, prompt tokens, multimask, SAM 2 stability threshold, rows of the final
# attention per call). SAM 2's single mask: threshold 0 -> always stable (one pass, obj + IoU +
# mask token 0), 2 -> never (a second pass for the multimask tokens 1..3; for one prompt only
# the token with the highest predicted IoU).
CASES = [(False, 1, 2, False, None, [2]), (False, 2, 3, True, None, [5]), (False, 1, 2, "all", None, [5]),
         (True, 1, 2, False, 0.0, [3]), (True, 2, 4, False, 2.0, [3, 3]), (True, 1, 2, False, 2.0, [3, 1]),
         (True, 3, 2, True, None, [6]),
         (True, 1, 2, "all", None, [6])]


@pytest.mark.parametrize("sam2,batch,points,multimask,thresh,rows", CASES)
def test_final_attention_runs_for_the_output_tokens_only(sam2, batch, points, multimask, thresh, rows):
    dec = _decoder(sam2)
    if thresh is not None:
        dec.dynamic_multimask_stability_thresh = thresh
    inputs = _inputs(sam2, batch, points)
    new, n_new = _run(dec, inputs, multimask)
    old, n_old = _run(dec, inputs, multimask, prune=False, gather=False)
    ref, _ = _run(dec, inputs, multimask, fast=False, prune=False)
    tokens = (2 if sam2 else 1) + dec.num_mask_tokens + points
    assert (n_new, n_old) == (rows, [tokens])
    scale = ref[0].abs().max().item()
    assert scale > 1.0
    for want in (old, ref):
        assert (new[0] - want[0]).abs().max().item() <= 2e-5 * scale  # mask logits
        assert (new[1] - want[1]).abs().max().item() <= 1e-5  # IoU
        assert new[2].shape == want[2].shape and (new[2] - want[2]).abs().max().item() <= 1e-4  # tokens
        assert (new[3] - want[3]).abs().max().item() <= 1e-5  # object score
    sure = old[0].abs() > 1e-3 * scale
    assert torch.equal((new[0] > 0)[sure], (old[0] > 0)[sure])


@pytest.mark.parametrize("k", [1, 4])
def test_raster_gather_is_bitwise_the_permute(k):
    dec = _decoder(sam2=False)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, GRID, GRID + 3, C, generator=g)  # a non-square grid
    hyper = torch.randn(2, k, C // 8, generator=g)
    saved = upscale.GATHER_REORDER
    try:
        with torch.inference_mode():
            upscale.GATHER_REORDER = True
            a = upscale.upscale_masks(dec, x, hyper)
            upscale.GATHER_REORDER = False
            b = upscale.upscale_masks(dec, x, hyper)
    finally:
        upscale.GATHER_REORDER = saved
    assert a.shape == (2, k, 4 * GRID, 4 * (GRID + 3)) and a.is_contiguous()
    assert torch.equal(a, b)


def test_one_step_resize_is_not_the_two_step_rule():
    """The SAM rule (upsample to the frame, crop the padding, resize to the image) is not one
    bilinear resize of the cropped low-res logits: that shortcut would change the masks."""
    g = torch.Generator().manual_seed(3)
    low = torch.randn(1, 1, 256, 256, generator=g) * 4
    t = ImageTransform((120, 180), (683, 1024), 1024)
    two = postprocess_crop_upscale(low, t)
    one = torch.nn.functional.interpolate(low[..., :171, :], (120, 180), mode="bilinear", align_corners=False)
    assert two.shape == one.shape and (two - one).abs().max().item() > 1e-2
