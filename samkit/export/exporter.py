"""``export_onnx``: a samkit image model -> an export folder (see :mod:`samkit.export`)."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import InputError, require
from ..io.outputs import OutputSet, check_out_dir
from ..runtime.manifest import FORMAT, FORMAT_VERSION, MANIFEST, file_entries
from . import onnx_io
from .fast_decoder import FILES as FAST_FILES, PIPELINE as FAST_PIPELINE, fast_plans
from .graphs import GraphPlan, decoder_plan, encoder_plan, layout_of, reference_decoder
from .video_graphs import VIDEO_FILES, VIDEO_PIPELINE, video_plans, video_section
from .quantize import (calibration_feeds, check_quantize, default_calibration, quantize_dynamic_file,
                       quantize_static_file)

OPSET = 17
ANYLABELING_CONFIG = "config.yaml"
_FIX = "report this model (the exporter could not trace it), or try another --opset."
_SPEC_FIELDS = ("name", "family", "license", "commercial_use", "paper", "url", "filename", "checkpoint_format", "tag",
                "input_size", "video")


def _stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "model"


def _io(values, initializers=()) -> List[dict]:
    """Graph inputs / outputs as ``[{"name", "dtype", "shape"}]`` (symbolic axes as strings)."""
    from onnx import helper

    skip = set(initializers)
    out = []
    for v in values:
        if v.name in skip:
            continue
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else (int(d.dim_value) if d.HasField("dim_value") else "?")
                for d in t.shape.dim]
        out.append({"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims})
    return out


def _ref(module: nn.Module, inputs: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
    out = module(*inputs.values())
    out = out if isinstance(out, tuple) else (out,)
    return [t.detach().cpu().clone() for t in out]


def _numpy(inputs: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in inputs.items()}


def _export_graph(plan: GraphPlan, outs: OutputSet, file: str, opset: int, meta: Dict[str, str],
                  checks: Sequence[Dict[str, torch.Tensor]] = ()) -> dict:
    """Trace ``plan``, check it against torch on its example inputs and on ``checks`` (other
    shapes: no size may be baked into the graph), write it into the staging folder. Returns its
    manifest entry."""
    what = f"the {plan.role.replace('_', ' ')} of {meta['samkit.model']}"
    ref = _ref(plan.module, plan.inputs)
    with tempfile.TemporaryDirectory(dir=outs.staging, prefix=".graph-") as tmp:
        proto = onnx_io.trace_to_onnx(plan.module, tuple(plan.inputs.values()), Path(tmp),
                                      input_names=list(plan.inputs), output_names=plan.outputs,
                                      dynamic_axes=plan.dynamic_axes, opset=opset, what=what, fix=_FIX)
        onnx_io.set_metadata(proto, dict(meta, **{"samkit.role": plan.role}))
        init = [t.name for t in proto.graph.initializer]
        entry = {"file": file, "role": plan.role, "precision": "fp32", "inputs": _io(proto.graph.input, init),
                 "outputs": _io(proto.graph.output)}
        read = {i.name for i in proto.graph.input}  # an input the model does not read is not in the graph

        def feeds(inputs: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
            return _numpy({k: v for k, v in inputs.items() if k in read})

        session = onnx_io.check_graph(proto, feeds(plan.inputs), ref, what, _FIX)
        for extra in checks if session is not None else ():
            onnx_io.compare_outputs(session.run(None, feeds(extra)), _ref(plan.module, extra), what, _FIX)
        written = onnx_io.save_model(proto, outs.path(file), staging=Path(tmp))
    if len(written) > 1:
        entry["data_file"] = written[1].name
    return entry


def _spec_facts(model: nn.Module, name: str) -> dict:
    spec = getattr(model, "spec", None)
    if spec is None:
        return {"name": name}
    return {k: getattr(spec, k) for k in _SPEC_FIELDS}


def _image_section(model: nn.Module, layout: str) -> dict:
    """The manifest's ``image`` section: everything a runtime needs besides the graphs."""
    s = int(model.image_size)
    dec = model.mask_decoder
    if layout == "sam":
        pre = {"rule": "longest_side", "resize": "PIL bilinear on uint8, longest side to input_size, other side "
               "int(side * input_size / longest + 0.5)", "graph_input": "h x w x 3 float32 RGB 0..255 (resized)",
               "normalise": "in graph: (x - mean) / std, 0..255 units", "pad": "in graph: zeros bottom/right to "
               "input_size x input_size", "mean": model.pixel_mean.flatten().tolist(),
               "std": model.pixel_std.flatten().tolist()}
    else:
        mean = model.pixel_mean if isinstance(model.pixel_mean, tuple) else model.pixel_mean.flatten().tolist()
        std = model.pixel_std if isinstance(model.pixel_std, tuple) else model.pixel_std.flatten().tolist()
        pre = {"rule": "stretch", "resize": "x / 255, then bilinear (align_corners=False) to input_size x input_size, "
               "aspect ratio not kept", "antialias": layout == "sam2", "graph_input": "1 x 3 x S x S float32 "
               "normalised", "normalise": "(x - mean) / std, 0..1 units, before the graph",
               "mean": list(mean), "std": list(std)}
    frame = ("x * w' / W, y * h' / H where h' x w' is the resized image" if layout == "sam"
             else "x * S / W, y * S / H (S = input_size)")
    order = {"sam": "clicks, then box corners (labels 2, 3); one (0, 0) point labelled -1 only when there is no box",
             "efficient_sam": "clicks, then box corners (labels 2, 3); the graph pads to 6 points with (-1, -1) / -1",
             "sam2": "box corners first (labels 2, 3), then clicks; the graph appends the padding point"}[layout]
    post = {"sam": "in graph (masks output): bilinear to input_size, crop the padding, bilinear to orig_im_size",
            "efficient_sam": "in graph (masks output): bicubic straight to orig_im_size",
            "sam2": "runtime: bilinear (align_corners=False) straight from the low-res masks to H x W"}[layout]
    dyn = None
    if getattr(dec, "dynamic_multimask_via_stability", False):
        dyn = {"stability_delta": float(dec.dynamic_multimask_stability_delta),
               "stability_thresh": float(dec.dynamic_multimask_stability_thresh)}
    return {
        "layout": layout, "input_size": s, "preprocess": pre,
        "prompts": {"coordinates": f"model frame pixels: {frame}", "order": order,
                    "labels": "1 foreground, 0 background, 2 / 3 box top-left / bottom-right, -1 padding"},
        "postprocess": post, "mask_threshold": float(model.mask_threshold),
        "mask_input_size": list(model.mask_input_size), "supports_mask_input": bool(model.supports_mask_input),
        "embedding_size": list(model.prompt_encoder.image_embedding_size),
        "mask_tokens": {"count": int(dec.num_mask_tokens), "single": 0,
                        "multimask": list(range(1, int(dec.num_mask_tokens)))},
        "dynamic_multimask": dyn, "default_selection": str(model.default_selection),
    }


