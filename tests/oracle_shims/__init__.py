"""TEST-ONLY helpers to import the official oracle packages through the torchvision shim.

Usage in a test::

    from oracle_shims import import_oracle
    sa = import_oracle("segment_anything")
    amg_mod = import_oracle("segment_anything.automatic_mask_generator")

The shim directory is on ``sys.path`` only for the duration of the import; the imported
modules (and the shim ``torchvision``) then stay cached in ``sys.modules``.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

SHIM_DIR = str(Path(__file__).resolve().parent)


@contextlib.contextmanager
def shim_on_path():
    """Put the stand-in first on ``sys.path`` while the official code is imported; refuse when
    a real torchvision is already imported (the oracles would bind to it)."""
    tv = sys.modules.get("torchvision")
    if tv is not None and not getattr(tv, "__version__", "").endswith("oracle_shim"):
        raise RuntimeError("a real torchvision is already imported; the oracle tests need the shim")
    sys.path.insert(0, SHIM_DIR)
    try:
        yield
    finally:
        if SHIM_DIR in sys.path:
            sys.path.remove(SHIM_DIR)


@contextlib.contextmanager
def torchvision_hidden():
    """Hide the torchvision stand-in (other oracle tests leave it in ``sys.modules``) while
    transformers decides whether torchvision exists: it must not, or transformers imports names
    the stand-in does not have."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "torchvision" or k.startswith("torchvision.")}
    try:
        yield
    finally:
        sys.modules.update(saved)


def transformers_without_torchvision():
    """``transformers`` with its torchvision check settled to False (and its image utilities
    imported under it), whatever other tests of this process imported before."""
    with torchvision_hidden():
        iu = importlib.import_module("transformers.utils.import_utils")
        iu.is_torchvision_available.cache_clear()
        assert not iu.is_torchvision_available()
        importlib.import_module("transformers.image_utils")
        return importlib.import_module("transformers")


def import_oracle(module: str):
    """Import ``module`` (e.g. ``segment_anything``, ``sam2.sam2_image_predictor``) with the
    test-only torchvision stand-in; skips the test if the oracle is not installed."""
    import pytest

    try:
        with shim_on_path():
            return importlib.import_module(module)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("segment_anything", "sam2", "hydra", "omegaconf", "iopath",
                                                        "open_clip", "ftfy", "regex"):
            pytest.skip(f"oracle {module} not importable ({exc}); install the oracle extras (see tests/oracle_shims/README.md)")
        raise
