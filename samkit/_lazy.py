"""Lazy package attributes: a package names what it exports in a table and imports each one on
first use (so ``import samkit`` imports neither torch nor a model family)."""
from __future__ import annotations

import importlib
from typing import Callable, Dict, Tuple


def lazy_getattr(package: str, namespace: dict, table: Dict[str, Tuple[str, str]]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``table[name] = (module, attribute)`` is imported
    on first access and cached in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name: str):
        if name in table:
            module, attr = table[name]
            value = getattr(importlib.import_module(module), attr)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
