"""A tiny fake model family for the registry / checkpoint tests (not a real model).

Upstream ("official") files of this family name the encoder ``backbone.*``; samkit's module
calls it ``encoder``; ``remap_tiny`` translates. Two sizes (dim 4 and 8) let the tests check
that a file of one is identified when loaded into the other.
"""
from __future__ import annotations

import torch
from torch import nn

from samkit import families, specs
from samkit.families import register_remap
from samkit.specs import ModelSpec


class TinyNet(nn.Module):
    def __init__(self, dim: int = 4):
        super().__init__()
        self.encoder = nn.Linear(3, dim)
        self.head = nn.Linear(dim, 2)
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x) * self.scale)


class TinyClassic:
    """A non-neural engine: no weights."""

    def predict_image(self, *args, **kwargs):  # pragma: no cover - never called
        raise NotImplementedError


def build_tiny() -> TinyNet:
    return TinyNet(4)


def build_tiny_wide() -> TinyNet:
    return TinyNet(8)


def build_classic_tiny() -> TinyClassic:
    return TinyClassic()


@register_remap("tiny")
def remap_tiny(sd: dict) -> dict:
    """Upstream ``backbone.*`` -> samkit ``encoder.*``; a pure function (returns a new dict)."""
    return {("encoder." + k[len("backbone."):] if k.startswith("backbone.") else k): v
            for k, v in sd.items()}


def upstream_state_dict(dim: int = 4, seed: int = 0) -> dict:
    """A state dict as an "official" file of this family would hold it (upstream names)."""
    gen = torch.Generator().manual_seed(seed)
    net = TinyNet(dim)
    return {("backbone." + k[len("encoder."):] if k.startswith("encoder.") else k):
            torch.randn(v.shape, generator=gen) for k, v in net.state_dict().items()}


def spec(name: str, **kw) -> ModelSpec:
    """A spec of this family (its model file is this module)."""
    base = dict(
        name=name, family="tiny", module="_tiny_models", url=None,
        filename=f"{name}.pt", license="Apache-2.0", paper="test", checkpoint_format="tiny",
    )
    base.update(kw)
    return ModelSpec(**base)


def register(monkeypatch, name: str, build=build_tiny, **kw) -> ModelSpec:
    """Add ``name`` to the registry for one test: its spec, and ``build`` as its builder
    (``build=None``: a spec whose model file registers no builder)."""
    s = spec(name, **kw)
    monkeypatch.setitem(specs.MODELS, name, s)
    if build is not None:
        monkeypatch.setitem(families._BUILDERS, name, build)
    return s
