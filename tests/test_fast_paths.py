"""The inference fast paths compute the same function as the published formulation.

Mask decoder: low-rank two-way transformer, shared/cached first block, channels-last GEMM
upscaling, masks only for the requested tokens (``samkit/heads/fast_two_way.py``,
``upscale.py``) against ``TwoWayTransformer.reference_forward`` + the ConvTranspose2d
upscaling, on the golden weights of three decoder variants. SAM ViT encoder: chunked global
attention, fused-mask windowed attention and projection of real tokens only (``vit_sam.py``)
against the explicit formula of the paper.
"""
from __future__ import annotations

import pytest
import torch

from parity import synth_state_dict
from samkit.models.base import ImageFeatures
from samkit.registry import build_model

DECODER_FAMILIES = ["sam_vit_b", "sam2.1_hiera_t", "efficient_sam_vitt"]

# (batch, points per prompt, box, mask input, multimask)
PROMPTS = [
    (1, 1, False, False, False),
    (1, 1, False, False, True),
    (1, 2, False, False, "all"),
    (16, 1, False, False, True),     # everything-mode batch: shared first block
    (3, 2, True, False, True),
    (2, 1, False, True, True),       # mask input: per-prompt image tokens, nothing shared
    (1, 20, False, False, False),    # many tokens: the low-rank form no longer pays
]


_MODELS = {}


def _decoder_model(name):
    """samkit model with the golden decoder/prompt-encoder weights (the encoder is not used)."""
    if name not in _MODELS:
        from samkit.checkpoint import remap

        model = build_model(name).eval()
        heads = {k: v for k, v in remap(synth_state_dict(name), name).items()
                 if k.startswith(("mask_decoder.", "prompt_encoder."))}
        missing = [k for k in heads if k not in model.state_dict()]
        assert not missing, missing[:5]
        model.load_state_dict(heads, strict=False)
        _MODELS[name] = model
    return name, _MODELS[name]


@pytest.fixture(scope="module", params=DECODER_FAMILIES)
def decoder_model(request):
    return _decoder_model(request.param)


# EfficientSAM's prompt encoder takes points only (boxes arrive as corner points; no mask input)
CASES = [(name, p) for name in DECODER_FAMILIES for p in PROMPTS
         if not (name.startswith("efficient_sam") and (p[2] or p[3]))]


