"""Read official checkpoint files safely, remap their keys, load them strictly.

* ``read_state_dict(path)``: ``.safetensors``; torch files (``.pt/.pth/.bin``, zip or legacy
  format) through ``torch.load(weights_only=True)`` only, so a pickle that needs arbitrary
  globals is refused; an outer ``.zip`` holding one checkpoint (EfficientSAM ViT-S ships as
  ``efficient_sam_vits.pt.zip``). ``{"model": sd}`` / ``{"state_dict": sd}`` are unwrapped.
* ``remap(sd, spec)``: the pure function from upstream keys to samkit's that the spec's model
  file registered for its ``checkpoint_format`` (``samkit.families.register_remap``); without
  one the keys are used as they are.
* ``load_into(model, sd, spec)``: strict load whose error lists missing / unexpected keys and
  shape mismatches and, via ``identify``, names the registered model the file belongs to.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

from .errors import CheckpointError
from .families import builder_for, remap_for
from .specs import MODELS, ModelSpec, get_spec

StateDict = Dict[str, torch.Tensor]
Signature = Dict[str, Tuple[int, ...]]

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
_SHOW = 10


# ----------------------------------------------------------------------------- reading
def _redownload_hint(path: Path) -> str:
    for spec in MODELS.values():
        if spec.filename and spec.filename == path.name:
            return (f"Fix: delete {path} and download it again "
                    f"(`samkit models download {spec.name}`).")
    return ("Fix: download the file again (`samkit models download NAME`) or check that it "
            "was copied completely.")


def _corrupt(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"cannot read checkpoint {path}: the file is truncated or corrupt ({detail}). "
        + _redownload_hint(path))


def _unsafe(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"refusing to load {path}: it is a pickle that needs arbitrary Python objects "
        f"({detail}); samkit only loads checkpoints with torch.load(weights_only=True) because "
        "unpickling arbitrary objects can execute code. Fix: use the official file "
        "(`samkit models download NAME`), or convert this one to .safetensors in an "
        "environment you trust (torch.load(..., weights_only=False), then "
        "safetensors.torch.save_file(state_dict, 'model.safetensors')) and pass that file.")


def _torch_load(source, path: Path, mmap: bool = False):
    """``torch.load(weights_only=True)`` with every failure turned into ``CheckpointError``.

    ``mmap`` (zip-format files on disk only) maps the tensors instead of reading them, which
    halves the peak memory of a load (the model copies them once)."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "weights_only" in text:
            line = next((ln.strip() for ln in text.splitlines() if "Unsupported global" in ln), "")
            detail = line[line.index("Unsupported global"):].split(" was not")[0] if line else "a non-tensor object"
            raise _unsafe(path, detail) from None
        raise _corrupt(path, f"{type(exc).__name__}: {text[:200]}") from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # RuntimeError (zip), EOFError, struct.error, KeyError, ...
        text = str(exc).split(". ")[0][:200]
        raise _corrupt(path, f"{type(exc).__name__}: {text}") from None


def _load_safetensors(path: Path, data: Optional[bytes] = None) -> StateDict:
    try:
        from safetensors.torch import load, load_file
    except ImportError as exc:  # pragma: no cover - safetensors is a core dependency
        raise CheckpointError(
            f"{path} is a .safetensors file but the safetensors package is missing. "
            "Fix: pip install safetensors") from exc
    try:
        return dict(load(data)) if data is not None else dict(load_file(str(path), device="cpu"))
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _is_torch_archive(names: List[str]) -> bool:
    """A torch.save zip holds ``<archive>/data.pkl``; an outer zip of checkpoints does not."""
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def _read_outer_zip(path: Path, zf: zipfile.ZipFile):
    members = [
        info for info in zf.infolist()
        if not info.is_dir() and not info.filename.startswith("__MACOSX/")
        and info.filename.lower().endswith(_TORCH_SUFFIXES + (".safetensors",))
    ]
    if len(members) != 1:
        listed = ", ".join(i.filename for i in members[:5]) or "none"
        raise CheckpointError(
            f"{path} is a zip archive with {len(members)} checkpoint members ({listed}); samkit "
            "reads a zip only when it holds exactly one .pt/.pth/.bin/.safetensors file. "
            "Fix: unzip it and pass the checkpoint file itself.")
    info = members[0]
    label = Path(f"{path}!{info.filename}")
    try:
        data = zf.read(info)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise _corrupt(path, f"member {info.filename}: {exc}") from None
    if info.filename.lower().endswith(".safetensors"):
        return _load_safetensors(label, data)
    return _torch_load(io.BytesIO(data), label)


