"""The one ONNX exporter of samkit: a torch module -> an ONNX graph checked against torch.

Used by the onnxruntime backend of :mod:`samkit.accel` (the cached image-encoder file) and by
:func:`samkit.export.export_onnx` (the export folders). Every graph goes through the same steps:
``torch.onnx.export`` (the TorchScript-based exporter, ``dynamo=False``) into a private folder,
loaded back with its weights (:func:`trace_to_onnx`), run once in onnxruntime on the export
inputs and compared with torch (:func:`check_graph`), then written with its weights inline or,
above the protobuf limit, in one ``<file>.data`` beside it (:func:`save_model`).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import AccelerationError, InputError, require

#: ONNX files above this size keep their weights in a ``.data`` file beside them (protobuf limit).
EXTERNAL_DATA_ABOVE = 1_800_000_000
#: export-time check: ``||onnx - torch|| / ||torch||`` (L2, per output) must stay below this
#: (a wrong graph gives ~1; noise inputs through deep LayerNorm stacks give up to ~2e-3).
VERIFY_RTOL = 1e-2
#: the opsets samkit exports (scaled-dot-product attention needs 14; 17 has LayerNormalization)
MIN_OPSET = 14


def max_torch_opset() -> int:
    """The newest opset the TorchScript-based exporter of this torch writes."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_MAX_OPSET", 17))
    except ImportError:  # pragma: no cover - very old torch
        return 17


def _runs_in_onnxruntime(opset: int) -> bool:
    """Whether onnxruntime loads a one-node graph stamped with ``opset``."""
    onnx = require("onnx", "onnx", "ONNX export")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    ids = [helper.make_opsetid("", int(opset))]
    proto = helper.make_model(graph, opset_imports=ids)
    try:
        proto.ir_version = helper.find_min_ir_version_for(ids)
    except Exception:  # noqa: BLE001 - an opset this onnx package does not know: keep its newest IR
        pass
    try:
        ort_session(proto.SerializeToString(), threads=1)
    except Exception:  # noqa: BLE001 - any refusal means "cannot run it"
        return False
    return onnx is not None


def max_onnxruntime_opset(start: int = MIN_OPSET, stop: int = 40) -> int:
    """The newest opset the installed onnxruntime runs (probed with one-node graphs)."""
    best = start - 1
    for opset in range(start, stop):
        if not _runs_in_onnxruntime(opset):
            break
        best = opset
    return best


def check_opset(opset: int) -> int:
    """Refuse an opset this torch cannot write or this onnxruntime cannot run (``InputError``)."""
    ort = require("onnxruntime", "onnx", "ONNX export")
    try:
        opset = int(opset)
    except (TypeError, ValueError):
        raise InputError(f"opset {opset!r} is not a number. Fix: pass an integer such as --opset 17.") from None
    top = max_torch_opset()
    if not MIN_OPSET <= opset <= top:
        raise InputError(f"opset {opset} cannot be exported: torch {torch.__version__} writes opsets {MIN_OPSET} to "
                         f"{top} for these models. Fix: pass --opset 17 (the default) or another opset in that range.")
    if not _runs_in_onnxruntime(opset):
        runs = max_onnxruntime_opset()
        raise InputError(f"opset {opset} cannot be run by onnxruntime {ort.__version__} (it runs opsets up to {runs}). "
                         f"Fix: pass --opset {min(runs, 17)} or upgrade onnxruntime.")
    return opset


def ort_session(source: Union[str, Path, bytes], threads: Optional[int] = None, providers: Sequence[str] = ()):
    """An onnxruntime session (:func:`samkit.runtime.session.make_session`) with torch's thread
    count unless ``threads`` is given."""
    from ..runtime.session import make_session

    require("onnxruntime", "onnx", "onnxruntime sessions")
    return make_session(source, threads=threads or torch.get_num_threads(), providers=providers)


