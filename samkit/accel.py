"""Optional image-encoder accelerators: ONNX Runtime, ``torch.compile`` and channels-last.

```python
model = samkit.load_model("sam_vit_b", backend="onnxruntime")      # or:
model = samkit.accel.accelerate(model, compile=True, channels_last=True)
```

Only the image encoder changes: every family calls ``model.image_encoder(x)`` in exactly one
place (``encode``; the SAM 2 family in ``forward_image``, which the video tracker uses too),
so the encoder module's ``forward`` is replaced on the instance. Module names, ``state_dict``
keys and attributes (``image_encoder.trunk`` ...) stay as they were, and the output keeps its
structure (a tensor, or the SAM 2-family dict of lists). ``accelerate(model)`` with no option
restores the plain encoder.

* ``backend="onnxruntime"``: the encoder is exported once per (model name, weights, input size,
  torch version) with the TorchScript-based ``torch.onnx.export`` (opset 17) through samkit's one
  exporter (:mod:`samkit.export.onnx_io`, shared with the export folders of ``samkit export``),
  checked against torch on a random input, and cached under ``<cache_dir>/onnx``; later calls load the file.
  It runs on the CPU (``CPUExecutionProvider``, ``torch.get_num_threads()`` threads, all graph
  optimisations); outputs are moved back to the input's device. A batch of B images runs as B
  calls; a new input size is exported on first use. The session holds its own copy of the
  weights. Needs ``pip install "samkit[onnx]"``. Accelerate *after* changing weights (e.g.
  ``EdgeSamModel.fuse()``): the session does not see later changes.
* ``compile=True``: ``torch.compile`` (inductor) of the encoder's forward. The first call (and
  the first call at each new input size) compiles, which takes from seconds to minutes; later
  calls are fast. Needs a C++ compiler on CPU. A compilation failure raises
  :class:`AccelerationError` (no silent fallback).
* ``channels_last=True``: the encoder's 4-D weights and its input use ``torch.channels_last``
  (faster convolutions on CPU for the conv-heavy encoders: TinyViT, RepViT, the FPN necks);
  outputs are made contiguous again.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .checkpoint import weights_digest
from .errors import AccelerationError, InputError, require

BACKENDS = ("torch", "onnxruntime")
OPSET = 17
#: ONNX files above this size keep their weights in a ``.data`` file beside them (protobuf limit).
EXTERNAL_DATA_ABOVE = 1_800_000_000
#: export-time check on a random input: ``||onnx - torch|| / ||torch||`` (L2, per output) must stay
#: below (a wrong graph gives ~1; noise inputs through deep LayerNorm stacks give up to ~2e-3).
VERIFY_RTOL = 1e-2


@dataclass
class AccelInfo:
    """What :func:`accelerate` did to an encoder (``accel_info(model)``)."""

    backend: str = "torch"
    compile: bool = False
    channels_last: bool = False
    onnx_paths: Dict[Tuple[int, ...], Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------- public API
def check_options(backend: str, compile: bool, channels_last: bool) -> None:
    """Raise :class:`InputError` for an unknown ``backend`` or options it does not take."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}. Fix: use one of {', '.join(BACKENDS)}.")
    if backend == "onnxruntime" and (compile or channels_last):
        raise InputError("compile=True and channels_last=True apply to backend='torch' only; onnxruntime "
                         "optimises its own graph. Fix: drop them or use backend='torch'.")


