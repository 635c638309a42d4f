"""Read official checkpoint files safely, remap their keys, load them strictly.

* ``read_state_dict(path)``: ``.safetensors``; torch files (``.pt/.pth/.bin``, zip or legacy
  format) through ``torch.load(weights_only=True)`` only, so a pickle that needs arbitrary
  globals is refused; TorchScript archives (OpenAI's CLIP files) through a restricted unpickler
  that rebuilds only tensors and the module tree's parameter / buffer names (no code is run);
  an outer ``.zip`` holding one checkpoint (EfficientSAM ViT-S ships as ``efficient_sam_vits.pt.zip``), streamed to a private temporary file under a size cap
  (``max_unzipped_bytes`` or ``$SAMKIT_MAX_UNZIPPED_BYTES``, default 8 GiB) and a compression-ratio
  cap. ``{"model": sd}`` / ``{"state_dict": sd}`` are unwrapped.
* ``remap(sd, spec)``: the pure function from upstream keys to samkit's that the spec's model
  file registered for its ``checkpoint_format`` (``samkit.families.register_remap``); without
  one the keys are used as they are.
* ``load_into(model, sd, spec)``: strict load whose error lists missing / unexpected keys and
  shape mismatches and, via ``identify``, names the registered model the file belongs to.
"""
from __future__ import annotations

import collections
import hashlib
import os
import pickle
import re
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch

from .errors import CheckpointError, InputError
from .families import builder_for, remap_for
from .specs import MODELS, ModelSpec, get_spec

StateDict = Dict[str, torch.Tensor]
Signature = Dict[str, Tuple[int, ...]]

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module")
_SHOW = 10

MAX_UNZIPPED_ENV = "SAMKIT_MAX_UNZIPPED_BYTES"
DEFAULT_MAX_UNZIPPED_BYTES = 8 * 1024 ** 3
"""Cap on the uncompressed size of the checkpoint inside an outer ``.zip`` (SAM ViT-H is 2.6 GB)."""
MAX_ZIP_RATIO = 100
"""Real checkpoints barely compress (float weights: about 1.1x); a member that expands more than
this and is larger than ``_RATIO_FLOOR`` is refused as a zip bomb."""
_RATIO_FLOOR = 16 * 1024 ** 2
_CHUNK = 1 << 20
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
# weights_only refuses a pickle that asks for a global it does not allow; only that is "unsafe"
_UNSAFE_GLOBAL = re.compile(
    r"(?:Unsupported global: GLOBAL ([A-Za-z_][\w.]*) was not an allowed global"
    r"|unsupported GLOBAL ([A-Za-z_][\w.]*) whose module [\w.]+ is blocked)")


# ----------------------------------------------------------------------------- reading
def _redownload_hint(path: Path) -> str:
    path = Path(str(path).split("!", 1)[0])  # "archive.zip!member.pt" names the archive
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


def _pickle_problem(path: Path, exc: BaseException) -> CheckpointError:
    """``unsafe`` only for weights_only refusing a named Python global; anything else is corrupt.

    torch wraps every pickle failure of ``weights_only=True`` in "Weights only load failed", also
    for random bytes ("Unsupported operand 0"), so the wrapper alone says nothing."""
    text = str(exc)
    match = _UNSAFE_GLOBAL.search(text)
    if match:
        name = match.group(1) or match.group(2)
        if all(part.isidentifier() for part in name.split(".")):
            return _unsafe(path, f"Unsupported global {name}")
    detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()
    detail = next((ln.strip() for ln in detail if ln.strip()), type(exc).__name__)
    return _corrupt(path, f"{type(exc).__name__}: {detail[:200]}")


