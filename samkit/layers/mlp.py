"""Feed-forward blocks."""
from __future__ import annotations

from typing import Type

import torch
from torch import nn

from .inplace import gelu_


class MLPBlock(nn.Module):
    """Two linear layers with an activation between (keys ``lin1``, ``lin2``). ``... x dim -> ... x dim``."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class MLP(nn.Module):
    """``num_layers`` linear layers (keys ``layers.{i}``) with ``activation`` between them and an
    optional sigmoid on the output. ``... x input_dim -> ... x output_dim``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 activation: Type[nn.Module] = nn.ReLU, sigmoid_output: bool = False) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        # exact GELU on the hidden temporaries runs in place (same numbers, one allocation fewer)
        exact_gelu = isinstance(self.act, nn.GELU) and self.act.approximate == "none"
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = gelu_(x) if exact_gelu else self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