def accelerate(model: nn.Module, *, backend: str = "torch", compile: bool = False, channels_last: bool = False,
               cache_dir: Optional[Union[str, Path]] = None) -> nn.Module:
    """Speed up ``model.image_encoder`` in place and return ``model``.

    ``backend``: ``"torch"`` (default) or ``"onnxruntime"`` (CPU; exports and caches an ONNX
    file, see the module docstring). ``compile``: ``torch.compile`` the encoder (torch backend
    only; the first call compiles). ``channels_last``: channels-last weights and input (torch
    backend only). ``cache_dir``: where ONNX files go (default ``samkit.hub.cache_dir() / "onnx"``).
    Calling it again replaces the previous acceleration; with no option it restores the plain
    encoder."""
    encoder = _encoder(model)
    check_options(backend, compile, channels_last)
    _reset(encoder)
    info = AccelInfo(backend, bool(compile), bool(channels_last))
    if backend == "onnxruntime":
        runner = _OrtRunner(model, encoder, cache_dir)
        info.onnx_paths = runner.paths
        runner.prepare((1, 3, int(getattr(model, "image_size", 1024)), int(getattr(model, "image_size", 1024))))
        encoder.forward = types.MethodType(_runner_forward, encoder)
        encoder._samkit_runner = runner
    elif compile or channels_last:
        if channels_last:
            encoder.to(memory_format=torch.channels_last)
        fn = type(encoder).forward.__get__(encoder)
        if compile:
            _check_compiler()
            fn = torch.compile(fn)
        encoder._samkit_runner = _TorchRunner(fn, _name(model), channels_last, compile)
        encoder.forward = types.MethodType(_runner_forward, encoder)
    encoder._samkit_accel = info
    return model


def accel_info(model: nn.Module) -> AccelInfo:
    """The acceleration of ``model.image_encoder`` (backend ``"torch"``, no option, when none)."""
    return getattr(_encoder(model), "_samkit_accel", None) or AccelInfo()


# ----------------------------------------------------------------------------- helpers
def _encoder(model: nn.Module) -> nn.Module:
    encoder = getattr(model, "image_encoder", None)
    if not isinstance(encoder, nn.Module):
        raise InputError(f"{type(model).__name__} has no image_encoder module to accelerate. "
                         "Fix: pass a neural model from samkit.load_model (not 'classic').")
    return encoder


def _name(model: nn.Module) -> str:
    spec = getattr(model, "spec", None)
    return getattr(spec, "name", None) or type(model).__name__


def _reset(encoder: nn.Module) -> None:
    info = getattr(encoder, "_samkit_accel", None)
    encoder.__dict__.pop("forward", None)
    encoder.__dict__.pop("_samkit_runner", None)
    encoder.__dict__.pop("_samkit_accel", None)
    if info is not None and info.channels_last:
        encoder.to(memory_format=torch.contiguous_format)


def _contiguous(out):
    return pytree.tree_map(lambda t: t.contiguous() if isinstance(t, torch.Tensor) else t, out)


# ----------------------------------------------------------------------------- torch backend
class _TorchRunner:
    def __init__(self, fn, name: str, channels_last: bool, compiled: bool) -> None:
        self.fn, self.name, self.channels_last, self.compiled = fn, name, channels_last, compiled

    def __deepcopy__(self, memo):  # the copy's forward is rebuilt by accelerate(); share meanwhile
        return self

    def __call__(self, x: torch.Tensor, *args, **kwargs):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.compiled:
            return _contiguous(self.fn(x, *args, **kwargs))
        try:
            out = self.fn(x, *args, **kwargs)
        except Exception as exc:
            if not _is_compile_error(exc):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise AccelerationError(
                f"torch.compile could not compile the image encoder of {self.name} "
                f"({type(exc).__name__}: {first}). Fix: load the model without compile=True (or call "
                "samkit.accel.accelerate(model) to restore the plain encoder); on CPU inductor needs a "
                "working C++ compiler (g++/clang++ on PATH, or CXX set) and Python headers.") from exc
        return _contiguous(out) if self.channels_last else out


def _runner_forward(self: nn.Module, x: torch.Tensor, *args, **kwargs):
    """The accelerated encoder's ``forward``: its runner (torch or onnxruntime) does the work."""
    return self._samkit_runner(x, *args, **kwargs)


