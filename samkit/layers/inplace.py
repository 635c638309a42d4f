"""In-place variants for temporaries the caller owns (inference only).

Writing into an existing temporary instead of allocating (and first-touching) a fresh output
is measurably faster on CPU for large activations. Both fall back to the out-of-place op when
autograd records or a tracer (ONNX export) is active, and give identical numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU of a temporary tensor, in place when no gradient is recorded."""
    if x.requires_grad or torch.jit.is_tracing():
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


def add_(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y + x`` written into the temporary ``y`` when no gradient is recorded (same result)."""
    if y.requires_grad or torch.jit.is_tracing():
        return y + x
    return y.add_(x)
