"""samkit.layers.residual_attention: the packed self-attention is nn.MultiheadAttention (same keys,
same numbers, causal mask included) and the block is OpenAI's pre-norm residual block."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from samkit.layers import PackedSelfAttention, QuickGELU, ResidualAttentionBlock


@pytest.mark.parametrize("causal", [False, True])
def test_packed_attention_is_multihead_attention(causal):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    ours = PackedSelfAttention(32, 4)
    ours.load_state_dict(mha.state_dict())  # same keys: in_proj_weight, in_proj_bias, out_proj.*
    x = torch.randn(3, 9, 32)
    mask = torch.full((9, 9), float("-inf")).triu(1) if causal else None
    with torch.no_grad():
        want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = ours(x, causal=causal)
    assert (got - want).abs().max().item() < 1e-5


def test_block_is_pre_norm_residual_with_quick_gelu():
    torch.manual_seed(1)
    block = ResidualAttentionBlock(16, 2).eval()
    assert list(block.state_dict()) == [
        "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
        "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias"]
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        y = x + block.attn(block.ln_1(x))
        h = block.mlp.c_fc(block.ln_2(y))
        want = y + block.mlp.c_proj(h * torch.sigmoid(1.702 * h))
        assert torch.allclose(block(x), want, atol=1e-6)
        assert torch.equal(QuickGELU()(h), h * torch.sigmoid(1.702 * h))
