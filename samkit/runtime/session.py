"""onnxruntime sessions for export folders (and for :mod:`samkit.export.onnx_io`): no torch."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

from ..errors import AccelerationError, require


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def make_session(source: Union[str, Path, bytes], threads: Optional[int] = None, providers: Sequence[str] = ()):
    """An onnxruntime ``InferenceSession`` of a file or serialised bytes: ``threads`` intra-op
    threads (default: the usable CPUs), all graph optimisations, ``providers`` (default CPU)."""
    ort = require("onnxruntime", "runtime", "the ONNX runtime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads or usable_cpus()))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only: shape-merge notices of valid graphs are not the user's concern
    src = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(src, sess_options=opts, providers=list(providers) or ["CPUExecutionProvider"])


def open_graph(path: Path, opset: object, threads: Optional[int] = None, providers: Sequence[str] = ()):
    """:func:`make_session` of one graph of an export folder; a graph onnxruntime cannot load
    (an opset or IR version newer than it knows, an unknown operator) is one
    ``AccelerationError`` naming the file, its opset and the fix."""
    ort = require("onnxruntime", "runtime", "the ONNX runtime")
    try:
        return make_session(path, threads, providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = " ".join(str(exc).split())[:300]
        raise AccelerationError(f"onnxruntime {ort.__version__} cannot load {path.name} (opset {opset}): {first}. "
                                "Fix: re-export the model with an opset this onnxruntime runs (`samkit export MODEL "
                                "--format onnx --opset 17`), or upgrade onnxruntime.") from None
