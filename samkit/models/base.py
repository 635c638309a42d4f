"""The contract every promptable image model of samkit fulfils.

A model turns one HxWx3 uint8 image into a model-frame tensor (``preprocess``), encodes a
batch of such tensors once (``encode``), decodes any number of prompts against the
features cheaply (``decode``) and maps low-resolution logits back to the original image
(``postprocess``). ``ImagePredictor`` only talks to this interface, so every family
(SAM, MobileSAM, EdgeSAM, EfficientSAM, SAM 2, EfficientTAM, EdgeTAM) plugs in by
configuring the shared heads and choosing one of the preprocessing rules below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..ops.resample import resample, resample_mask


@dataclass(frozen=True)
class ImageTransform:
    """Geometry between an original image and the square model frame.

    ``original_size`` (H, W) of the user's image; ``input_size`` (h, w) of the resized image
    inside the ``frame`` x ``frame`` model input (the rest is zero padding, if any).
    """

    original_size: Tuple[int, int]
    input_size: Tuple[int, int]
    frame: int

    def coords_to_frame(self, xy: torch.Tensor) -> torch.Tensor:
        """``... x 2`` (x, y) pixel coordinates of the original image -> model frame."""
        h, w = self.original_size
        nh, nw = self.input_size
        scale = torch.tensor([nw / w, nh / h], dtype=xy.dtype, device=xy.device)
        return xy * scale

    def boxes_to_frame(self, boxes: torch.Tensor) -> torch.Tensor:
        """``... x 4`` xyxy boxes in original pixels -> model frame."""
        return self.coords_to_frame(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)


@dataclass
class ImageFeatures:
    """Encoder output for a batch of B images.

    ``embed``: B x C x h x w (SAM: 256 x 64 x 64). ``high_res``: SAM 2-family decoder inputs,
    finest first (B x 32 x 256 x 256, B x 64 x 128 x 128), or None.
    """

    embed: torch.Tensor
    high_res: Optional[Tuple[torch.Tensor, ...]] = None
    #: decoder work that depends only on this image (filled lazily by the mask decoder)
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def select(self, index: int) -> "ImageFeatures":
        hr = None if self.high_res is None else tuple(t[index : index + 1] for t in self.high_res)
        return ImageFeatures(self.embed[index : index + 1], hr)


@dataclass
class DecoderOutput:
    """``low_res``: B x K x 256 x 256 logits; ``iou``: B x K predicted IoU;
    ``object_score``: B x 1 logits (SAM 2 family) or None. Models that name their masks
    (Open-Vocabulary SAM) add ``label_ids`` B x K long (indices into ``model.label_names``) and
    ``label_scores`` B x K float32 (the probability of that label)."""

    low_res: torch.Tensor
    iou: torch.Tensor
    object_score: Optional[torch.Tensor] = None
    tokens: Optional[torch.Tensor] = None
    label_ids: Optional[torch.Tensor] = None
    label_scores: Optional[torch.Tensor] = None


# --------------------------------------------------------------------------- preprocessing
def resize_longest_side_pil(image: np.ndarray, target: int) -> np.ndarray:
    """SAM's rule: scale the longest side to ``target`` (``int(s * scale + 0.5)``), PIL bilinear on uint8."""
    h, w = image.shape[:2]
    scale = target / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))


def preprocess_longest_side(image: np.ndarray, frame: int, mean: Sequence[float], std: Sequence[float],
                            device: torch.device) -> tuple[torch.Tensor, ImageTransform]:
    """SAM / MobileSAM / EdgeSAM: resize longest side, normalise in 0..255 units, pad bottom/right."""
    resized = resize_longest_side_pil(image, frame)
    x = torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).to(device).permute(2, 0, 1).float()
    m = torch.tensor(mean, device=device).view(3, 1, 1)
    s = torch.tensor(std, device=device).view(3, 1, 1)
    x = (x - m) / s
    nh, nw = x.shape[-2:]
    x = F.pad(x, (0, frame - nw, 0, frame - nh))
    return x[None], ImageTransform(tuple(image.shape[:2]), (int(nh), int(nw)), frame)