def _is_compile_error(exc: BaseException) -> bool:
    kinds = []
    try:
        from torch._dynamo import exc as dynamo_exc

        kinds.append(dynamo_exc.TorchDynamoException)
    except ImportError:  # pragma: no cover - torch without dynamo
        pass
    try:
        from torch._inductor import exc as inductor_exc

        kinds.extend(getattr(inductor_exc, n) for n in ("InductorError", "CppCompileError") if hasattr(inductor_exc, n))
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, tuple(kinds)) if kinds else False


def _check_compiler() -> None:
    """Inductor on CPU compiles C++: fail now, not on the first image, when no compiler exists."""
    if not hasattr(torch, "compile"):
        raise AccelerationError(f"torch {torch.__version__} has no torch.compile. Fix: use torch >= 2.1 "
                                "or load the model without compile=True.")
    names = [os.environ.get("CXX")] if os.environ.get("CXX") else []
    names += ["g++", "c++", "clang++"]
    if not any(shutil.which(n) for n in names if n):
        raise AccelerationError("compile=True needs a C++ compiler for torch.compile's CPU backend, and none "
                                "was found (g++, c++, clang++ or $CXX). Fix: install one (e.g. "
                                "`apt install g++`) or load the model without compile=True.")


# ----------------------------------------------------------------------------- onnxruntime backend
class _Flat(nn.Module):
    """The encoder with its output flattened to a tuple of tensors (what ONNX can return); the
    structure is kept in ``self.spec``."""

    def __init__(self, encoder: nn.Module, forward) -> None:
        super().__init__()
        self.encoder = encoder
        self._forward = forward
        self.spec = None

    def forward(self, x: torch.Tensor):
        leaves, self.spec = pytree.tree_flatten(self._forward(x))
        if not all(isinstance(t, torch.Tensor) for t in leaves):
            raise AccelerationError("the image encoder returns non-tensor values, which ONNX cannot export. "
                                    "Fix: use backend='torch' for this model.")
        return tuple(leaves)


class _OrtRunner:
    """One onnxruntime session per input shape; ``__call__`` mirrors the encoder's output."""

    def __init__(self, model: nn.Module, encoder: nn.Module, cache_dir: Optional[Union[str, Path]]) -> None:
        self.ort = require("onnxruntime", "onnx", "backend='onnxruntime'")
        self.onnx = require("onnx", "onnx", "backend='onnxruntime'")
        for p in encoder.parameters():
            if p.dtype != torch.float32:
                raise InputError(f"backend='onnxruntime' exports float32 encoders; this one holds {p.dtype}. "
                                 "Fix: call model.float() first or use backend='torch'.")
            break
        if cache_dir is None:
            from . import hub

            cache_dir = hub.cache_dir() / "onnx"
        self.dir = Path(cache_dir).expanduser()
        self.name = _name(model)
        self.encoder = encoder
        self.forward = type(encoder).forward.__get__(encoder)
        self.digest = None  # computed once, on the first export key
        self.paths: Dict[Tuple[int, ...], Path] = {}
        self.sessions: Dict[Tuple[int, ...], Any] = {}
        self.specs: Dict[Tuple[int, ...], Any] = {}

    def __deepcopy__(self, memo):
        return self  # sessions are read-only; a deep-copied model shares them

    def path_for(self, shape: Tuple[int, ...]) -> Path:
        if self.digest is None:
            from . import __version__

            ident = {"name": self.name, "weights": weights_digest(self.encoder), "torch": torch.__version__,
                     "samkit": __version__, "opset": OPSET, "class": type(self.encoder).__qualname__,
                     "arch": hashlib.sha256(repr(self.encoder).encode()).hexdigest()}
            self.digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
        size = "x".join(str(s) for s in shape[-2:])
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.name)
        return self.dir / f"{safe}-{size}-{self.digest}.onnx"

    def prepare(self, shape: Tuple[int, ...]):
        """The session for a ``1 x C x H x W`` input: from the cache, or exported now."""
        shape = (1,) + tuple(int(s) for s in shape[1:])
        if shape in self.sessions:
            return self.sessions[shape]
        path = self.path_for(shape)
        session = None
        if path.exists():
            try:
                session = self._session(path)
            except Exception as exc:  # unreadable cached file: export again
                warnings.warn(f"re-exporting {path} (the cached file cannot be loaded: {exc})", RuntimeWarning)
        if session is None:
            session = _export(self, shape, path) or self._session(path)
        meta = session.get_modelmeta().custom_metadata_map
        self.specs[shape] = pytree.treespec_loads(meta["samkit.treespec"])
        self.paths[shape] = path
        self.sessions[shape] = session
        return session

    def _session(self, model: Union[Path, bytes]):
        """An onnxruntime session (CPU, torch's thread count, all graph optimisations) of a file or
        of serialised bytes."""
        from .export.onnx_io import ort_session

        return ort_session(model, threads=torch.get_num_threads())

    def __call__(self, x: torch.Tensor):
        if x.dim() != 4:
            raise InputError(f"the image encoder expects B x 3 x H x W, got shape {tuple(x.shape)}. "
                             "Fix: pass model.preprocess(image)[0].")
        session = self.prepare(tuple(x.shape))
        spec = self.specs[(1,) + tuple(int(s) for s in x.shape[1:])]
        name = session.get_inputs()[0].name
        xs = x.detach().to("cpu", torch.float32).contiguous()
        runs = [session.run(None, {name: xs[i : i + 1].numpy()}) for i in range(xs.shape[0])]
        leaves = [torch.from_numpy(runs[0][j]) if len(runs) == 1 else
                  torch.cat([torch.from_numpy(r[j]) for r in runs], 0) for j in range(len(runs[0]))]
        leaves = [t.to(x.device) for t in leaves]
        return pytree.tree_unflatten(leaves, spec)


