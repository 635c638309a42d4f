"""The SAM neck: the convolutional head that turns an encoder's last map into the
``out_chans``-channel image embedding (SAM ViT, MobileSAM TinyViT, EdgeSAM RepViT, EfficientSAM
ViT, EfficientTAM's ViTDet neck)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from torch import nn

from .norm import LayerNorm2d

#: child names of the official SAM-style checkpoints (``neck.0`` .. ``neck.3``)
SAM_NECK_NAMES = ("0", "1", "2", "3")


def sam_neck(in_chans: int, out_chans: int, norm: bool = True,
             names: Sequence[str] = SAM_NECK_NAMES) -> nn.Sequential:
    """1x1 conv -> LayerNorm2d -> 3x3 conv (padding 1) -> LayerNorm2d:
    ``B x in_chans x H x W -> B x out_chans x H x W``.

    The convolutions have no bias when followed by a norm. ``norm=False`` (ViTDet without
    ``neck_norm``) leaves out the two norms and gives the convolutions biases. ``names`` are the
    four children's keys in order (conv, norm, conv, norm), e.g. EfficientTAM's
    ``("conv_1x1", "norm_0", "conv_3x3", "norm_1")``."""
    if len(names) != 4:
        raise ValueError(f"names must name the 4 children (conv, norm, conv, norm), got {list(names)}")
    layers = [(names[0], nn.Conv2d(in_chans, out_chans, kernel_size=1, bias=not norm))]
    if norm:
        layers.append((names[1], LayerNorm2d(out_chans)))
    layers.append((names[2], nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=not norm)))
    if norm:
        layers.append((names[3], LayerNorm2d(out_chans)))
    return nn.Sequential(OrderedDict(layers))
