"""fuse() of the conv encoders (MobileSAM's TinyViT, EdgeSAM's RepViT, EdgeTAM's RepViT trunk):
BatchNorm folded into the convolutions (and RepVGG branches merged) changes outputs only by float
rounding; the unfused model keeps the official checkpoint's keys; fusing needs eval mode and is
idempotent. Weights are the synthesized official-layout ones when the parity data is present,
otherwise random weights with randomised BatchNorm statistics."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from parity import parity_dir, synth_state_dict


def _has_parity() -> bool:
    return (parity_dir() / "synth_weights.py").exists()


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that folding is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)


def _model(name: str):
    """(model in eval mode with official weights loaded strictly, or randomised BN)."""
    from samkit.checkpoint import remap
    from samkit.registry import build_model

    model = build_model(name).eval()
    if _has_parity():
        # the unfused model loads the official keys strictly
        model.load_state_dict(remap(synth_state_dict(name), name), strict=True)
    else:
        _randomise_bn(model)
    return model


def _encode(model, x):
    out = model.image_encoder(x)
    if isinstance(out, dict):  # SAM 2 family: every FPN level
        return out["backbone_fpn"]
    return [out]


CASES = [
    # name, input size, fuse target (model or its image encoder), number of convs merged away
    ("mobile_sam", 448, "model"),
    ("edge_sam", 256, "model"),
    ("edgetam", 256, "image_encoder"),
]


@pytest.mark.parametrize("name,size,target", CASES)
def test_fuse_matches_unfused(name, size, target):
    model = _model(name)
    keys_before = set(model.state_dict())
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = _encode(model, x)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.image_encoder.modules())
    assert n_bn > 20
    obj = model if target == "model" else model.image_encoder
    assert obj.fuse() is obj
    assert obj.fuse() is obj  # idempotent
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.image_encoder.modules())
    assert set(model.state_dict()) != keys_before  # the fused model no longer has the .bn keys
    with torch.inference_mode():
        out = _encode(model, x)
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        assert a.shape == b.shape
        scale = max(1.0, b.abs().max().item())
        diff = (a - b).abs().max().item()
        assert diff <= 2e-5 * scale, (name, diff, scale)


@pytest.mark.parametrize("name,target", [("mobile_sam", "model"), ("edge_sam", "model"),
                                         ("edgetam", "image_encoder")])
def test_fuse_requires_eval(name, target):
    from samkit.registry import build_model

    model = build_model(name).train()
    obj = model if target == "model" else model.image_encoder
    with pytest.raises(RuntimeError, match="eval"):
        obj.fuse()


def test_fused_repvgg_single_depthwise_conv():
    """RepViT's RepVGGDW (3x3 dw + 1x1 dw + identity, each with BN) becomes one 3x3 dw conv."""
    from samkit.backbones.rep_vit import RepVGGDW

    m = RepVGGDW(16).eval()
    _randomise_bn(m, seed=3)
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        ref = m(x)
        conv = m.fuse()
        assert isinstance(conv, nn.Conv2d) and conv.groups == 16 and conv.kernel_size == (3, 3)
        torch.testing.assert_close(conv(x), ref, rtol=0, atol=1e-5)


def test_tiny_vit_attention_bias_cache_follows_weights():
    """The cached TinyViT attention bias is rebuilt when new weights are loaded in place."""
    from samkit.backbones.tiny_vit import WindowAttention

    attn = WindowAttention(32, 2, 7).eval()
    x = torch.randn(3, 49, 32)
    with torch.no_grad():
        before = attn(x)
        attn.attention_biases.copy_(torch.randn_like(attn.attention_biases))
        after = attn(x)
        expect = attn.attention_biases[:, attn.bias_idxs][None]
        assert torch.equal(attn.bias(torch.float32), expect)
    assert not torch.allclose(before, after)
    # with gradients enabled the bias stays differentiable
    attn.train()
    attn(x).sum().backward()
    assert attn.attention_biases.grad is not None and attn.attention_biases.grad.abs().sum() > 0