def _export(runner: _OrtRunner, shape: Tuple[int, ...], path: Path):
    """Export ``runner.encoder`` at ``shape`` to ``path`` (atomically), checked against torch with
    the shared exporter of :mod:`samkit.export.onnx_io`. Returns the session used for the check
    (same graph as the file), or None."""
    from .export import onnx_io

    encoder = runner.encoder
    was_training = encoder.training
    encoder.eval()
    flat = _Flat(encoder, runner.forward).eval()  # the exporter restores this mode on the encoder
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(next(encoder.parameters()).device)
    runner.dir.mkdir(parents=True, exist_ok=True)
    what = f"the image encoder of {runner.name}"
    try:
        with tempfile.TemporaryDirectory(dir=runner.dir, prefix=".export-") as tmp:
            with torch.no_grad():
                ref = [t.detach().cpu().clone() for t in pytree.tree_leaves(flat(x))]
            proto = onnx_io.trace_to_onnx(
                flat, (x,), Path(tmp), input_names=["image"], opset=OPSET, what=what,
                fix="use backend='torch' (optionally with compile=True), or report the unsupported operator.")
            onnx_io.set_metadata(proto, {"samkit.treespec": pytree.treespec_dumps(flat.spec),
                                         "samkit.model": runner.name, "samkit.input_shape": json.dumps(list(shape)),
                                         "samkit.torch": torch.__version__})
            session = _verify(runner, proto, x, ref)
            onnx_io.save_model(proto, path, external_above=EXTERNAL_DATA_ABOVE, staging=Path(tmp))
    finally:
        encoder.train(was_training)
    return session


def _verify(runner: _OrtRunner, proto, x: torch.Tensor, ref):
    """Run the exported graph once and compare with torch: catches a silently wrong export.
    Returns the session (None when the graph is too large to check in memory)."""
    from .export import onnx_io

    return onnx_io.check_graph(proto, {"image": x.detach().cpu().numpy()}, ref, runner.name,
                               "use backend='torch' and report this model.", threads=torch.get_num_threads(),
                               rtol=VERIFY_RTOL, external_above=EXTERNAL_DATA_ABOVE)
