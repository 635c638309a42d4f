"""The factored click path (``samkit.heads.factored_decoder``) against the decoder's other two
paths: the low-rank fast path (``MaskDecoder.factored = False``) and the published formulation
(``TwoWayTransformer.fast = False``). Reduced decoders (C = 128, 16 x 16 grid), random weights."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from samkit.heads import MaskDecoder, TwoWayTransformer
from samkit.heads import factored_decoder

C, GRID = 128, 16


def _decoder(layout: str) -> MaskDecoder:
    torch.manual_seed(0)
    sam2 = layout == "sam2"
    eff = layout == "efficient_sam"
    tr = TwoWayTransformer(depth=2, embedding_dim=C, num_heads=8, mlp_dim=256,
                           activation=nn.GELU if eff else nn.ReLU, self_attn_mode="efficient_sam" if eff else "sam")
    dec = MaskDecoder(transformer_dim=C, transformer=tr, iou_head_hidden_dim=32, use_high_res_features=sam2,
                      pred_obj_scores=sam2, pred_obj_scores_mlp=sam2, use_multimask_token_for_obj_ptr=sam2,
                      iou_prediction_use_sigmoid=sam2, dynamic_multimask_via_stability=sam2,
                      upscaling_norm="group" if eff else "layer")
    with torch.no_grad():  # larger weights than the default init: logits well away from 0, norms that matter
        for name, p in dec.named_parameters():
            p.mul_(2.0)
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return dec.eval()


def _inputs(layout: str, batch: int, points: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(1, C, GRID, GRID, generator=g) * 2
    pe = torch.randn(1, C, GRID, GRID, generator=g)
    sparse = torch.randn(batch, points, C, generator=g)
    dense = torch.randn(1, C, 1, 1, generator=g).expand(batch, C, GRID, GRID)  # "no mask": shared
    high = None
    if layout == "sam2":
        high = (torch.randn(1, C // 8, 4 * GRID, 4 * GRID, generator=g),
                torch.randn(1, C // 4, 2 * GRID, 2 * GRID, generator=g))
    return embed, pe, sparse, dense, high


@contextlib.contextmanager
def plans_built():
    """Counts the factored decoder's per-image plans built meanwhile (also used by test_auto_fast)."""
    built, real = [], factored_decoder.build_plan
    factored_decoder.build_plan = lambda *a, **k: built.append(1) or real(*a, **k)
    try:
        yield built
    finally:
        factored_decoder.build_plan = real


def _run(dec, inputs, multimask, path: str, cache=None):
    embed, pe, sparse, dense, high = inputs
    dec.transformer.fast = path != "reference"
    dec.factored = path == "factored"
    try:
        with torch.inference_mode():
            return dec(embed, pe, sparse, dense, multimask, high_res_features=high,
                       cache={} if cache is None else cache)
    finally:
        dec.transformer.fast, dec.factored = True, True


# (layout, batch, prompt tokens, multimask, SAM 2 stability threshold)
CASES = [("sam", 1, 2, False, None), ("sam", 2, 3, True, None), ("sam", 1, 2, "all", None),
         ("sam", 3, 3, False, None), ("efficient_sam", 1, 2, False, None), ("efficient_sam", 2, 3, True, None),
         ("sam2", 1, 2, False, 0.0), ("sam2", 2, 2, False, 2.0), ("sam2", 1, 2, False, 2.0), ("sam2", 1, 2, True, None),
         ("sam2", 2, 2, "all", None)]


@pytest.mark.parametrize("layout,batch,points,multimask,thresh", CASES)
def test_factored_path_gives_the_decoder_outputs(layout, batch, points, multimask, thresh):
    dec = _decoder(layout)
    if thresh is not None:
        dec.dynamic_multimask_stability_thresh = thresh
    inputs = _inputs(layout, batch, points)
    with plans_built() as built:
        new = _run(dec, inputs, multimask, "factored")
    assert built == [1]  # the factored path ran
    fast = _run(dec, inputs, multimask, "fast")
    ref = _run(dec, inputs, multimask, "reference")
    scale = ref[0].abs().max().item()
    assert scale > 1.0
    for want in (fast, ref):
        assert new[0].shape == want[0].shape
        assert (new[0] - want[0]).abs().max().item() <= 2e-5 * scale  # mask logits
        assert (new[1] - want[1]).abs().max().item() <= 2e-5  # IoU
        assert new[2].shape == want[2].shape and (new[2] - want[2]).abs().max().item() <= 2e-4  # tokens
        assert (new[3] - want[3]).abs().max().item() <= 1e-4  # object score
    sure = ref[0].abs() > 1e-3 * scale
    assert torch.equal((new[0] > 0)[sure], (ref[0] > 0)[sure])


def test_plan_is_kept_per_image_and_rebuilt_when_it_changes():
    dec = _decoder("sam")
    inputs = _inputs("sam", 1, 2)
    cache = {}
    with plans_built() as built:
        first = _run(dec, inputs, False, "factored", cache)
        again = _run(dec, inputs, False, "factored", cache)
        assert len(built) == 1 and torch.equal(first[0], again[0])
        with torch.no_grad():  # new weights: the plan must not be reused
            dec.transformer.layers[1].norm4.weight.mul_(1.5)
        changed = _run(dec, inputs, False, "factored", cache)
        assert len(built) == 2
        assert (changed[0] - _run(dec, inputs, False, "reference")[0]).abs().max() <= 2e-5 * changed[0].abs().max()
        other = _inputs("sam", 1, 2, seed=5)  # another image
        _run(dec, other, False, "factored", cache)
        assert len(built) == 3


