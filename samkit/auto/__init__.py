"""Segment everything: :class:`AutoMaskGenerator`."""
from .generator import AutoMaskGenerator, AutoMaskInfo

__all__ = ["AutoMaskGenerator", "AutoMaskInfo"]