def _unwrap(obj, path: Path) -> StateDict:
    """Descend through ``{"model": ...}``-style wrappers; keep the tensors of the inner dict."""
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of names to "
            "tensors). Fix: pass a checkpoint saved with torch.save(model.state_dict(), ...).")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(
            f"{path} contains no tensors at its top level or under 'model'/'state_dict' "
            f"(keys: {keys or 'none'}). Fix: pass a state dict checkpoint of a supported model.")
    # DataParallel / DDP training wrappers prefix every key with "module."
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: Union[str, Path]) -> StateDict:
    """Read a checkpoint file into ``{name: tensor}`` on the CPU (upstream key names).

    Raises ``CheckpointError`` for a missing, truncated, corrupt or unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist. Fix: check the path, or omit checkpoint= to "
            "use the official weights (downloaded into the cache on first use).")
    if path.stat().st_size == 0:
        raise _corrupt(path, "the file is empty")
    with open(path, "rb") as fh:
        head = fh.read(64).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<!--")):
        raise CheckpointError(
            f"{path} is a web page (HTML), not a checkpoint: a download link returned an error "
            "or login page. " + _redownload_hint(path))
    if path.name.lower().endswith(".safetensors"):
        return _unwrap(_load_safetensors(path), path)
    is_zip = zipfile.is_zipfile(path)
    if is_zip:
        try:
            with zipfile.ZipFile(path) as zf:
                if not _is_torch_archive(zf.namelist()):
                    return _unwrap(_read_outer_zip(path, zf), path)
        except zipfile.BadZipFile as exc:
            raise _corrupt(path, f"bad zip archive: {exc}") from None
    return _unwrap(_torch_load(str(path), path, mmap=is_zip), path)


# ----------------------------------------------------------------------------- remapping
def _spec(spec: Union[str, ModelSpec]) -> ModelSpec:
    if isinstance(spec, ModelSpec):
        return spec
    if spec in MODELS:
        return MODELS[spec]
    for candidate in MODELS.values():  # a checkpoint_format name
        if candidate.checkpoint_format == spec:
            return candidate
    return get_spec(spec)  # raises KeyError listing the names


def remap(state_dict: Mapping[str, torch.Tensor], spec: Union[str, ModelSpec]) -> StateDict:
    """Upstream keys -> samkit keys with the remap registered for ``spec.checkpoint_format``.

    ``spec`` is a ModelSpec, a model name or a checkpoint format name. The input is never
    modified (the remap function receives a copy); without a remap function the keys are
    returned unchanged in a new dict."""
    spec = _spec(spec)
    fn = remap_for(spec)
    if fn is None:
        return dict(state_dict)
    out = fn(dict(state_dict))
    if not isinstance(out, Mapping):
        raise TypeError(f"the remap of checkpoint format {spec.checkpoint_format!r} ({fn.__module__}."
                        f"{fn.__qualname__}) returned {type(out).__name__}, expected a dict of tensors")
    return dict(out)


# ----------------------------------------------------------------------------- identification
_SIGNATURES: Dict[object, Optional[Signature]] = {}


def model_signature(spec: Union[str, ModelSpec]) -> Optional[Signature]:
    """``{key: shape}`` of the state dict of a spec's model, built on the meta device (cached
    per builder). None when the family cannot be imported or built."""
    spec = _spec(spec)
    try:
        build = builder_for(spec)
    except Exception:  # noqa: BLE001 - a broken or missing family must not break others
        return None
    if build not in _SIGNATURES:
        try:
            with torch.device("meta"):
                model = build()
            sig = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        except Exception:  # noqa: BLE001
            sig = None
        _SIGNATURES[build] = sig
    return _SIGNATURES[build]


def _shape_signature(sd: Mapping[str, torch.Tensor]) -> Signature:
    return {k: tuple(v.shape) for k, v in sd.items()}


def identify(state_dict: Mapping[str, torch.Tensor], *, exclude: Tuple[str, ...] = ()) -> List[str]:
    """Names of registered neural models whose remapped key->shape signature equals the dict's.

    ``state_dict`` has upstream keys (as read from the file); each candidate's own remap is
    applied before comparing. Specs whose builder does not import are skipped."""
    matches = []
    for name, spec in list(MODELS.items()):
        if not spec.neural or name in exclude:
            continue
        sig = model_signature(spec)
        if sig is None:
            continue
        try:
            candidate = _shape_signature(remap(state_dict, spec))
        except Exception:  # noqa: BLE001 - another family's remap may reject foreign keys
            continue
        if candidate == sig:
            matches.append(name)
    return matches


# ----------------------------------------------------------------------------- loading
def _listing(title: str, items: List[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor],
              spec: Union[str, ModelSpec], strict: bool = True, *, remapped: bool = False,
              source: Optional[Union[str, Path]] = None) -> Dict[str, List[str]]:
    """Load a checkpoint into ``model`` (in place) and return ``{"missing", "unexpected", "mismatched"}``.

    ``state_dict`` has upstream keys unless ``remapped=True``. With ``strict`` any missing,
    unexpected or mis-shaped key raises ``CheckpointError`` listing them (first 10 of each with
    counts) and naming the registered model the file fits, if any. Without ``strict`` the
    keys that fit are loaded and the rest are reported in the returned dict."""
    spec = _spec(spec)
    sd = dict(state_dict) if remapped else remap(state_dict, spec)
    expected = _shape_signature(model.state_dict())
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [k for k in sd if k in expected and tuple(sd[k].shape) != expected[k]]
    report = {"missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    if strict and (missing or unexpected or mismatched):
        label = source if source is not None else "the checkpoint"
        text = (f"{label} does not fit model {spec.name!r}: {len(missing)} missing, "
                f"{len(unexpected)} unexpected, {len(mismatched)} mis-shaped keys.")
        if missing:
            text += _listing("missing", missing)
        if unexpected:
            text += _listing("unexpected", unexpected)
        if mismatched:
            rows = [f"{k} checkpoint {tuple(sd[k].shape)} vs model {expected[k]}" for k in mismatched]
            text += _listing("shape mismatch", rows)
        raw = state_dict if not remapped else sd
        others = identify(raw, exclude=(spec.name,)) if not remapped else []
        if others:
            arg = f", checkpoint={str(source)!r}" if source is not None else ", checkpoint=..."
            text += (f"\nThis looks like a checkpoint of {' / '.join(others)}; call "
                     f"load_model({others[0]!r}{arg}).")
        text += (f"\nFix: pass the checkpoint of {spec.name} (`samkit models download {spec.name}`), "
                 "or load the matching subset with strict=False.")
        raise CheckpointError(text)
    if not (missing or unexpected or mismatched):
        model.load_state_dict(sd, strict=True)
    else:
        fitting = {k: v for k, v in sd.items() if k in expected and k not in mismatched}
        model.load_state_dict(fitting, strict=False)
    return report
