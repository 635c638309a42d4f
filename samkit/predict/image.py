"""``ImagePredictor``: encode an image once, decode many prompts cheaply.

```python
from samkit import load_model, ImagePredictor
predictor = ImagePredictor(load_model("sam_vit_b", checkpoint="sam_vit_b_01ec64.pth"))
predictor.set_image(image)            # H x W x 3 uint8 RGB array, PIL image or path
out = predictor.predict(points=[[x, y]], labels=[1], multimask=True)
out.masks, out.scores, out.low_res_logits    # K x H x W bool, (K,), K x 256 x 256

predictor = ImagePredictor(model, clip=samkit.vocab.load_clip("clip_vit_b16"))
dogs = predictor.set_image(image).predict(text="dog")   # labels ["dog", ...], label_scores
```
All prompt coordinates are (x, y) pixels of the original (upright) image; boxes are
x0, y0, x1, y1 in pixels. The prompt rules (ranges, labels, shapes, errors) are those of
``samkit.prompts``; the stability score is ``samkit.ops.stability_score``. Text prompts
(``text=`` / ``texts=``) are answered by the model itself when it has ``predict_text``, else
through the attached CLIP (``samkit.vocab.text_predict`` documents both). Exemplar boxes
(``exemplars=`` / ``exemplar_labels=``, checked by ``samkit.prompts.check_exemplars``) go to
the model's ``predict_exemplars(image, boxes, labels, text=None, features=None,
transform=None) -> Masks`` (SAM 3).
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
from ..ops.mask_ops import stability_score
from ..prompts import check_mask_input, check_prompt, require_prompt

SELECTIONS = ("native", "iou", "stability")


@dataclass
class _Encoded:
    image: np.ndarray
    features: Optional[ImageFeatures]
    transform: Optional[ImageTransform]
    clip_features: Optional[torch.Tensor] = None  # D x h x w, computed on the first text prompt


class ImagePredictor:
    """Prompted segmentation on one image at a time with any samkit model.

    ``selection`` decides which mask is returned when one mask is asked for
    (``multimask=False``): ``"native"`` the model's own single-mask output (SAM's token 0,
    SAM 2's stability fallback), ``"iou"`` the candidate with the highest predicted IoU,
    ``"stability"`` the candidate with the highest stability score (EdgeSAM's advice: its IoU
    head was not distilled). Default: the model's ``default_selection``.

    ``clip``: a ``samkit.vocab.DenseClip`` (e.g. ``samkit.vocab.load_clip("clip_vit_b16")``) for
    text prompts with models that have no text encoder of their own.
    """

    def __init__(self, model, selection: Optional[str] = None, stability_offset: float = 1.0,
                 clip: Any = None) -> None:
        if clip is not None:
            from ..vocab.base import check_dense_clip

            clip = check_dense_clip(clip)
        self.clip = clip
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

    def clip_features(self, dim: Optional[int] = None) -> torch.Tensor:
        """The attached CLIP's D x h x w dense features of the current image (computed once per
        image); ``dim``: the expected D (checked)."""
        from ..vocab.text_predict import no_clip_error

        state = self._require()
        if self.clip is None:
            raise no_clip_error(self.model)
        if state.clip_features is None:
            from ..vocab.classify import dense_features_of

            probe = dim if dim is not None else int(self.clip.encode_text(["a photo."]).shape[1])
            state.clip_features = dense_features_of(self.clip, state.image, probe)
        elif dim is not None and state.clip_features.shape[0] != dim:
            from ..vocab.base import check_dense_output

            check_dense_output(state.clip_features, dim, type(self.clip).__name__)
        return state.clip_features

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
        """``mask_input`` (see ``samkit.prompts``) -> ``batch`` x 1 x h x w tensor on the model's device."""
        if mask_input is None:
            return None
        if not getattr(self.model, "supports_mask_input", True):
            raise InputError(f"{type(self.model).__name__} takes no mask_input. Fix: prompt with points/boxes only.")
        size = tuple(getattr(self.model, "mask_input_size", (256, 256)))
        m = torch.from_numpy(check_mask_input(mask_input, size, batch=batch))
        return m.expand(batch, -1, -1, -1).to(self.model.device)

    def predict(self, points: Optional[Sequence] = None, labels: Optional[Sequence] = None,
                box: Optional[Sequence] = None, mask_input=None, multimask: bool = True,
                text: Optional[str] = None, exemplars: Optional[Sequence] = None,
                exemplar_labels: Optional[Sequence] = None, **text_options: Any) -> Masks:
        """Points N x 2 (x, y) with labels N (1 fg / 0 bg), box (4,) xyxy pixels, mask_input
        1 x 256 x 256 logits from a previous call. Returns ``Masks`` with K = 3 (multimask) or 1.

        ``text="dog"`` instead finds every instance of the text: one mask each (K >= 0), best
        label score first, ``labels`` = the text, ``label_scores`` its mask-pooled CLIP
        probability; ``text_options`` (threshold, max_instances, min_area, background,
        templates, temperature, denoise, nms_thresh) as in ``samkit.vocab.text_predict``.

        ``exemplars=[[x0, y0, x1, y1], ...]`` (with ``exemplar_labels``, 1 positive / 0 negative,
        default all 1, and optionally ``text``) finds every instance like the boxes: models
        with concept prompts only (SAM 3); one mask per instance, best first."""
        if exemplars is not None or exemplar_labels is not None:
            return self._predict_exemplars(text, exemplars, exemplar_labels, (points, labels, box, mask_input),
                                           text_options)
        if text is not None or text_options:
            return self._predict_text([text], points, box, mask_input, multimask, "text", text_options)[0]
        state = self._require()
        prompt = check_prompt(points, labels, box, state.image.shape[:2])
        require_prompt(prompt, mask_input)
        pts, lab, bx = prompt.points, prompt.labels, prompt.box
        if not self.neural:
            return self.model.predict_image(state.image, pts, lab, bx, mask_input, multimask)
        return self._decode(pts[None] if pts is not None else None, lab[None] if lab is not None else None,
                            bx[None] if bx is not None else None, self._mask_input(mask_input, 1), multimask)[0]

    def predict_batch(self, boxes=None, points=None, labels=None, multimask: bool = False,
                      mask_input=None, texts: Optional[Sequence[str]] = None, **text_options: Any) -> List[Masks]:
        """Many prompts in one decoder call: boxes N x 4, points N x P x 2, labels N x P
        (either or both; equal N). Returns N ``Masks``.

        ``texts=[...]`` instead: one ``Masks`` per text (as ``predict(text=...)``; the texts
        compete with each other for the pixels)."""
        if texts is not None or text_options:
            return self._predict_text(texts, points, boxes, mask_input, multimask, "texts", text_options)
        state = self._require()
        prompt = check_prompt(points, labels, boxes, state.image.shape[:2], batched=True)
        pts, lab, bx = prompt.points, prompt.labels, prompt.box
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

    def _predict_exemplars(self, text, exemplars, exemplar_labels, others: tuple, options: dict) -> Masks:
        from ..prompts import check_exemplars
        from ..vocab.text_predict import check_texts

        state = self._require()
        hook = getattr(self.model, "predict_exemplars", None)
        if not callable(hook):
            name = getattr(getattr(self.model, "spec", None), "name", type(self.model).__name__)
            raise InputError(f"the model {name!r} cannot find objects from exemplar boxes (concept prompts). Fix: "
                             "load a model with concept prompts (samkit.load_model('sam3')), or segment the one "
                             "object in a box with predict(box=[x0, y0, x1, y1]).")
        if any(v is not None for v in others) or options:
            raise InputError("exemplars cannot be combined with points, labels, box, mask_input or text options. "
                             "Fix: predict(exemplars=..., exemplar_labels=..., text=...) alone.")
        if text is not None:
            if not isinstance(text, str):
                raise InputError(f"text must be a string, got {type(text).__name__}. Fix: pass text='dog'.")
            text = check_texts([text], "text")[0]
        boxes, labels = check_exemplars(exemplars, exemplar_labels, state.image.shape[:2])
        return hook(state.image, boxes, labels, text=text, features=state.features, transform=state.transform)

    def _predict_text(self, texts, points, box, mask_input, multimask: bool, what: str, options: dict):
        from ..vocab.text_predict import check_texts, predict_texts

        if texts is None or (what == "text" and texts[0] is None):
            raise InputError(f"{', '.join(sorted(options))} only apply to text prompts. Fix: pass {what}= too, "
                             "or drop them.")
        if what == "text" and not isinstance(texts[0], str):
            raise InputError(f"text must be a string, got {type(texts[0]).__name__}. Fix: pass text='dog' "
                             "(several texts: predict_batch(texts=[...])).")
        if points is not None or box is not None or mask_input is not None:
            raise InputError(f"{what}= cannot be combined with points, boxes or mask_input: the text decides "
                             "where to prompt. Fix: predict with the text alone, then refine a mask with "
                             "predict(points=..., mask_input=out.low_res_logits[i][None]).")
        return predict_texts(self, check_texts(texts, what), multimask, **options)

    # ------------------------------------------------------------------ decoding
    def predict_torch(self, points: Optional[torch.Tensor], labels: Optional[torch.Tensor],
                      boxes: Optional[torch.Tensor], mask_input: Optional[torch.Tensor], multimask):
        """Tensor-level decode with prompts already in model-frame coordinates (B x N x 2, B x N,
        B x 4, B x 1 x 256 x 256). Returns (low-res logits B x K x 256 x 256, iou B x K)."""
        out = self.decode_torch(points, labels, boxes, mask_input, multimask)
        return out.low_res, out.iou

    def decode_torch(self, points, labels, boxes, mask_input, multimask):
        """As :meth:`predict_torch`, returning the model's whole ``DecoderOutput`` (object score,
        tokens, and for models that name their masks ``label_ids`` / ``label_scores``)."""
        state = self._require()
        with torch.inference_mode():
            return self.model.decode(state.features, points, labels, boxes, mask_input, multimask)

    def _decode(self, pts, lab, bx, mask_input, multimask: bool) -> List[Masks]:
        state = self._require()
        t, dev = state.transform, self.model.device
        # scale in float64 then cast, as the official transforms do
        p = t.coords_to_frame(torch.from_numpy(pts.astype(np.float64))).float().to(dev) if pts is not None else None
        lb = torch.from_numpy(lab).to(dev) if lab is not None else None
        b = t.boxes_to_frame(torch.from_numpy(bx.astype(np.float64))).float().to(dev) if bx is not None else None
        select = None if multimask or self.selection == "native" else self.selection
        dec = self.decode_torch(p, lb, b, mask_input, "all" if select else multimask)
        low, iou = dec.low_res, dec.iou
        # models that name their masks (Open-Vocabulary SAM): class indices into model.label_names
        names = getattr(dec, "label_ids", None), getattr(dec, "label_scores", None)
        stab = stability_score(low, self.model.mask_threshold, self.stability_offset)
        if select:
            # an empty candidate has stability 0, so "stability" picks a non-empty mask when there is one
            key = stab if select == "stability" else iou
            idx = key.argmax(dim=1, keepdim=True)
            low = torch.gather(low, 1, idx[..., None, None].expand(-1, -1, *low.shape[-2:]))
            iou, stab = torch.gather(iou, 1, idx), torch.gather(stab, 1, idx)
            names = tuple(None if v is None else torch.gather(v, 1, idx) for v in names)
        with torch.inference_mode():
            full = self.model.postprocess_masks(low, t)
        out = []
        for i in range(low.shape[0]):
            extra = {}
            if names[0] is not None:
                vocab = self.model.label_names
                extra = {"labels": [vocab[int(j)] for j in names[0][i]],
                         "label_scores": names[1][i].float().cpu().numpy()}
            out.append(Masks(masks=full[i].cpu().numpy(), scores=iou[i].float().cpu().numpy(),
                             low_res_logits=low[i].float().cpu().numpy(), stability=stab[i].cpu().numpy(), **extra))
        return out