def _features(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    embed = torch.randn(1, 256, 64, 64, generator=g)
    high = None
    if getattr(model, "use_high_res_features", False):
        high = (torch.randn(1, 32, 256, 256, generator=g), torch.randn(1, 64, 128, 128, generator=g))
    return embed, high


def _decode(model, embed, high, prompt, fast: bool, cache: bool = True):
    b, n, box, mask, multimask = prompt
    g = torch.Generator().manual_seed(1)
    points = torch.rand(b, n, 2, generator=g) * 1024
    labels = torch.randint(0, 2, (b, n), generator=g)
    boxes = torch.tensor([[100.0, 200.0, 600.0, 700.0]]).expand(b, 4) if box else None
    mask_input = torch.randn(b, 1, 256, 256, generator=g) if mask else None
    model.mask_decoder.transformer.fast = fast
    try:
        features = ImageFeatures(embed, high)
        if not cache:
            features.cache = None
        with torch.inference_mode():
            return model.decode(features, points, labels, boxes, mask_input, multimask), features
    finally:
        model.mask_decoder.transformer.fast = True


@pytest.mark.parametrize("name,prompt", CASES,
                         ids=lambda c: c if isinstance(c, str) else "b{}_n{}_box{}_mask{}_mm{}".format(*c))
def test_fast_decoder_equals_reference(name, prompt):
    name, model = _decoder_model(name)
    embed, high = _features(model)
    ref, _ = _decode(model, embed, high, prompt, fast=False)
    for cache in (True, False):
        out, _ = _decode(model, embed, high, prompt, fast=True, cache=cache)
        assert out.low_res.shape == ref.low_res.shape
        scale = ref.low_res.abs().max().item()
        assert scale > 1.0, "weights too small for a meaningful comparison"
        assert (out.low_res - ref.low_res).abs().max().item() < 5e-5 * max(scale, 1.0)
        assert (out.iou - ref.iou).abs().max().item() < 1e-5
        if ref.object_score is not None:
            assert (out.object_score - ref.object_score).abs().max().item() < 1e-5
        assert (out.tokens - ref.tokens).abs().max().item() < 1e-4


@pytest.fixture
def unfactored(decoder_model):
    """The decoder's low-rank path (the factored one keeps a plan instead; tests/test_factored_decoder.py)."""
    decoder_model[1].mask_decoder.factored = False
    yield decoder_model
    decoder_model[1].mask_decoder.factored = True


def test_first_block_cache_is_reused_and_invalidated(unfactored):
    name, model = unfactored
    embed, high = _features(model)
    features = ImageFeatures(embed, high)
    pts, labs = torch.tensor([[[500.0, 400.0]]]), torch.tensor([[1]])
    with torch.inference_mode():
        first = model.decode(features, pts, labs, None, None, True)
        entry = features.cache[id(model.mask_decoder)]
        again = model.decode(features, pts + 10, labs, None, None, True)
        assert features.cache[id(model.mask_decoder)] is entry  # reused, not recomputed
    assert not torch.equal(first.low_res, again.low_res)
    # new weights in the first block invalidate the cache
    k_proj = model.mask_decoder.transformer.layers[0].cross_attn_token_to_image.k_proj
    saved = k_proj.weight.detach().clone()
    try:
        with torch.no_grad():
            k_proj.weight.mul_(1.5)
        with torch.inference_mode():
            changed = model.decode(features, pts, labs, None, None, True)
        assert features.cache[id(model.mask_decoder)] is not entry
        fresh = ImageFeatures(embed, high)
        with torch.inference_mode():
            expect = model.decode(fresh, pts, labs, None, None, True)
        assert torch.allclose(changed.low_res, expect.low_res, atol=1e-5)
    finally:
        with torch.no_grad():
            k_proj.weight.copy_(saved)


def test_training_mode_runs_reference_and_backpropagates(decoder_model):
    name, model = decoder_model
    embed, high = _features(model)
    decoder = model.mask_decoder
    decoder.train()
    try:
        sparse = torch.randn(2, 3, 256, requires_grad=True)
        pe = model.prompt_encoder.get_dense_pe()
        masks, iou, _, _ = decoder(embed, pe, sparse, None, True, high_res_features=high)
        masks.sum().backward()
        assert sparse.grad is not None and torch.isfinite(sparse.grad).all()
    finally:
        decoder.eval()


# --------------------------------------------------------------------------- SAM ViT attention
def _naive_rel_pos_attention(attn, x):
    """The paper's formula: softmax(s q k^T + bias_h + bias_w) v with an explicit HW x HW bias."""
    from samkit.backbones.vit_sam import relative_positions

    b, h, w, c = x.shape
    n = attn.num_heads
    qkv = attn.qkv(x).reshape(b, h * w, 3, n, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    s = (q * attn.scale) @ k.transpose(-2, -1)
    rh = relative_positions(h, h, attn.rel_pos_h)
    rw = relative_positions(w, w, attn.rel_pos_w)
    r_q = q.reshape(b, n, h, w, -1)
    bh = torch.einsum("bnhwc,hkc->bnhwk", r_q, rh)
    bw = torch.einsum("bnhwc,wkc->bnhwk", r_q, rw)
    s = (s.view(b, n, h, w, h, w) + bh[..., :, None] + bw[..., None, :]).view(b, n, h * w, h * w)
    out = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, h, w, -1)
    return attn.proj(out)


@pytest.mark.parametrize("grid,chunk_above", [(12, 1024), (12, 16), (9, 16)])
def test_vit_attention_paths_match_formula(grid, chunk_above):
    from samkit.backbones.vit_sam import RelPosAttention

    torch.manual_seed(0)
    attn = RelPosAttention(48, 4, use_rel_pos=True, input_size=(grid, grid)).eval()
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.5)
        attn.rel_pos_w.normal_(0, 0.5)
    attn.chunk_above, attn.chunk_rows = chunk_above, 7  # uneven chunks exercise the tail
    x = torch.randn(2, grid, grid, 48)
    with torch.inference_mode():
        assert (attn(x) - _naive_rel_pos_attention(attn, x)).abs().max().item() < 1e-5


def test_windowed_block_projects_real_tokens_like_zero_padding():
    """The official block zero-pads the normalised input before projecting; we pad the
    projections with the bias instead. Same numbers, including the padded keys' influence."""
    from samkit.backbones.vit_sam import Block
    from samkit.layers.windows import window_partition, window_unpartition

    torch.manual_seed(0)
    block = Block(32, 4, use_rel_pos=True, window_size=5, input_size=(12, 12)).eval()
    with torch.no_grad():
        block.attn.rel_pos_h.normal_(0, 0.5)
        block.attn.rel_pos_w.normal_(0, 0.5)
        block.attn.qkv.bias.normal_(0, 1.0)
    x = torch.randn(1, 12, 12, 32)
    with torch.inference_mode():
        y = block.norm1(x)
        windows, pad_hw = window_partition(y, 5)  # zero padding, as upstream
        ref = window_unpartition(_naive_rel_pos_attention(block.attn, windows), 5, pad_hw, (12, 12))
        assert (block._windowed(y) - ref).abs().max().item() < 1e-5
