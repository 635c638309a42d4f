"""Model factories for the labelling tests (tests/test_label*.py): importable at module level,
so that the local engine's worker processes and Ray's actors can build the same model."""
from __future__ import annotations


def tiny_sam():
    """The random-weight reduced SAM of ``_tiny_families`` (128-pixel frame), eval mode."""
    from _tiny_families import tiny_family

    return tiny_family("sam", seed=0)
