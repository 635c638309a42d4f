"""int8 image encoders for export folders (``onnxruntime.quantization``).

* ``"int8"``: dynamic quantisation (``quantize_dynamic``): weights of MatMul / Gemm / Conv stored
  as uint8 (``QUInt8``, as samexporter does; onnxruntime's CPU ``ConvInteger`` has no int8-weight
  kernel), activations quantised on the fly per tensor. No data needed.
* ``"int8-static"``: static quantisation (``quantize_static``, QDQ format, per-channel int8
  weights, uint8 activations, MinMax calibration) on a few calibration images, preprocessed
  exactly as the runtime does. Calibration runs the float32 graph with every intermediate tensor
  as an output (two images at a time): measured peaks on 1024 x 1024 inputs are 4 GB (EdgeTAM),
  8 GB (EfficientTAM-Ti), 11 GB (MobileSAM) and more than 16 GB (SAM 2.1-T, whose Hiera has
  global attention at that size; the SAM ViTs are larger still).
  Only the image encoder is quantised; decoders stay float32.

Whether either pays (speed, agreement with float32) is measured per family by
``benchmarks/bench_onnx.py`` (``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Sequence

import numpy as np

from ..errors import InputError, require

QUANTIZE = ("int8", "int8-static")


def check_quantize(quantize) -> None:
    if quantize is not None and quantize not in QUANTIZE:
        raise InputError(f"unknown quantization {quantize!r}. Fix: use one of {', '.join(QUANTIZE)} (or none).")


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs advice (pre-processing, tensors it skips) on the root
    logger; an export prints its own summary."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def quantize_dynamic_file(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the graph ``src`` into ``dst``."""
    q = require("onnxruntime.quantization", "onnx", "int8 quantisation")
    with _quiet():
        q.quantize_dynamic(str(src), str(dst), per_channel=False, reduce_range=False, weight_type=q.QuantType.QUInt8)


class _Feeds:
    """onnxruntime ``CalibrationDataReader`` over a list of feed dicts."""

    def __init__(self, feeds: List[Dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - used by some calibrators only
        pass


def quantize_static_file(src: Path, dst: Path, feeds: Iterable[Dict[str, np.ndarray]]) -> None:
    """Static int8 quantisation (QDQ) of ``src`` into ``dst``, calibrated on ``feeds`` (encoder
    input dicts)."""
    q = require("onnxruntime.quantization", "onnx", "int8 quantisation")
    feeds = list(feeds)
    if len(feeds) % 2 == 0 and feeds:
        # ranges are merged every 2 images; onnxruntime refuses a final merge with nothing left to
        # merge, so the count must be odd (a repeated image does not change min / max ranges)
        feeds.append(feeds[0])
    if not feeds:
        raise InputError("static int8 quantisation needs calibration images. Fix: pass calibration=[images] "
                         "(--calibration PATH) or use --quantize int8 (dynamic).")

    class Reader(_Feeds, q.CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp, _quiet():
        prepped = Path(tmp) / "prepped.onnx"
        try:
            q.quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantise the graph as it is
            prepped = src
        q.quantize_static(str(prepped), str(dst), Reader(feeds), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax,
                          extra_options={"CalibTensorRangeSymmetric": False,
                                         "CalibMaxIntermediateOutputs": 2})


def calibration_feeds(images: Sequence, preprocess: Callable) -> List[Dict[str, np.ndarray]]:
    """Encoder feeds of calibration ``images`` (paths, PIL images or arrays) through the runtime's
    ``preprocess(H x W x 3 uint8) -> (feeds, input_hw)``."""
    from ..io.image import load_image

    return [preprocess(load_image(im))[0] for im in images]


def default_calibration() -> list:
    """The bundled example photo and three variants (mirrored, a crop, darker): a small set for
    ``int8-static`` when the caller gives none (the benchmark calibrates on DAVIS frames)."""
    from ..io.image import example_image_path, load_image

    img = load_image(example_image_path())
    h, w = img.shape[:2]
    return [img, img[:, ::-1].copy(), img[h // 6 : h - h // 6, w // 5 : w - w // 10].copy(),
            (img.astype(np.float32) * 0.6).astype(np.uint8)]
