"""Segment everything: :class:`AutoMaskGenerator`."""
from . import batch_decode
from .generator import AutoMaskGenerator, AutoMaskInfo

__all__ = ["AutoMaskGenerator", "AutoMaskInfo"]
