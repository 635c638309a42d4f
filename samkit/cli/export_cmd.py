"""``samkit export MODEL --format onnx --out DIR``: write a model's image pipeline (and, for video
models, its video graphs) as ONNX graphs.

The folder (graphs, ``samkit-export.json`` with the sha256 of every file, an AnyLabeling
``config.yaml`` where AnyLabeling can read the graphs) is described in :mod:`samkit.export`;
``samkit segment IMAGE --model DIR`` and :class:`samkit.runtime.OnnxImagePredictor` run it
without torch; ``samkit track VIDEO --model DIR`` and :class:`samkit.runtime.OnnxVideoTracker`
the video graphs. ``--out`` is checked before the model is loaded; the files are published as one
set (``samkit.io.outputs``, key ``export``).
"""
from __future__ import annotations

import enum
from pathlib import Path
from typing import List, Optional

from .common import check_out_dir, format_option, info, parse_formats, typer
from ..errors import InputError


class ExportFormat(str, enum.Enum):
    onnx = "onnx"


class Quantize(str, enum.Enum):
    int8 = "int8"
    int8_static = "int8-static"


EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit export sam_vit_b --format onnx --out sam_vit_b-onnx/\n\n"
    "  samkit export mobile_sam --format onnx --out mobile_sam-onnx/ --quantize int8\n\n"
    "  samkit export edgetam --format onnx --out edgetam-onnx/ --checkpoint edgetam.pt --opset 17\n\n"
    "  samkit segment photo.jpg --point 500,375 --model sam_vit_b-onnx/     (runs without torch)\n\n"
    "Files: MODEL.encoder.onnx, MODEL.decoder.onnx, MODEL.encoder.quant.onnx (--quantize int8), "
    "samkit-export.json (manifest with the sha256 of every file), config.yaml (AnyLabeling)."
)


def _images(paths: Optional[List[Path]]) -> Optional[list]:
    """Calibration images: files, or every image file of the given folders (sorted)."""
    if not paths:
        return None
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"calibration path {p} does not exist. Fix: pass image files or a folder of images.")
    if not out:
        raise InputError("no calibration images were found. Fix: pass image files or a folder with .jpg/.png files.")
    return out


def export(
    model: str = typer.Argument(..., metavar="MODEL", help="Model name (`samkit models ls`).", show_default=False),
    fmt: Optional[List[str]] = format_option(ExportFormat, [ExportFormat.onnx]),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created). A new export there replaces the "
                             "previous one as a set.", show_default=False),
    quantize: Optional[List[Quantize]] = typer.Option(None, "--quantize", help="Also write an int8 image encoder: "
                                                      "int8 (dynamic) or int8-static (calibrated on --calibration "
                                                      "images); repeat for both (the first is the default)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset of the graphs."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file (default: the cache)."),
    calibration: Optional[List[Path]] = typer.Option(None, "--calibration", help="Images (files or folders) that "
                                                     "calibrate --quantize int8-static; default: the bundled photo."),
    single_mask: bool = typer.Option(False, "--single-mask", help="The segment-anything decoder returns one mask "
                                     "(as CVAT's and segment-anything's browser demos expect)."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
) -> None:
    """Export a model's image encoder and prompt decoder to ONNX (video models: also their video graphs), plus a
    manifest with checksums."""
    parse_formats(fmt, default=[ExportFormat.onnx], choices=ExportFormat, command="samkit export")
    from ..specs import get_spec

    spec = get_spec(model)  # unknown names fail here, before any work
    if not spec.neural:
        raise InputError(f"{model} is not a neural model (the GrabCut engine has no graphs to export). Fix: export "
                         "a neural model, e.g. `samkit export mobile_sam --format onnx --out DIR`.")
    check_out_dir(out)
    from ..errors import require

    require("onnx", "onnx", "samkit export")
    require("onnxruntime", "onnx", "samkit export")
    from ..export import export_onnx
    from ..export.onnx_io import check_opset
    from ..registry import load_model

    check_opset(opset)  # before the weights are read
    images = _images(calibration)
    net = load_model(model, checkpoint=checkpoint, download=not offline)
    folder = export_onnx(net, out, quantize=[q.value for q in quantize or []], opset=opset, calibration=images,
                         single_mask=single_mask, name=spec.name)
    info(f"exported {model} to {folder}:")
    for f in sorted(p.name for p in Path(folder).iterdir() if p.is_file()):
        info(f"  {f}")


COMMAND = export
