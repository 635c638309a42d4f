"""Non-neural engines. ``classic``: offline GrabCut fallback (no learned weights).

Importing this package is cheap: OpenCV is imported on first use.
"""
from .classic import ClassicEngine, build_classic

__all__ = ["ClassicEngine", "build_classic"]