def _torch_load(source, path: Path, mmap: bool = False):
    """``torch.load(weights_only=True)`` with every failure turned into ``CheckpointError``.

    ``mmap`` (zip-format files on disk only) maps the tensors instead of reading them, which
    halves the peak memory of a load (the model copies them once)."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise _pickle_problem(path, exc) from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # RuntimeError (zip), EOFError, struct.error, KeyError, ...
        text = str(exc).split(". ")[0][:200]
        raise _corrupt(path, f"{type(exc).__name__}: {text}") from None


def _load_safetensors(label: Path, file: Optional[Path] = None) -> StateDict:
    """Read a .safetensors file (``file``, else ``label``); errors name ``label``."""
    path = label
    try:
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - safetensors is a core dependency
        raise CheckpointError(
            f"{path} is a .safetensors file but the safetensors package is missing. "
            "Fix: pip install safetensors") from exc
    try:
        return dict(load_file(str(file if file is not None else path), device="cpu"))
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _is_torch_archive(names: List[str]) -> bool:
    """A torch.save zip holds ``<archive>/data.pkl``; an outer zip of checkpoints does not."""
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def unzip_limit(value: Optional[int] = None) -> int:
    """The cap on a zipped checkpoint's uncompressed size: ``value``, else
    ``$SAMKIT_MAX_UNZIPPED_BYTES`` (bytes, or with a K/M/G/T suffix: ``12G``), else 8 GiB."""
    if value is not None:
        if int(value) <= 0:
            raise InputError(f"max_unzipped_bytes={value} must be positive. Fix: pass a size in bytes.")
        return int(value)
    text = os.environ.get(MAX_UNZIPPED_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_UNZIPPED_BYTES
    match = re.fullmatch(r"(\d+)\s*([kmgt]?)(?:i?b)?", text.lower())
    if match is None or int(match.group(1)) == 0:
        raise InputError(f"{MAX_UNZIPPED_ENV}={text!r} is not a size. Fix: set it to a number of "
                         "bytes or a size like 512M or 12G, or unset it (default 8G).")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _too_big(path: Path, member: str, size: int, limit: int, how: str) -> CheckpointError:
    return CheckpointError(
        f"refusing to unzip {path}: its member {member} {how} {size} bytes, more than the limit of "
        f"{limit} bytes (the largest official checkpoint, SAM ViT-H, is 2.6 GB). Fix: if you trust "
        f"the file, raise the limit with {MAX_UNZIPPED_ENV}=16G (or read_state_dict(..., "
        "max_unzipped_bytes=...)), or unzip it yourself and pass the checkpoint file.")


def _check_member(path: Path, info: zipfile.ZipInfo, limit: int) -> None:
    """Refuse by the sizes the archive declares, before anything is decompressed."""
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{path} holds an encrypted member {info.filename}. "
                              "Fix: unzip it yourself and pass the checkpoint file.")
    if info.file_size > limit:
        raise _too_big(path, info.filename, info.file_size, limit, "declares")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > _RATIO_FLOOR and ratio > MAX_ZIP_RATIO:
        raise CheckpointError(
            f"refusing to unzip {path}: its member {info.filename} expands {ratio:.0f} times "
            f"({info.compress_size} -> {info.file_size} bytes); real checkpoints barely compress, so "
            "this is a zip bomb or a corrupt archive. " + _redownload_hint(path))


def _extract(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> None:
    """Stream one member to ``target`` in 1 MiB chunks, counting the bytes that really arrive."""
    done = 0
    try:
        with zf.open(info) as src, open(target, "wb") as dst:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                if done > limit:
                    raise _too_big(path, info.filename, done, limit, "expands to more than")
                if done > info.file_size:
                    raise _corrupt(path, f"member {info.filename} is longer than it declares")
                dst.write(chunk)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise _corrupt(path, f"member {info.filename}: {exc}") from None
    except OSError as exc:
        raise CheckpointError(
            f"cannot unzip {info.filename} of {path} into the temporary folder {target.parent}: {exc}. "
            "Fix: free disk space there or point TMPDIR at a folder with room for the checkpoint.") from None
    if done != info.file_size:
        raise _corrupt(path, f"member {info.filename} ended after {done} of {info.file_size} bytes")


def _read_outer_zip(path: Path, zf: zipfile.ZipFile, limit: int):
    """Load the one checkpoint inside an outer zip without holding it in memory twice.

    The member is streamed to a private temporary folder (never next to the user's files) and
    loaded from there (memory-mapped where the platform allows), then the folder is removed."""
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
    _check_member(path, info, limit)
    label = Path(f"{path}!{info.filename}")
    safetensors = info.filename.lower().endswith(".safetensors")
    folder = Path(tempfile.mkdtemp(prefix="samkit-unzip-"))
    try:
        target = folder / ("member.safetensors" if safetensors else "member.pt")
        _extract(path, zf, info, target, limit)
        if safetensors:
            return _load_safetensors(label, target)
        # a mapped file can be deleted while mapped on POSIX, not on Windows
        mmap = os.name != "nt" and zipfile.is_zipfile(target)
        return _torch_load(str(target), label, mmap=mmap)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- TorchScript archives
# OpenAI's CLIP files (ViT-B-16.pt, RN50x16.pt) are TorchScript archives: a zip whose data.pkl
# pickles the module tree as ``__torch__.*`` objects holding tensors, with the classes' source in
# code/ and storages in data/. Nothing there is executed: a restricted unpickler rebuilds only the
# tensors (and plain containers), every ``__torch__`` object becomes an inert record, and the
# ``__parameters__`` / ``__buffers__`` lists of each class (read as text from code/) select the
# entries of the state dict, exactly those ``torch.jit.load(f).state_dict()`` gives.
_TS_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
              "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
              "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
              "BoolStorage": torch.bool}
_TS_LISTS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist")
_TS_CLASS = re.compile(r"^class (\w+)\((\w*)\):", re.MULTILINE)
_TS_SLOTS = re.compile(r"^  (__parameters__|__buffers__) = \[([^\]]*)\]", re.MULTILINE)


class _ScriptObject:
    """An object of the archive's ``__torch__`` namespace: its class name and pickled state only."""

    qualname = ""

    def __setstate__(self, state) -> None:
        self.state = state


def _is_torchscript(names: List[str]) -> bool:
    """A TorchScript archive: a torch zip that also holds ``constants.pkl`` or ``code/``."""
    return _is_torch_archive(names) and any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, hooks=None,
                    metadata=None) -> torch.Tensor:
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


