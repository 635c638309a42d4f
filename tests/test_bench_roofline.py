"""The roofline benchmark's FLOP counting (benchmarks/bench_roofline.py): FlopCounterMode plus
scaled-dot-product attention counted by hand, never twice. No timing is asserted."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_roofline as br  # noqa: E402


def _qkv(lq=64, lk=32, d=16, dv=8, heads=2):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, heads, lq, d, generator=g), torch.randn(1, heads, lk, d, generator=g),
            torch.randn(1, heads, lk, dv, generator=g))


def test_sdpa_counted_by_hand():
    q, k, v = _qkv(dv=16)  # equal head dims: the fused CPU kernel runs
    lin = torch.nn.Linear(16, 24)
    x = torch.randn(10, 16)
    counted, attn, calls = br.count_flops(lambda: (lin(x), F.scaled_dot_product_attention(q, k, v)))
    assert calls == 1
    assert round(attn * 1e9) == 2 * 2 * 64 * 32 * 16 * 2  # q k^T and attn v, per head
    assert round(counted * 1e9) == 2 * 10 * 16 * 24  # the linear only: the CPU SDPA kernel is invisible to the counter


@pytest.mark.parametrize("forced", [True, False])
def test_sdpa_math_path_not_counted_twice(forced):
    """The math path (forced, or chosen by torch for a value head dim unlike the query's)
    decomposes into bmm calls that FlopCounterMode sees: nothing is added by hand."""
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = _qkv(dv=16 if forced else 8)
    with sdpa_kernel(SDPBackend.MATH) if forced else contextlib.nullcontext():
        counted, attn, calls = br.count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert calls == 1 and counted > 0 and attn == 0
    assert round(counted * 1e9) == br.sdpa_flops(q, k, v)


def test_sdpa_flops_broadcasts_batch():
    q = torch.zeros(3, 4, 10, 8)
    k = v = torch.zeros(1, 4, 6, 8)
    assert br.sdpa_flops(q, k, v) == 4 * 3 * 4 * 10 * 6 * 8
