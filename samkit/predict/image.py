"""``ImagePredictor``: encode an image once, decode many prompts cheaply.

```python
from samkit import load_model, ImagePredictor
predictor = ImagePredictor(load_model("sam_vit_b", checkpoint="sam_vit_b_01ec64.pth"))
predictor.set_image(image)            # H x W x 3 uint8 RGB array, PIL image or path
out = predictor.predict(points=[[x, y]], labels=[1], multimask=True)
out.masks, out.scores, out.low_res_logits    # K x H x W bool, (K,), K x 256 x 256
```
All prompt coordinates are (x, y) pixels of the original (upright) image; boxes are
x0, y0, x1, y1 in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..io.image import load_image
from ..masks import Masks
from ..models.base import ImageFeatures, ImageTransform

SELECTIONS = ("native", "iou", "stability")


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """IoU of the masks at ``threshold + offset`` and ``threshold - offset``. ``... x H x W -> ...``."""
    inter = (logits > threshold + offset).flatten(-2).sum(-1, dtype=torch.int32).float()
    union = (logits > threshold - offset).flatten(-2).sum(-1, dtype=torch.int32).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


@dataclass
class _Encoded:
    image: np.ndarray
    features: Optional[ImageFeatures]
    transform: Optional[ImageTransform]


def _as_array(value: Any, name: str, dtype) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric, got {value!r}. Fix: pass a list or array of numbers.") from exc


def validate_prompts(points, labels, box, size_hw, *, batched: bool = False):
    """Check and convert prompts. Returns (points N x 2 float32 | None, labels N int32 | None,
    box 4 float32 | None); with ``batched`` the leading axis is the prompt batch."""
    h, w = size_hw
    lead = (-1,) if batched else ()
    pts = lab = bx = None
    if points is not None:
        pts = _as_array(points, "points", np.float32)
        if pts.ndim != len(lead) + 2 or pts.shape[-1] != 2:
            want = "N x P x 2" if batched else "N x 2 ([[x, y], ...])"
            raise InputError(f"points must have shape {want}, got {pts.shape}. Fix: give (x, y) pixel pairs.")
        if labels is None:
            raise InputError("points were given without labels. Fix: pass labels=[1, ...] (1 foreground, 0 background).")
        lab = _as_array(labels, "labels", np.float64)
        if lab.shape != pts.shape[:-1]:
            raise InputError(f"labels shape {lab.shape} does not match points {pts.shape[:-1]}. "
                             "Fix: give one label per point.")
        if not np.all(np.isin(lab, (0, 1))):
            raise InputError("labels must be 1 (foreground) or 0 (background). Fix: use only 0 and 1.")
        lab = lab.astype(np.int32)
        if not np.all(np.isfinite(pts)):
            raise InputError("points contain NaN or infinity. Fix: pass finite pixel coordinates.")
        bad = (pts[..., 0] < 0) | (pts[..., 0] > w) | (pts[..., 1] < 0) | (pts[..., 1] > h)
        if bad.any():
            first = pts[bad][0].tolist()
            raise InputError(f"point {first} lies outside the image ({w} x {h}, width x height). "
                             "Fix: points are (x, y) pixels of the original image, x in [0, W], y in [0, H].")
    elif labels is not None:
        raise InputError("labels were given without points. Fix: pass points=[[x, y], ...] too.")
    if box is not None:
        bx = _as_array(box, "box", np.float32)
        if bx.shape[-1:] != (4,) or bx.ndim != len(lead) + 1:
            want = "N x 4" if batched else "(4,) [x0, y0, x1, y1]"
            raise InputError(f"box must have shape {want}, got {bx.shape}. Fix: give x0, y0, x1, y1 in pixels.")
        if not np.all(np.isfinite(bx)):
            raise InputError("box contains NaN or infinity. Fix: pass finite pixel coordinates.")
        if np.any(bx[..., 2] <= bx[..., 0]) or np.any(bx[..., 3] <= bx[..., 1]):
            raise InputError(f"box {bx.tolist()} is inverted or empty: x1 must exceed x0 and y1 must exceed y0. "
                             "Fix: order it as x0, y0, x1, y1 (top-left, bottom-right).")
        if np.any(bx[..., :2] < 0) or np.any(bx[..., 2] > w) or np.any(bx[..., 3] > h):
            raise InputError(f"box {bx.tolist()} extends outside the image ({w} x {h}). "
                             "Fix: clip the box to [0, W] x [0, H] in pixels of the original image.")
    return pts, lab, bx


class ImagePredictor:
    """Prompted segmentation on one image at a time with any samkit model.

    ``selection`` decides which mask is returned when one mask is asked for
    (``multimask=False``): ``"native"`` the model's own single-mask output (SAM's token 0,
    SAM 2's stability fallback), ``"iou"`` the candidate with the highest predicted IoU,
    ``"stability"`` the candidate with the highest stability score (EdgeSAM's advice: its IoU
    head was not distilled). Default: the model's ``default_selection``.
    """

    def __init__(self, model, selection: Optional[str] = None, stability_offset: float = 1.0) -> None:
        self.model = model
        self.neural = getattr(getattr(model, "spec", None), "neural", True) and hasattr(model, "encode")
        selection = selection or getattr(model, "default_selection", "native")
        if selection not in SELECTIONS:
            raise InputError(f"unknown selection {selection!r}. Fix: use one of {', '.join(SELECTIONS)}.")
        self.selection = selection
        self.stability_offset = stability_offset
        self._state: Optional[_Encoded] = None

    # ------------------------------------------------------------------ image
    def set_image(self, image) -> "ImagePredictor":
        """Load (path, PIL image or H x W x 3 uint8 array) and encode once."""
        img = load_image(image)
        if not self.neural:
            self._state = _Encoded(img, None, None)
            return self
        with torch.inference_mode():
            x, transform = self.model.preprocess(img)
            features = self.model.encode(x)
        self._state = _Encoded(img, features, transform)
        return self

    def reset_image(self) -> None:
        self._state = None

    @property
    def image_size(self):
        """(H, W) of the current image."""
        return None if self._state is None else self._state.image.shape[:2]

    @property
    def features(self) -> ImageFeatures:
        return self._require().features

    def _require(self) -> _Encoded:
        if self._state is None:
            raise InputError("no image is set. Fix: call predictor.set_image(image) before predict().")
        return self._state

    # ------------------------------------------------------------------ prompts
    def _mask_input(self, mask_input, batch: int) -> Optional[torch.Tensor]:
        if mask_input is None:
            return None
        if not getattr(self.model, "supports_mask_input", True):
            raise InputError(f"{type(self.model).__name__} takes no mask_input. Fix: prompt with points/boxes only.")
        m = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
        if m.ndim == 2:
            m = m[None]
        if m.ndim == 3:
            m = m[:, None]
        size = tuple(getattr(self.model, "mask_input_size", (256, 256)))
        if m.ndim != 4 or tuple(m.shape[1:]) != (1, *size) or m.shape[0] not in (1, batch):
            raise InputError(f"mask_input must be 1 x {size[0]} x {size[1]} low-res logits (as returned in "
                             f"out.low_res_logits), got shape {tuple(np.shape(mask_input))}. "
                             "Fix: pass out.low_res_logits[best][None] from a previous predict().")
        return m.expand(batch, -1, -1, -1).to(self.model.device)

    def predict(self, points: Optional[Sequence] = None, labels: Optional[Sequence] = None,
                box: Optional[Sequence] = None, mask_input=None, multimask: bool = True) -> Masks:
        """Points N x 2 (x, y) with labels N (1 fg / 0 bg), box (4,) xyxy pixels, mask_input
        1 x 256 x 256 logits from a previous call. Returns ``Masks`` with K = 3 (multimask) or 1."""
        state = self._require()
        pts, lab, bx = validate_prompts(points, labels, box, state.image.shape[:2])
        if pts is None and bx is None and mask_input is None:
            raise InputError("no prompt given. Fix: pass points=[[x, y]] with labels=[1], or box=[x0, y0, x1, y1].")
        if not self.neural:
            return self.model.predict_image(state.image, pts, lab, bx, mask_input, multimask)
        return self._decode(pts[None] if pts is not None else None, lab[None] if lab is not None else None,
                            bx[None] if bx is not None else None, self._mask_input(mask_input, 1), multimask)[0]

    def predict_batch(self, boxes=None, points=None, labels=None, multimask: bool = False,
                      mask_input=None) -> List[Masks]:
        """Many prompts in one decoder call: boxes N x 4, points N x P x 2, labels N x P
        (either or both; equal N). Returns N ``Masks``."""
        state = self._require()
        pts, lab, bx = validate_prompts(points, labels, boxes, state.image.shape[:2], batched=True)
        sizes = {a.shape[0] for a in (pts, bx) if a is not None}
        if not sizes:
            raise InputError("predict_batch needs boxes and/or points. Fix: pass boxes=N x 4 or points=N x P x 2.")
        if len(sizes) > 1:
            raise InputError(f"boxes and points have different batch sizes {sorted(sizes)}. Fix: one row per prompt.")
        n = sizes.pop()
        if not self.neural:
            return [self.model.predict_image(state.image, None if pts is None else pts[i],
                                             None if lab is None else lab[i], None if bx is None else bx[i],
                                             None, multimask) for i in range(n)]
        return self._decode(pts, lab, bx, self._mask_input(mask_input, n), multimask)

    # ------------------------------------------------------------------ decoding
    def predict_torch(self, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                      boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor], multimask):
        """Tensor-level decode with prompts already in model-frame coordinates (B x N x 2, B x N,
        B x 4, B x 1 x 256 x 256). Returns (low-res logits B x K x 256 x 256, iou B x K)."""
        state = self._require()
        with torch.inference_mode():
            out = self.model.decode(state.features, points, labels, boxes, mask_input, multimask)
        return out.low_res, out.iou

    def _decode(self, pts, lab, bx, mask_input, multimask: bool) -> List[Masks]:
        state = self._require()
        t, dev = state.transform, self.model.device
        # scale in float64 then cast, as the official transforms do
        p = t.coords_to_frame(torch.from_numpy(pts.astype(np.float64))).float().to(dev) if pts is not None else None
        lb = torch.from_numpy(lab).to(dev) if lab is not None else None
        b = t.boxes_to_frame(torch.from_numpy(bx.astype(np.float64))).float().to(dev) if bx is not None else None
        select = None if multimask or self.selection == "native" else self.selection
        low, iou = self.predict_torch(p, lb, b, mask_input, "all" if select else multimask)
        stab = stability_score(low, self.model.mask_threshold, self.stability_offset)
        if select:
            key = stab if select == "stability" else iou
            idx = key.argmax(dim=1, keepdim=True)
            low = torch.gather(low, 1, idx[..., None, None].expand(-1, -1, *low.shape[-2:]))
            iou, stab = torch.gather(iou, 1, idx), torch.gather(stab, 1, idx)
        with torch.inference_mode():
            full = self.model.postprocess(low, t) > self.model.mask_threshold
        out = []
        for i in range(low.shape[0]):
            out.append(Masks(masks=full[i].cpu().numpy(), scores=iou[i].float().cpu().numpy(),
                             low_res_logits=low[i].float().cpu().numpy(), stability=stab[i].cpu().numpy()))
        return out
