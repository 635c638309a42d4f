"""The torch modules that are traced into the graphs of an export folder, one layout per family.

Layouts (``layout_of(model)``):

* ``"sam"`` (SAM ViT-B/L/H, MobileSAM, EdgeSAM): the encoder takes the image resized so its
  longest side is S (``input_image``, h x w x 3 float32 RGB 0..255; samexporter's
  ``--use-preprocess`` encoder, which AnyLabeling feeds) and normalises and zero-pads it to
  S x S inside the graph. The decoder is segment-anything's ONNX decoder
  (``segment_anything.utils.onnx.SamOnnxModel``): masks at ``orig_im_size``.
* ``"efficient_sam"``: the encoder takes the preprocessed 1 x 3 x S x S tensor; the decoder
  has segment-anything's inputs and outputs with EfficientSAM's semantics inside (no mask input:
  ``mask_input`` / ``has_mask_input`` are accepted and ignored; prompts padded to 6 points at
  (-1, -1); masks bicubic to ``orig_im_size``).
* ``"sam2"`` (SAM 2 / 2.1, EdgeTAM, EfficientTAM): samexporter's SAM 2 encoder (1 x 3 x S x S ->
  ``high_res_feats_0``, ``high_res_feats_1``, ``image_embed``; EfficientTAM has no high-res
  features and returns ``image_embed`` alone) and its decoder (those features, ``point_coords``,
  ``point_labels``, ``mask_input``, ``has_mask_input`` -> low-res ``masks``, ``iou_predictions``;
  a padding point is appended inside, as SAM 2's image predictor does).

Every decoder returns all mask tokens (4): token 0 is the single-mask output, 1..3 the
multimask outputs; choosing among them is the caller's (``samkit.runtime``). The decoders run
the reference (not the low-rank fast) two-way transformer path, traced with 2 prompts so that
no batch-1 shortcut is baked into the graph. The fast decoder pair beside them (low-rank path,
shared first layer) is :mod:`samkit.export.fast_decoder`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError


def layout_of(model: nn.Module) -> str:
    """``"sam"``, ``"efficient_sam"`` or ``"sam2"`` for a samkit image model; ``InputError``
    for anything else (``classic``, foreign modules)."""
    from ..models.base import PromptableModel
    from ..models.efficient_sam import EfficientSamModel
    from ..models.sam import SamModel
    from ..models.sam2 import Sam2Model

    if isinstance(model, EfficientSamModel):
        return "efficient_sam"
    if isinstance(model, Sam2Model):
        return "sam2"
    if isinstance(model, SamModel):
        return "sam"
    name = getattr(getattr(model, "spec", None), "name", None) or type(model).__name__
    if not isinstance(model, PromptableModel):
        raise InputError(f"{name} is not a neural samkit model, so it has no graphs to export to ONNX (the "
                         "'classic' engine is GrabCut in OpenCV). Fix: export a neural model such as sam_vit_b, "
                         "mobile_sam or edgetam (`samkit models ls`).")
    raise InputError(f"{name} ({type(model).__name__}) has no ONNX export layout. Fix: export one of the "
                     "registered image families (`samkit models ls`).")


@contextlib.contextmanager
def reference_decoder(model: nn.Module):
    """Within the block the mask decoder runs its reference transformer path (the one that traces
    into a clean graph); the fast path is restored afterwards."""
    tr = model.mask_decoder.transformer
    had = getattr(tr, "fast", None)
    if had is not None:
        tr.fast = False
    try:
        yield
    finally:
        if had is not None:
            tr.fast = had


# ----------------------------------------------------------------------------- encoders
class SamEncoderGraph(nn.Module):
    """``input_image`` h x w x 3 float32 (RGB 0..255, longest side = S) -> ``image_embeddings``
    1 x C x S/16 x S/16: normalised with the model's mean/std and zero-padded bottom/right to
    S x S inside the graph (``samkit.models.base.preprocess_longest_side`` after its resize)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.size = int(model.image_size)
        self.register_buffer("mean", model.pixel_mean.detach().reshape(3).clone(), persistent=False)
        self.register_buffer("std", model.pixel_std.detach().reshape(3).clone(), persistent=False)

    def forward(self, input_image: torch.Tensor) -> torch.Tensor:
        x = ((input_image - self.mean) / self.std).permute(2, 0, 1)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, self.size - w, 0, self.size - h))[None]
        return self.model.encode(x).embed