class _ScriptUnpickler(pickle.Unpickler):
    """Allows tensors, storages, plain containers and inert ``__torch__`` records; refuses any other
    global like ``torch.load(weights_only=True)`` does."""

    def __init__(self, fh, zf: zipfile.ZipFile, prefix: str, path: Path, limit: int) -> None:
        super().__init__(fh)
        self.zf, self.prefix, self.path, self.limit = zf, prefix, path, limit
        self.classes: Dict[str, type] = {}

    def find_class(self, module: str, name: str):
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self.classes:
                self.classes[qualname] = type(name, (_ScriptObject,), {"qualname": qualname})
            return self.classes[qualname]
        if module == "torch" and name in _TS_DTYPES:
            return _TS_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in _TS_LISTS:
            return list
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return lambda value, _type: value
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name} was not an allowed global")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        _, dtype, key, _location, numel = pid
        info = self.zf.getinfo(f"{self.prefix}data/{key}")
        _check_member(self.path, info, self.limit)
        data = bytearray(self.zf.read(info))
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(data) != int(numel) * itemsize:
            raise _corrupt(self.path, f"storage {key} holds {len(data)} bytes, not {numel} x {itemsize}")
        return torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)


def _script_slots(zf: zipfile.ZipFile, prefix: str) -> Dict[str, Tuple[List[str], List[str]]]:
    """``{qualified module class name: (parameter names, buffer names)}`` from the archive's code/."""
    slots: Dict[str, Tuple[List[str], List[str]]] = {}
    for name in zf.namelist():
        if not (name.startswith(prefix + "code/") and name.endswith(".py")):
            continue
        module = name[len(prefix + "code/"):-3].replace("/", ".")
        text = zf.read(name).decode("utf-8", errors="replace")
        starts = list(_TS_CLASS.finditer(text))
        for i, match in enumerate(starts):
            if match.group(2) != "Module":
                continue
            body = text[match.end():starts[i + 1].start() if i + 1 < len(starts) else len(text)]
            found = {k: re.findall(r'"([^"]*)"', v) for k, v in _TS_SLOTS.findall(body)}
            slots[f"{module}.{match.group(1)}"] = (found.get("__parameters__", []), found.get("__buffers__", []))
    return slots