def _decoder_checks(plan: GraphPlan, layout: str) -> List[Dict[str, torch.Tensor]]:
    """Other prompt shapes for the decoder check: 1 prompt of 2 points, no mask input, another
    original size."""
    alt = dict(plan.inputs)
    dev = alt["point_coords"].device
    alt["point_coords"] = plan.inputs["point_coords"][:1, :2].clone()
    alt["point_labels"] = torch.tensor([[1.0, -1.0 if layout == "sam" else 0.0]], device=dev)
    alt["has_mask_input"] = torch.zeros(1, device=dev)
    if "orig_im_size" in alt:
        alt["orig_im_size"] = torch.tensor([701.0, 333.0], device=dev)
    return [alt]


def _encoder_checks(plan: GraphPlan, layout: str) -> List[Dict[str, torch.Tensor]]:
    if layout != "sam":
        return []
    x = plan.inputs["input_image"]
    s = x.shape[1]
    portrait = torch.rand(s, max(1, (2 * s) // 3), 3, generator=torch.Generator().manual_seed(2)) * 255.0
    return [{"input_image": portrait.to(x.device)}]


def _anylabeling_yaml(name: str, encoder: str, decoder: str, size: int) -> str:
    """AnyLabeling's model config (``type: segment_anything``; paths relative to this file)."""
    lines = {"type": "segment_anything", "name": f"samkit-{name}", "display_name": f"{name} (samkit export)",
             "encoder_model_path": encoder, "decoder_model_path": decoder, "input_size": size,
             "max_width": size, "max_height": int(size * 2 / 3)}
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in lines.items())


def _quantize(kind: str, outs: OutputSet, fp32: dict, stem: str, spec: dict, calibration) -> dict:
    src = outs.staging / fp32["file"]
    suffix = "quant" if kind == "int8" else "int8-static"
    file = f"{stem}.encoder.{suffix}.onnx"
    dst = outs.path(file)
    if kind == "int8":
        quantize_dynamic_file(src, dst)
    else:
        from ..runtime.imageops import preprocess

        name = fp32["inputs"][0]["name"]
        images = default_calibration() if calibration is None else list(calibration)
        quantize_static_file(src, dst, calibration_feeds(images, lambda im: preprocess(im, spec, name)))
    for leftover in outs.staging.glob(f"{stem}.encoder*.onnx.data.*"):  # onnxruntime's scratch files
        leftover.unlink()
    return dict(fp32, file=file, precision=kind, quantized_from=fp32["file"])


def _wants_video(model: nn.Module, video: Optional[bool]) -> bool:
    """Whether the video graphs are exported: by default for models with a video memory."""
    has = getattr(model, "memory_config", None) is not None
    if video and not has:
        name = _spec_facts(model, type(model).__name__)["name"]
        raise InputError(f"{name} has no video memory, so it has no video graphs to export. Fix: drop video=True "
                         "(--video), or export a video model (sam2.1_hiera_*, edgetam, efficienttam_*).")
    return has if video is None else bool(video)


def _export_video(model: nn.Module, outs: OutputSet, stem: str, opset: int, meta: Dict[str, str]):
    """The video graphs (``samkit.export.video_graphs``): ``(graphs, video section)``."""
    graphs: Dict[str, dict] = {}
    for plan, checks in video_plans(model):
        graphs[plan.role] = _export_graph(plan, outs, f"{stem}.{VIDEO_FILES[plan.role]}.onnx", opset, meta, checks)
    tokens = int(graphs["memory_encoder"]["outputs"][0]["shape"][1])  # memory tokens per frame (static)
    return graphs, video_section(model, tokens)


def export_onnx(model: nn.Module, out_dir: Union[str, Path], *, quantize: Union[None, str, Sequence[str]] = None,
                opset: int = OPSET,
                calibration: Optional[Sequence] = None, name: Optional[str] = None, single_mask: bool = False,
                video: Optional[bool] = None) -> Path:
    """Export the image pipeline of ``model`` (and, for video models, the video graphs) into
    ``out_dir`` (see :mod:`samkit.export` for the folder layout and manifest) and return the
    folder.

    ``quantize``: None, ``"int8"`` (dynamic) or ``"int8-static"`` (calibrated on ``calibration``
    images, default a few variants of the bundled photo), or a sequence of both; the float32
    encoder is kept beside the int8 ones, and the first one named is the folder's default.
    ``opset``: the ONNX opset (default 17). ``name``: the file stem (default the model's
    registered name). ``single_mask``: the segment-anything decoder returns one mask
    (``SamOnnxModel(return_single_mask=True)``, as CVAT's and segment-anything's browser demos
    use it) instead of all four; SAM, MobileSAM, EdgeSAM and EfficientSAM only.

    Every graph is checked against torch once exported. The files are published as one set
    (``samkit.io.outputs.OutputSet``, key ``export``): a failed export leaves the folder as it
    was; a new export into the same folder replaces the previous one."""
    layout = layout_of(model)
    if single_mask and layout == "sam2":
        raise InputError("single_mask applies to the segment-anything decoder (SAM, MobileSAM, EdgeSAM, EfficientSAM); "
                         "the SAM 2 family follows samexporter's decoder, which returns every mask. Fix: drop "
                         "single_mask (--single-mask).")
    kinds = [quantize] if isinstance(quantize, str) else list(quantize or ())
    for kind in kinds:
        check_quantize(kind)
    with_video = _wants_video(model, video)
    opset = onnx_io.check_opset(opset)
    out = check_out_dir(Path(out_dir), option="out_dir")
    onnx = require("onnx", "onnx", "ONNX export")
    ort = require("onnxruntime", "onnx", "ONNX export")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise InputError("export_onnx exports float32 models. Fix: call model.float() first.")
    from .. import __version__
    from ..checkpoint import weights_digest

    name = name or _spec_facts(model, type(model).__name__)["name"]
    stem = _stem(name)
    meta = {"samkit.model": name, "samkit.layout": layout, "samkit.version": __version__,
            "samkit.manifest": MANIFEST}
    image = _image_section(model, layout)
    image["mask_tokens"]["returned"] = "single" if single_mask else "all"
    was_training = model.training
    model.eval()
    try:
        with OutputSet(out, "export") as outs, reference_decoder(model), torch.no_grad():
            enc = encoder_plan(model, layout)
            graphs = {"image_encoder": _export_graph(enc, outs, f"{stem}.encoder.onnx", opset, meta,
                                                     _encoder_checks(enc, layout))}
            dec = decoder_plan(model, layout, tuple(_ref(enc.module, enc.inputs)), single_mask=single_mask)
            graphs["prompt_decoder"] = _export_graph(dec, outs, f"{stem}.decoder.onnx", opset, meta,
                                                     _decoder_checks(dec, layout))
            for plan, checks in fast_plans(model, layout, dec):
                graphs[plan.role] = _export_graph(plan, outs, f"{stem}.{FAST_FILES[plan.role]}.onnx", opset, meta,
                                                  checks)
            for kind in kinds:
                graphs[f"image_encoder_{kind.replace('-', '_')}"] = _quantize(kind, outs, graphs["image_encoder"],
                                                                             stem, image, calibration)
            image["default_precision"] = kinds[0] if kinds else "fp32"
            encoder_file = graphs[f"image_encoder_{kinds[0].replace('-', '_')}" if kinds else "image_encoder"]["file"]
            pipelines = {"image": {"encoder": "image_encoder", "decoder": "prompt_decoder"},
                         "image_fast": dict(FAST_PIPELINE)}
            video_doc = None
            if with_video:
                more, video_doc = _export_video(model, outs, stem, opset, meta)
                graphs.update(more)
                pipelines["video"] = {k: v for k, v in VIDEO_PIPELINE.items() if v in more}
            anylabeling = None
            if layout == "sam" or (layout == "sam2" and model.use_high_res_features):
                anylabeling = ANYLABELING_CONFIG
                outs.path(ANYLABELING_CONFIG).write_text(_anylabeling_yaml(name, encoder_file,
                                                                           graphs["prompt_decoder"]["file"],
                                                                           int(model.image_size)))
            doc = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "samkit_version": __version__,
                "model": {"name": name, "weights_sha256": weights_digest(model), "spec": _spec_facts(model, name)},
                "opset": opset, "exporter": {"torch": torch.__version__, "onnx": onnx.__version__,
                                             "onnxruntime": ort.__version__},
                "image": image, "graphs": graphs, "pipelines": pipelines,
                "anylabeling": anylabeling,
                "files": file_entries(outs.staging, outs.staged_files()),
            }
            if video_doc is not None:
                doc["video"] = video_doc
            outs.path(MANIFEST).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    finally:
        model.train(was_training)
    return out