def trace_to_onnx(module: nn.Module, args: tuple, tmp_dir: Path, *, input_names: Sequence[str],
                  output_names: Optional[Sequence[str]] = None, dynamic_axes: Optional[dict] = None,
                  opset: int, what: str, fix: str):
    """Export ``module(*args)`` with ``torch.onnx.export`` into ``tmp_dir`` and return the loaded
    ``onnx.ModelProto`` (weights inline). A failure raises :class:`AccelerationError` naming
    ``what`` was exported, the cause, and ``fix``."""
    onnx = require("onnx", "onnx", "ONNX export")
    raw = Path(tmp_dir) / "raw.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, tuple(args), str(raw), dynamo=False, opset_version=int(opset),
                              input_names=list(input_names), output_names=list(output_names or []) or None,
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as exc:
            raise AccelerationError(f"ONNX export of {what} failed ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:500]}). Fix: {fix}") from exc
    proto = onnx.load(str(raw), load_external_data=False)
    onnx.load_external_data_for_model(proto, str(tmp_dir))
    return proto


def set_metadata(proto, meta: Dict[str, str]) -> None:
    """Replace the model's metadata (``metadata_props``) with ``meta``."""
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=str(k), value=str(v))


def compare_outputs(outs: Sequence[np.ndarray], ref: Sequence[torch.Tensor], what: str, fix: str,
                    rtol: float = VERIFY_RTOL) -> None:
    """Raise :class:`AccelerationError` unless every onnxruntime output has torch's shape and a
    relative L2 error ``<= rtol``."""
    if len(outs) != len(ref):
        raise AccelerationError(f"the ONNX export of {what} returns {len(outs)} tensors, torch {len(ref)}. Fix: {fix}")
    for i, (o, r) in enumerate(zip(outs, ref)):
        o = torch.from_numpy(np.asarray(o))
        if o.shape != r.shape:
            raise AccelerationError(f"output {i} of the ONNX export of {what} has shape {tuple(o.shape)}, "
                                    f"torch {tuple(r.shape)}. Fix: {fix}")
        if not r.numel():
            continue
        err = ((o.double() - r.double()).norm() / r.double().norm().clamp_min(1e-12)).item()
        if not err <= rtol:
            raise AccelerationError(f"output {i} of the ONNX export of {what} differs from torch (relative L2 error "
                                    f"{err:.3g}, limit {rtol:g}). Fix: {fix}")


def check_graph(proto, feeds: Dict[str, np.ndarray], ref: Sequence[torch.Tensor], what: str, fix: str, *,
                threads: Optional[int] = None, rtol: float = VERIFY_RTOL, external_above: int = EXTERNAL_DATA_ABOVE):
    """Run ``proto`` once in onnxruntime on ``feeds`` and compare with torch's ``ref`` (see
    :func:`compare_outputs`): catches a silently wrong export. Returns the session, or None when
    the graph is too large to be checked in memory (``external_above``)."""
    if proto.ByteSize() > external_above:
        return None  # cannot be serialised in one piece; checked by the tests on smaller models
    session = ort_session(proto.SerializeToString(), threads=threads)
    compare_outputs(session.run(None, feeds), ref, what, fix, rtol)
    return session


def save_model(proto, path: Path, *, external_above: int = EXTERNAL_DATA_ABOVE, staging: Optional[Path] = None,
               publish=None) -> List[Path]:
    """Write ``proto`` to ``path``; above ``external_above`` bytes its weights go to
    ``<path name>.data`` beside it (one file, tensors of 1 KiB and more). ``staging``: a private
    folder on the same file system where the files are written first; ``publish(src, dest)``
    then moves each into place, the data file first and the model last (default ``os.replace``).
    Returns the written paths (model first)."""
    onnx = require("onnx", "onnx", "ONNX export")
    path = Path(path)
    staging = Path(staging) if staging is not None else path.parent
    publish = publish or (lambda src, dest: os.replace(src, dest))
    if proto.ByteSize() <= external_above:
        tmp = staging / (path.name + ".part")
        tmp.write_bytes(proto.SerializeToString())
        publish(tmp, path)
        return [path]
    data_name = path.name + ".data"
    tmp = staging / (path.name + ".part")
    onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name,
                    size_threshold=1024)
    if staging != path.parent:
        publish(staging / data_name, path.parent / data_name)
    publish(tmp, path)
    return [path, path.parent / data_name]