def preprocess_stretch(image: np.ndarray, frame: int, mean: Sequence[float], std: Sequence[float],
                       device: torch.device, antialias: bool = True) -> tuple[torch.Tensor, ImageTransform]:
    """SAM 2 family (antialias=True) and EfficientSAM (antialias=False): to [0, 1], bilinear
    resize to ``frame`` x ``frame`` without keeping the aspect ratio, normalise."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device).permute(2, 0, 1).float()[None] / 255.0
    x = F.interpolate(x, (frame, frame), mode="bilinear", align_corners=False, antialias=antialias)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (x - m) / s, ImageTransform(tuple(image.shape[:2]), (frame, frame), frame)


#: postprocessing by banded products (``samkit.ops.resample``); False: the ``F.interpolate``
#: steps themselves (kept reachable for benchmarks and tests)
BANDED_POSTPROCESS = True


def postprocess_crop_upscale(low_res: torch.Tensor, t: ImageTransform) -> torch.Tensor:
    """SAM rule: upsample to the frame, crop the padding, upsample to the original size
    (``B x K x h x w`` -> ``B x K x H x W`` logits). Both steps are linear per axis, so they run as
    one banded product per axis (``samkit.ops.resample``: same values up to float rounding)."""
    if BANDED_POSTPROCESS:
        return resample(low_res, t.original_size, "bilinear", frame=t.frame, valid=t.input_size)
    lh, lw = low_res.shape[-2:]
    factor = t.frame // lh
    if factor * lh == t.frame and factor * lw == t.frame:
        # only the un-padded part: with an integer factor, output row i reads source rows near
        # (i + 0.5) / factor - 0.5, so the first h rows need source rows < ceil(h / factor) + 1
        rows = min(lh, -(-t.input_size[0] // factor) + 1)
        cols = min(lw, -(-t.input_size[1] // factor) + 1)
        x = F.interpolate(low_res[..., :rows, :cols], scale_factor=factor, mode="bilinear", align_corners=False)
    else:
        x = F.interpolate(low_res, (t.frame, t.frame), mode="bilinear", align_corners=False)
    x = x[..., : t.input_size[0], : t.input_size[1]]
    return F.interpolate(x, t.original_size, mode="bilinear", align_corners=False)


def postprocess_direct(low_res: torch.Tensor, t: ImageTransform, mode: str = "bilinear") -> torch.Tensor:
    """SAM 2 family (bilinear) and EfficientSAM (bicubic): straight to the original size."""
    if BANDED_POSTPROCESS:
        return resample(low_res, t.original_size, mode)
    return F.interpolate(low_res, t.original_size, mode=mode, align_corners=False)


def masks_of(low_res: torch.Tensor, t: ImageTransform, threshold: float, mode: str = "bilinear",
             crop: bool = False) -> torch.Tensor:
    """Full-resolution bool masks ``postprocess(low_res) > threshold`` (``crop``: SAM's rule,
    else straight to the original size), bilinear ones interpolated only along the masks'
    boundaries when the threshold is 0 (``samkit.ops.resample.resample_mask``)."""
    frame, valid = (t.frame, t.input_size) if crop else (None, None)
    if not BANDED_POSTPROCESS:
        return (postprocess_crop_upscale(low_res, t) if crop else postprocess_direct(low_res, t, mode)) > threshold
    if threshold == 0.0 and mode == "bilinear":  # bicubic's negative lobes leave too many tiles in doubt
        return resample_mask(low_res, t.original_size, mode, frame=frame, valid=valid)
    return resample(low_res, t.original_size, mode, frame=frame, valid=valid) > threshold


class PromptableModel(nn.Module):
    """Base class of neural image models. Subclasses set the attributes and implement
    ``preprocess``, ``encode``, ``decode`` and ``postprocess``.

    Attributes: ``image_size`` (model frame side), ``mask_threshold`` (logit threshold),
    ``supports_mask_input``, ``default_selection`` ("native", "iou" or "stability": how a single mask is
    chosen when the caller asks for one), ``spec`` (set by ``load_model``).
    """

    image_size: int = 1024
    mask_threshold: float = 0.0
    supports_mask_input: bool = True
    default_selection: str = "native"
    spec = None

    @property
    def mask_input_size(self) -> Tuple[int, int]:
        """(h, w) of the low-res logits accepted as ``mask_input`` (4x the embedding grid)."""
        pe = getattr(self, "prompt_encoder", None)
        return tuple(pe.mask_input_size) if pe is not None else (256, 256)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, ImageTransform]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> ImageFeatures:
        raise NotImplementedError

    def decode(self, features: ImageFeatures, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
               boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor], multimask: bool) -> DecoderOutput:
        """Prompts are in model-frame coordinates: points B x N x 2, labels B x N (1 fg, 0 bg,
        -1 padding), boxes B x 4 xyxy, mask_input B x 1 x 256 x 256 logits. ``features`` has
        batch 1 (broadcast over the B prompts) or B."""
        raise NotImplementedError

    def postprocess(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        raise NotImplementedError

    def postprocess_masks(self, low_res: torch.Tensor, transform: ImageTransform) -> torch.Tensor:
        """``B x K x h x w`` logits -> ``B x K x H x W`` bool masks (``postprocess > mask_threshold``;
        families override it with the same function computed along the boundaries only)."""
        return self.postprocess(low_res, transform) > self.mask_threshold
