"""LoRA adapters (Hu et al., 2021) on an encoder's linear layers, merged back for a plain checkpoint.

A weight ``W`` (``out x in``, or ``out x in x 1 x 1`` for a 1x1 convolution, the linear layer of
convolutional encoders such as RepViT) is trained as ``W + (alpha / r) * B @ A`` with ``A`` (``r x in``,
Kaiming-uniform) and ``B`` (``out x r``, zeros, so training starts from the pretrained model) while
``W`` stays frozen. The adapter is a ``torch.nn.utils.parametrize`` parametrization of ``weight``:
every read of ``module.weight``, whatever code path reads it, sees the adapted weight.

:func:`merged_state_dict` gives the plain keys (``...weight`` = the adapted weight) without touching
the model; :func:`merge_lora` bakes the adapters in and removes them.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import InputError

_ORIGINAL = ".parametrizations.weight.original"
_PARAM = ".parametrizations.weight."


class LoRA(nn.Module):
    """``W -> W + scale * (B @ A).view_as(W)`` for ``W`` of shape ``out x in [x 1 x 1]``."""

    def __init__(self, weight_shape: Sequence[int], rank: int, alpha: float) -> None:
        super().__init__()
        out_features = int(weight_shape[0])
        in_features = int(math.prod(weight_shape[1:]))
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = float(alpha) / float(rank)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        delta = (self.lora_B @ self.lora_A).view(weight.shape).to(weight.dtype)
        return weight + self.scale * delta


def _targets(module: nn.Module) -> List[str]:
    """Names of the ``nn.Linear`` and 1x1 ``nn.Conv2d`` (groups 1) submodules, in order."""
    names = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            names.append(name)
        elif isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
            names.append(name)
    return names


def add_lora(module: nn.Module, rank: int = 8, alpha: float = 16.0) -> List[str]:
    """Freeze every parameter of ``module`` and add a trainable LoRA adapter to each of its linear
    layers (``nn.Linear`` and 1x1 ``nn.Conv2d``). Returns the adapted layer names."""
    if rank < 1:
        raise InputError(f"LoRA rank must be at least 1, got {rank}. Fix: pass --lora-rank 4 (or 8, 16).")
    names = _targets(module)
    if not names:
        raise InputError(f"{type(module).__name__} has no linear layers to adapt with LoRA. "
                         "Fix: train the whole encoder (--encoder full) or only the decoder (--encoder none).")
    for p in module.parameters():
        p.requires_grad_(False)
    for name in names:
        layer = module.get_submodule(name)
        parametrize.register_parametrization(layer, "weight", LoRA(layer.weight.shape, rank, alpha))
        layer.parametrizations.weight.original.requires_grad_(False)
    return names


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoRA) for m in module.modules())


def merged_state_dict(module: nn.Module) -> Dict[str, torch.Tensor]:
    """``module.state_dict()`` with every LoRA-adapted weight under its plain key (``...weight``,
    the adapted value) and the adapter tensors left out. The module is not changed."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if key.endswith(_ORIGINAL):
            owner = key[: -len(_ORIGINAL)]
            with torch.no_grad():
                out[owner + ".weight"] = module.get_submodule(owner).weight.detach().clone()
        elif _PARAM in key:
            continue  # lora_A / lora_B
        else:
            out[key] = value
    return out


def merge_lora(module: nn.Module) -> int:
    """Bake every LoRA adapter of ``module`` into its weight (in place) and remove the adapters;
    returns how many were merged. The merged weights keep ``requires_grad`` False."""
    owners = [m for m in module.modules() if parametrize.is_parametrized(m, "weight")
              and any(isinstance(p, LoRA) for p in m.parametrizations.weight)]
    for m in owners:
        with torch.no_grad():
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return len(owners)
