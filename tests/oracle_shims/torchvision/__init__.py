"""TEST-ONLY stand-in for torchvision (see tests/oracle_shims/README.md).

Only the names that the official ``segment_anything`` and ``sam2`` packages import exist.
"""
import torch

from . import ops, transforms  # noqa: F401

__version__ = "0.0.0+samkit.oracle_shim"


def _is_tracing() -> bool:
    return torch._C._get_tracing_state() is not None
