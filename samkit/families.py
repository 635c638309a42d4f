"""Family wiring: the function that builds each registered model, and the pure function that
turns each upstream checkpoint layout into samkit's keys.

A family is one model file. It registers its builders and its key remaps next to their
definitions, and its entries in :mod:`samkit.specs` name that file::

    # samkit/models/sam.py
    @register_builder("sam_vit_b")
    def build_sam_vit_b() -> SamModel: ...

    @register_remap("sam")               # a spec's ``checkpoint_format``
    def remap_sam(state_dict): ...

    # samkit/specs.py
    _add(ModelSpec(name="sam_vit_b", module="samkit.models.sam", checkpoint_format="sam", ...))

The model file is imported on first use (``import samkit`` imports no family); this module is
the one place that turns a spec into code (:func:`builder_for`, :func:`remap_for`). Adding a
family is one backbone file, one model file with its decorators, and its spec entries.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable, Dict, Optional, TypeVar

from .errors import MissingExtraError
from .specs import ModelSpec

F = TypeVar("F", bound=Callable)

_BUILDERS: Dict[str, Callable] = {}
_REMAPS: Dict[str, Callable] = {}


def _register(table: Dict[str, Callable], what: str, keys, fn: Callable) -> Callable:
    for key in keys:
        old = table.get(key)
        same = old is not None and (old.__module__, old.__qualname__) == (fn.__module__, fn.__qualname__)
        if old is not None and not same:
            raise ValueError(f"{what} {key!r} is registered twice: {old.__module__}.{old.__qualname__} and "
                             f"{fn.__module__}.{fn.__qualname__}")
        table[key] = fn  # a re-import of the same module replaces its own entry
    return fn


def register_builder(*names: str) -> Callable[[F], F]:
    """Decorator: ``fn()`` builds the (un-initialised) model of each spec name in ``names``."""
    if not names:
        raise ValueError("register_builder needs at least one model name")
    return lambda fn: _register(_BUILDERS, "builder for model", names, fn)


def register_remap(*formats: str) -> Callable[[F], F]:
    """Decorator: ``fn(state_dict) -> state_dict`` maps the upstream keys of checkpoint format(s)
    ``formats`` (``ModelSpec.checkpoint_format``) to samkit's. It must not modify its input."""
    if not formats:
        raise ValueError("register_remap needs at least one checkpoint format")
    return lambda fn: _register(_REMAPS, "remap for checkpoint format", formats, fn)


def import_family(spec: ModelSpec) -> ModuleType:
    """Import the model file of ``spec`` (``spec.module``), which registers its builders."""
    try:
        return importlib.import_module(spec.module)
    except MissingExtraError:
        raise  # an optional dependency: its message names the extra to install
    except ImportError as exc:
        missing = getattr(exc, "name", None) or ""
        ours = missing.startswith("samkit") or missing == spec.module or spec.module.startswith(missing + ".")
        if missing and not ours:
            raise  # a third-party dependency of the family is missing: its message says which
        raise ImportError(
            f"model {spec.name!r} needs {spec.module}, which cannot be imported ({exc}). "
            "Fix: update samkit; this family may not be available in this version.") from exc


def builder_for(spec: ModelSpec) -> Callable:
    """The registered builder of ``spec`` (its model file is imported first)."""
    module = import_family(spec)
    fn = _BUILDERS.get(spec.name)
    if fn is None:
        raise ImportError(
            f"{module.__name__} registers no builder for model {spec.name!r}. "
            "Fix: update samkit; the registry and the model code are out of step "
            f"(the model file needs @register_builder({spec.name!r}) on its builder).")
    return fn


def remap_for(spec: ModelSpec) -> Optional[Callable]:
    """The registered key remap of ``spec.checkpoint_format``, or None (keys are used as stored)."""
    import_family(spec)
    return _REMAPS.get(spec.checkpoint_format)