def test_many_prompt_tokens_take_the_low_rank_path():
    """With more than internal_dim / heads prompt tokens the factored form stops paying: the
    decoder keeps the low-rank path (and the same outputs)."""
    dec = _decoder("sam")
    inputs = _inputs("sam", 1, 12)  # 5 output tokens + 12 > 64 / 8
    with plans_built() as built:
        new = _run(dec, inputs, False, "factored")
    assert built == []
    assert torch.allclose(new[0], _run(dec, inputs, False, "reference")[0], atol=1e-4)


@pytest.mark.parametrize("path", ["factored", "fast"])
def test_mask_prompts_never_reuse_kept_image_projections(path):
    """A mask prompt's dense embedding differs per call (and a freed tensor's storage may come back
    at the same address): with one cache across calls every result is still the reference's."""
    dec = _decoder("sam")
    embed, pe, sparse, _, _ = _inputs("sam", 1, 2)
    cache, dense = {}, torch.empty(1, C, GRID, GRID)
    for seed in range(3):  # the same storage every time: what an allocator reusing an address gives
        dense.copy_(torch.randn(1, C, GRID, GRID, generator=torch.Generator().manual_seed(seed)))
        got = _run(dec, (embed, pe, sparse, dense, None), False, path, cache)
        ref = _run(dec, (embed, pe, sparse, dense, None), False, "reference")
        assert (got[0] - ref[0]).abs().max() <= 2e-5 * ref[0].abs().max()


def test_recorded_gradients_take_the_low_rank_path():
    """An eval-mode decoder under autograd (fine-tuning heads, distillation) must stay
    differentiable: no plan, and the gradient reaches the image embedding."""
    dec = _decoder("sam")
    embed, pe, sparse, dense, _ = _inputs("sam", 1, 2)
    embed = embed.clone().requires_grad_(True)
    with plans_built() as built:
        out = dec(embed, pe, sparse, dense, False, cache={})
    out[0].sum().backward()
    assert built == [] and embed.grad is not None and embed.grad.abs().sum() > 0


# (layout, batch, distinct prompt tokens, copies of the last one, relative jitter of the copies)
REPEATS = [("efficient_sam", 1, 1, 5, 0.0), ("efficient_sam", 2, 2, 4, 1e-6), ("sam", 1, 1, 2, 0.0),
           ("sam2", 1, 2, 3, 2e-6), ("sam2", 2, 1, 2, 0.0)]


@pytest.mark.parametrize("layout,batch,distinct,copies,jitter", REPEATS)
def test_repeated_prompt_tokens_run_once(layout, batch, distinct, copies, jitter):
    """EfficientSAM pads every prompt to 6 points with one padding point: the copies run as one
    token weighted by their number (``merge_repeated``), with the decoder's outputs, and a prompt
    that would be too long for the factored path fits in it."""
    dec = _decoder(layout)
    embed, pe, sparse, dense, high = _inputs(layout, batch, distinct)
    g = torch.Generator().manual_seed(3)
    pad = sparse[:, -1:].expand(batch, copies, C)
    pad = pad * (1 + jitter * torch.randn(batch, copies, C, generator=g))  # float rounding of the copies
    inputs = (embed, pe, torch.cat([sparse, pad], 1), dense, high)
    seen = []
    real = factored_decoder.transformer_forward
    factored_decoder.transformer_forward = lambda tr, plan, tokens, *a: seen.append(tokens.shape[1]) or real(
        tr, plan, tokens, *a)
    try:
        new = _run(dec, inputs, False, "factored")
    finally:
        factored_decoder.transformer_forward = real
    front = dec.num_mask_tokens + 1 + int(dec.pred_obj_scores)
    assert seen == [front + distinct]  # the copies and the token they repeat ran once
    ref = _run(dec, inputs, False, "reference")
    scale = ref[0].abs().max().item()
    assert (new[0] - ref[0]).abs().max().item() <= 2e-5 * scale
    assert (new[1] - ref[1]).abs().max().item() <= 2e-5
    assert (new[3] - ref[3]).abs().max().item() <= 1e-4


MERGE_CASES = [  # (prompt rows as labels of distinct tokens, expected kept labels, expected counts)
    ([0, 1, 1, 1], [0, 1], [1, 3]), ([0, 1, 2], [0, 1, 2], None), ([1, 0, 1, 0, 0], [1, 0], [2, 3]), ([0], [0], None)]


@pytest.mark.parametrize("rows,kept,counts", MERGE_CASES)
def test_merge_repeated(rows, kept, counts):
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, C, generator=g)
    front = torch.randn(1, 2, C, generator=g)
    tokens = torch.cat([front, basis[rows][None]], 1)
    merged, log_count = factored_decoder.merge_repeated(tokens, 2)
    assert torch.equal(merged, torch.cat([front, basis[kept][None]], 1))
    if counts is None:
        assert log_count is None
    else:
        assert torch.allclose(log_count, torch.tensor([1.0, 1.0] + counts).log())


def test_near_but_distinct_prompts_are_not_merged():
    """Two clicks a hundredth of a pixel apart are two tokens (only float rounding is merged)."""
    from samkit.heads import PromptEncoder

    enc = PromptEncoder(embed_dim=C, image_embedding_size=(GRID, GRID), input_image_size=(1024, 1024))
    pts = torch.tensor([[[500.0, 300.0], [500.01, 300.0]]])
    with torch.no_grad():
        sparse, _ = enc((pts, torch.ones(1, 2)), None, None)
    merged, log_count = factored_decoder.merge_repeated(sparse, 0)
    assert log_count is None and merged.shape[1] == sparse.shape[1]