def _script_state(obj: _ScriptObject, slots, prefix: str, out: StateDict) -> None:
    """Parameters, then buffers, then submodules (recursively), as ``ScriptModule.state_dict``."""
    params, buffers = slots[obj.qualname]
    attrs = getattr(obj, "state", None)
    attrs = attrs if isinstance(attrs, Mapping) else {}
    for key in (*params, *buffers):
        if isinstance(attrs.get(key), torch.Tensor):
            out[prefix + key] = attrs[key]
    for key, value in attrs.items():
        if isinstance(value, _ScriptObject) and value.qualname in slots:
            _script_state(value, slots, f"{prefix}{key}.", out)


def _read_torchscript(path: Path, zf: zipfile.ZipFile, limit: int) -> StateDict:
    """The state dict of a TorchScript archive, read without executing or importing its code."""
    names = zf.namelist()
    pkl = next(n for n in names if n.endswith("data.pkl") and n.count("/") <= 1)
    prefix = pkl[:-len("data.pkl")]
    order = f"{prefix}byteorder"
    if order in names and zf.read(order).strip() not in (b"", b"little"):
        raise CheckpointError(f"{path} was saved on a big-endian machine; samkit reads little-endian archives. "
                              "Fix: re-save it on a little-endian machine (x86, ARM).")
    try:
        with zf.open(pkl) as fh:
            root = _ScriptUnpickler(fh, zf, prefix, path, limit).load()
        slots = _script_slots(zf, prefix)
    except pickle.UnpicklingError as exc:
        raise _pickle_problem(path, exc) from None
    except CheckpointError:
        raise
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # KeyError (missing member), EOFError, zlib / zip errors, ...
        raise _corrupt(path, f"TorchScript archive: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(root, _ScriptObject) or root.qualname not in slots:
        raise _corrupt(path, "TorchScript archive without a module at its root")
    out: StateDict = {}
    _script_state(root, slots, "", out)
    return out


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


def read_state_dict(path: Union[str, Path], *, max_unzipped_bytes: Optional[int] = None) -> StateDict:
    """Read a checkpoint file into ``{name: tensor}`` on the CPU (upstream key names).

    ``max_unzipped_bytes`` caps the uncompressed size of a checkpoint inside an outer ``.zip``
    (default ``$SAMKIT_MAX_UNZIPPED_BYTES``, else 8 GiB). Raises ``CheckpointError`` for a
    missing, truncated, corrupt, oversized or unsafe file."""
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
                if _is_torchscript(zf.namelist()):
                    return _unwrap(_read_torchscript(path, zf, unzip_limit(max_unzipped_bytes)), path)
                if not _is_torch_archive(zf.namelist()):
                    limit = unzip_limit(max_unzipped_bytes)
                    return _unwrap(_read_outer_zip(path, zf, limit), path)
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
        except Exception:  # noqa: BLE001 - not cached: a failure here must not hide the family later
            return None
        _SIGNATURES[build] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
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


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of ``module.state_dict()`` (the identity
    of a model's weights: ONNX export manifests, the onnxruntime backend's cache, the training
    teacher cache)."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()