class StretchEncoderGraph(nn.Module):
    """``image`` 1 x 3 x S x S (preprocessed) -> EfficientSAM: ``image_embeddings``; SAM 2 family:
    ``high_res_feats_0`` 1 x C/8 x S/4 x S/4, ``high_res_feats_1`` 1 x C/4 x S/8 x S/8,
    ``image_embed`` 1 x C x S/16 x S/16 (with ``no_mem_embed``), or ``image_embed`` alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        f = self.model.encode(image)
        if hasattr(self.model, "interactive_features"):  # SAM 3 family: the tracker neck runs on demand
            f = self.model.interactive_features(f)
        if f.high_res is None:
            return f.embed
        return f.high_res[0], f.high_res[1], f.embed


# ----------------------------------------------------------------------------- decoders
def _dense(model: nn.Module, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
    """segment-anything's dense embedding: ``has * downscale(mask) + (1 - has) * no_mask_embed``
    (``has_mask_input`` (1,) or (M,), one flag per mask input)."""
    pe = model.prompt_encoder
    has = has_mask_input.reshape(-1, 1, 1, 1).to(mask_input.dtype)
    no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
    return has * pe.mask_downscaling(mask_input) + (1 - has) * no_mask


def sam2_prompt_inputs(model: nn.Module, use_high_res: bool, rest: tuple) -> tuple:
    """The inputs a SAM 2 decoder graph takes after ``image_embed`` (``high_res_feats_0``,
    ``high_res_feats_1`` when ``use_high_res``, then ``point_coords``, ``point_labels``,
    ``mask_input``, ``has_mask_input``) -> ``(high_res or None, point_labels, sparse, dense)``:
    the point embeddings with one padding point, and the dense embedding."""
    if use_high_res:
        feat0, feat1, point_coords, point_labels, mask_input, has_mask_input = rest
        high_res = (feat0, feat1)
    else:
        point_coords, point_labels, mask_input, has_mask_input = rest
        high_res = None
    sparse = model.prompt_encoder._embed_points(point_coords, point_labels, pad=True)
    return high_res, point_labels, sparse, _dense(model, mask_input, has_mask_input)


class SamDecoderGraph(nn.Module):
    """segment-anything's ONNX decoder contract.

    Inputs: ``image_embeddings`` 1 x C x h x w; ``point_coords`` N x P x 2 float32 (x, y) in the
    model frame (pixels of the resized image, before padding); ``point_labels`` N x P float32
    (1 fg, 0 bg, 2 / 3 box corners, -1 padding; add one (0, 0) point labelled -1 when there is no
    box); ``mask_input`` M x 1 x 4h x 4w logits and ``has_mask_input`` (M,) 0 / 1 (M = 1 or N);
    ``orig_im_size`` (2,) float32 (H, W). Outputs: ``masks`` N x K x H x W logits,
    ``iou_predictions`` N x K, ``low_res_masks`` N x K x 4h x 4w with K = 4 (every mask token),
    or K = 1 with ``single_mask`` (``SamOnnxModel(return_single_mask=True)``: token 0 from 3
    points on, else the multimask token with the highest predicted IoU)."""

    def __init__(self, model: nn.Module, efficient: bool = False, single_mask: bool = False) -> None:
        super().__init__()
        self.model = model
        self.size = int(model.image_size)
        self.efficient = efficient
        self.single_mask = single_mask
        self.max_points = int(getattr(model, "max_points", 0))

    @staticmethod
    def _select(low: torch.Tensor, iou: torch.Tensor, num_points: torch.Tensor):
        """segment-anything's ``select_masks``: the IoU of token 0 moved by 1000 * (points - 2.5)."""
        reweight = torch.zeros_like(iou[:1])
        reweight[:, 0] = 1000.0
        best = torch.argmax(iou + (num_points.to(iou.dtype) - 2.5) * reweight, dim=1)
        rows = torch.arange(low.shape[0], device=low.device)
        return low[rows, best].unsqueeze(1), iou[rows, best].unsqueeze(1)

    @staticmethod
    def efficient_coords(coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """EfficientSAM's coordinates: padding points and negative coordinates at -1."""
        coords = torch.where(labels[..., None] == -1, torch.full_like(coords, -1.0), coords)
        return torch.where(coords >= 0, coords, torch.full_like(coords, -1.0))

    def _efficient_prompts(self, coords: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """EfficientSAM's prompt list: negative coordinates and padding points at (-1, -1), padded
        to ``max_points`` points with (-1, -1) / -1 (more points are all kept)."""
        coords = self.efficient_coords(coords, labels)
        n = coords.shape[0]
        pad_c = coords.new_full((1, 1, 2), -1.0).expand(n, self.max_points, 2)
        pad_l = labels.new_full((1, 1), -1.0).expand(n, self.max_points)
        total = torch.clamp(torch._shape_as_tensor(labels)[1], min=self.max_points)
        keep = torch.arange(total)
        coords = torch.index_select(torch.cat([coords, pad_c], 1), 1, keep)
        labels = torch.index_select(torch.cat([labels, pad_l], 1), 1, keep)
        return coords, labels

    def _postprocess(self, low: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        size = orig_im_size.to(torch.int64)
        if self.efficient:  # EfficientSAM: bicubic straight to the original size
            return F.interpolate(low, size=(size[0], size[1]), mode="bicubic", align_corners=False)
        x = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)
        orig = orig_im_size.to(torch.float32)
        scale = self.size / torch.max(orig)
        kept = torch.floor(orig * scale + 0.5).to(torch.int64)  # the resized image inside the frame
        x = x[..., : kept[0], : kept[1]]
        return F.interpolate(x, size=(size[0], size[1]), mode="bilinear", align_corners=False)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        pe = self.model.prompt_encoder
        coords, labels = point_coords, point_labels
        if self.efficient:
            coords, labels = self._efficient_prompts(coords, labels)
        sparse = pe._embed_points(coords, labels, pad=False)
        if self.efficient:  # no mask branch: keep the inputs in the graph, contribute nothing
            dense = None
            sparse = sparse + 0.0 * (mask_input.sum() + has_mask_input.sum())
        else:
            dense = _dense(self.model, mask_input, has_mask_input)
        low, iou, _, _ = self.model.mask_decoder._predict(image_embeddings, pe.get_dense_pe(), sparse, dense, None,
                                                          None)
        if self.single_mask:
            low, iou = self._select(low, iou, torch._shape_as_tensor(point_coords)[1])
        return self._postprocess(low, orig_im_size), iou, low


class Sam2DecoderGraph(nn.Module):
    """samexporter's SAM 2 decoder contract (AnyLabeling reads it).

    Inputs: ``image_embed`` 1 x C x h x w, ``high_res_feats_0`` 1 x C/8 x 4h x 4w,
    ``high_res_feats_1`` 1 x C/4 x 2h x 2w (not for models without high-res features:
    EfficientTAM), ``point_coords`` N x P x 2 float32 (x, y) in the S x S model frame, box corners
    first (labels 2, 3) then the clicks, ``point_labels`` N x P float32, ``mask_input``
    M x 1 x 4h x 4w, ``has_mask_input`` (M,). A padding point is appended inside (none when
    there are no points: a mask-only prompt, as in SAM 2's predictor). Outputs:
    ``masks`` N x 4 x 4h x 4w low-res logits, ``iou_predictions`` N x 4."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.high_res = bool(model.use_high_res_features)

    def forward(self, image_embed, *rest):
        high_res, point_labels, sparse, dense = sam2_prompt_inputs(self.model, self.high_res, rest)
        # SAM 2 pads only a non-empty prompt list (a mask alone has no sparse token): keep P + min(P, 1)
        p = torch._shape_as_tensor(point_labels)[1]
        sparse = torch.index_select(sparse, 1, torch.arange(p + torch.clamp(p, max=1)))
        low, iou, _, _ = self.model.mask_decoder._predict(image_embed, self.model.prompt_encoder.get_dense_pe(),
                                                          sparse, dense, None, high_res)
        return low, iou


# ----------------------------------------------------------------------------- specs
@dataclass
class GraphPlan:
    """One graph to trace: the module, example inputs (name -> tensor), output names and the
    dynamic axes (name -> {axis: symbol})."""

    role: str
    module: nn.Module
    inputs: Dict[str, torch.Tensor]
    outputs: List[str]
    dynamic_axes: Dict[str, Dict[int, str]]


def encoder_plan(model: nn.Module, layout: str) -> GraphPlan:
    """The image-encoder graph of ``model`` with a random example input."""
    s = int(model.image_size)
    gen = torch.Generator().manual_seed(0)
    dev = next(model.parameters()).device
    if layout == "sam":
        h = max(1, (s * 3) // 4)  # a landscape example: the padding path is exercised and checked
        x = (torch.rand(h, s, 3, generator=gen) * 255.0).to(dev)
        return GraphPlan("image_encoder", SamEncoderGraph(model).eval(), {"input_image": x}, ["image_embeddings"],
                         {"input_image": {0: "image_height", 1: "image_width"}})
    x = torch.randn(1, 3, s, s, generator=gen).to(dev)
    if layout == "efficient_sam":
        outs = ["image_embeddings"]
    elif model.use_high_res_features:
        outs = ["high_res_feats_0", "high_res_feats_1", "image_embed"]
    else:
        outs = ["image_embed"]
    return GraphPlan("image_encoder", StretchEncoderGraph(model).eval(), {"image": x}, outs, {})


def decoder_plan(model: nn.Module, layout: str, features: Tuple[torch.Tensor, ...],
                 single_mask: bool = False) -> GraphPlan:
    """The prompt-decoder graph with example prompts (2 prompts of 3 points, one a padding point;
    a mask input that is used) on the encoder outputs ``features`` (in the encoder's output order)."""
    s = int(model.image_size)
    gh, gw = model.prompt_encoder.image_embedding_size
    gen = torch.Generator().manual_seed(1)
    dev = features[-1].device
    coords = (torch.rand(2, 3, 2, generator=gen) * s).to(dev)
    labels = torch.tensor([[1.0, 0.0, -1.0], [2.0, 3.0, 1.0]], device=dev)
    mask = torch.randn(1, 1, 4 * gh, 4 * gw, generator=gen).to(dev)
    has = torch.ones(1, device=dev)
    prompt_axes = {"point_coords": {0: "num_prompts", 1: "num_points"},
                   "point_labels": {0: "num_prompts", 1: "num_points"},
                   "mask_input": {0: "num_mask_inputs"}, "has_mask_input": {0: "num_mask_inputs"}}
    if layout == "sam2":
        names = ["high_res_feats_0", "high_res_feats_1", "image_embed"][-len(features):]
        inputs = {"image_embed": features[-1]}
        inputs.update({n: f for n, f in zip(names[:-1], features[:-1])})
        inputs.update(point_coords=coords, point_labels=labels, mask_input=mask, has_mask_input=has)
        axes = dict(prompt_axes, masks={0: "num_prompts"}, iou_predictions={0: "num_prompts"})
        return GraphPlan("prompt_decoder", Sam2DecoderGraph(model).eval(), inputs, ["masks", "iou_predictions"], axes)
    orig = torch.tensor([float(s * 3 // 4 - 5), float(s - 9)], device=dev)
    inputs = {"image_embeddings": features[-1], "point_coords": coords, "point_labels": labels, "mask_input": mask,
              "has_mask_input": has, "orig_im_size": orig}
    axes = dict(prompt_axes, masks={0: "num_prompts", 2: "height", 3: "width"}, iou_predictions={0: "num_prompts"},
                low_res_masks={0: "num_prompts"})
    module = SamDecoderGraph(model, efficient=layout == "efficient_sam", single_mask=single_mask)
    return GraphPlan("prompt_decoder", module.eval(), inputs,
                     ["masks", "iou_predictions", "low_res_masks"], axes)
