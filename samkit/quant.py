"""Opt-in dynamic int8 for the ``nn.Linear`` layers of a model (torch, CPU).

```python
model = samkit.load_model("sam_vit_b", quantize="int8")          # or:
from samkit.quant import quantize; quantize(model)                # in place, returns the model
```

``"int8"``: every ``nn.Linear`` of the image encoder becomes a dynamically quantised linear
(``torch.ao.nn.quantized.dynamic.Linear``: int8 weights per tensor, activations quantised on the
fly per call, int32 accumulation; fbgemm / x86 kernels). Convolutions, norms and the attention
matmuls stay float32, and so does the prompt / mask decoder unless ``parts`` names it.
``parts=("image_encoder", "mask_decoder")`` also quantises the decoder's linears except the
attention projections, whose matrices the exact low-rank decoder path reads directly
(``samkit.heads.fast_two_way``); ``benchmarks/bench_int8.py`` measures whether that pays.

CPU only; applied after ``fuse`` and refused together with ``backend="onnxruntime"`` or
``compile`` (onnxruntime has its own int8: ``samkit export --quantize int8``). fp32 stays the
default. Quality under int8 cannot be judged on random weights: check masks on your images
with the real weights. ``torch.ao.quantization`` is deprecated upstream but works in the pinned
torch; its deprecation warnings are silenced here only.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from .errors import InputError

QUANTIZE = ("int8",)
PARTS = ("image_encoder", "mask_decoder")
DEFAULT_PARTS = ("image_encoder",)


def check_quantize(quantize: Optional[str], device: Optional[torch.device] = None) -> None:
    """Raise :class:`InputError` for an unknown ``quantize`` value or a non-CPU device."""
    if quantize is None:
        return
    if quantize not in QUANTIZE:
        raise InputError(f"unknown quantize value {quantize!r}. Fix: use quantize='int8' or leave it out (float32).")
    if device is not None and torch.device(device).type != "cpu":
        raise InputError(f"quantize='int8' runs on the CPU only (device {str(device)!r}). "
                         "Fix: use device='cpu' or leave quantize out.")


@contextlib.contextmanager
def _quiet():
    """``torch.ao.quantization`` warns that it is deprecated (and about quantized tensor
    creation) on every call; silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        yield


def _linears(model: nn.Module, parts: Sequence[str]) -> Dict[str, nn.Module]:
    """Qualified name -> ``nn.Linear`` to quantise in ``parts`` (attention projections of the
    decoder excluded: the exact fast path reads their weight matrices)."""
    from .layers import Attention

    out: Dict[str, nn.Module] = {}
    for part in parts:
        root = getattr(model, part, None)
        if root is None:
            continue
        skip = set()
        if part != "image_encoder":
            for mod in root.modules():
                if isinstance(mod, Attention):
                    skip.update(id(m) for m in mod.modules())
        for name, mod in root.named_modules():
            if type(mod) is nn.Linear and id(mod) not in skip:
                out[f"{part}.{name}"] = mod
    return out


def quantize(model: nn.Module, mode: str = "int8", parts: Sequence[str] = DEFAULT_PARTS) -> nn.Module:
    """Dynamic int8 for the ``nn.Linear`` layers of ``parts`` of ``model`` (in place; returns it).
    ``InputError`` for an unknown mode or part, a model on another device than the CPU, or a
    model without any linear layer there."""
    check_quantize(mode)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise InputError(f"unknown parts {bad or list(parts)!r} to quantize. Fix: use some of {', '.join(PARTS)}.")
    params = list(model.parameters())
    if params and params[0].device.type != "cpu":
        raise InputError(f"quantize='int8' runs on the CPU only (the model is on {params[0].device}). "
                         "Fix: load the model with device='cpu'.")
    targets = _linears(model, parts)
    if not targets:
        name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
        raise InputError(f"{name} has no nn.Linear layers in {', '.join(parts)}, so int8 would change nothing. "
                         "Fix: leave quantize out.")
    with _quiet():
        from torch.ao import quantization as tq

        spec = {name: tq.default_dynamic_qconfig for name in targets}
        tq.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)
    model.eval()
    model.quantized = mode
    return model


def quantized_linears(model: nn.Module) -> int:
    """How many dynamically quantised linear layers ``model`` holds."""
    from torch.ao.nn.quantized import dynamic as nnqd

    return sum(isinstance(m, nnqd.Linear) for m in model.modules())
