"""Structural re-parameterisation helpers shared by the CNN encoders' ``fuse()``."""
from __future__ import annotations

from typing import Tuple, Type, Union

from torch import nn


def fuse_children(parent: nn.Module, types: Union[Type[nn.Module], Tuple[Type[nn.Module], ...]]) -> None:
    """Replace, in place, every descendant of ``parent`` that is an instance of ``types`` by the
    module its ``fuse()`` returns (e.g. conv + BatchNorm -> one conv)."""
    for name, child in parent.named_children():
        if isinstance(child, types):
            setattr(parent, name, child.fuse())
        else:
            fuse_children(child, types)
