"""Text -> masks for ``ImagePredictor.predict(text=...)`` / ``predict_batch(texts=[...])``.

One API for text across samkit:

* **Native text.** A model that understands text itself (SAM 3, planned) defines
  ``predict_text(image, texts, features=None, transform=None) -> List[Masks]``: ``image`` the
  H x W x 3 uint8 image, ``texts`` the N checked strings, ``features`` / ``transform`` what its
  ``preprocess`` / ``encode`` gave in ``set_image`` (None for non-neural models). It returns one
  ``Masks`` per text, with ``labels`` (set to the text when left None) and ``label_scores``
  (set to ``scores`` when left None). Such a model is used even when a CLIP is attached.
* **Any other model, through a CLIP** (``ImagePredictor(model, clip=DenseClip)``):

  1. the texts and the background classes (``samkit.vocab.heatmap.BACKGROUND`` unless
     ``background=`` says otherwise) are embedded with the prompt ensemble
     (``samkit.vocab.embeddings``) and compared with the CLIP's dense features of the image:
     one probability map per text (``samkit.vocab.heatmap``; ``denoise=`` is MaskCLIP's prompt
     denoising);
  2. each map's peaks become instances, one positive point plus a box each
     (``samkit.vocab.text_prompts``: threshold, connected components, at most ``max_instances``);
  3. all instances of all texts are decoded in ONE ``predict_batch`` call (the predictor's
     batched decode: every image family, one decoder path; ``classic`` runs GrabCut per prompt);
  4. re-scoring: every candidate mask is named by mask-pooled CLIP features
     (``samkit.vocab.classify``) against the same classes; ``label_score`` is the probability
     of the instance's text. With ``multimask=True`` the candidate with the highest
     ``label_score x predicted IoU`` is kept, with ``multimask=False`` the predictor's single mask;
  5. per text: empty masks are dropped, duplicates removed (mask IoU above ``nms_thresh`` keeps
     the higher label score) and the masks sorted by label score, best first.

A text that is not found gives an empty ``Masks`` (K = 0, ``labels == []``).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from ..masks import Masks
from .heatmap import TEMPERATURE
from .text_prompts import MAX_INSTANCES, MIN_AREA, THRESHOLD
from .vocabularies import check_texts  # noqa: F401 (re-exported: the text checks live with the names)

NMS_THRESH = 0.7


def no_clip_error(model: Any) -> InputError:
    name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
    return InputError(f"a text prompt needs a CLIP: the model {name!r} has no text encoder of its own and no CLIP "
                      "is attached. Fix: ImagePredictor(model, clip=samkit.vocab.load_clip('clip_vit_b16')) "
                      "(command line: --clip clip_vit_b16).")


def _native(predictor, hook, texts: List[str]) -> List[Masks]:
    state = predictor._require()
    outs = list(hook(state.image, texts, features=state.features, transform=state.transform))
    if len(outs) != len(texts) or not all(isinstance(m, Masks) for m in outs):
        raise InputError(f"{type(predictor.model).__name__}.predict_text returned {len(outs)} results for "
                         f"{len(texts)} texts. Fix: the model must return one Masks per text.")
    fixed = []
    for text, m in zip(texts, outs):
        labels = m.labels if m.labels is not None else [text] * len(m)
        scores = m.label_scores if m.label_scores is not None else m.scores
        fixed.append(Masks(m.masks, m.scores, m.low_res_logits, m.ids, labels, m.stability, scores))
    return fixed


def _empty(h: int, w: int) -> Masks:
    return Masks(np.zeros((0, h, w), bool), np.zeros(0, np.float32), labels=[], label_scores=np.zeros(0, np.float32))


def _finish(parts: List[Masks], h: int, w: int, nms_thresh: float) -> Masks:
    """Join one text's instances, drop empty masks and duplicates, sort by label score."""
    from ..ops import mask_nms

    if not parts:
        return _empty(h, w)
    m = Masks.concatenate(parts)
    m = m[m.areas > 0]
    if len(m) > 1:
        keep = mask_nms(torch.from_numpy(m.masks), torch.from_numpy(m.label_scores), nms_thresh)
        m = m[np.sort(keep.numpy())]
    return m.sorted("label_score") if len(m) else _empty(h, w)


def predict_texts(predictor, texts: Sequence[str], multimask: bool = True, *, threshold: float = THRESHOLD,
                  max_instances: int = MAX_INSTANCES, min_area: float = MIN_AREA,
                  background: Optional[Sequence[str]] = None, templates: Optional[Sequence[str]] = None,
                  temperature: float = TEMPERATURE, denoise: Optional[float] = None,
                  nms_thresh: float = NMS_THRESH) -> List[Masks]:
    """One ``Masks`` per text on the predictor's current image (module docstring), each with
    ``labels`` (the text) and ``label_scores``."""
    from .classify import class_probabilities
    from .embeddings import text_embeddings
    from .heatmap import probabilities, query_names, similarity
    from .text_prompts import check_options, peaks_to_prompts, work_size

    state = predictor._require()
    texts = check_texts(list(texts) if isinstance(texts, (list, tuple)) else texts)
    hook = getattr(predictor.model, "predict_text", None)
    if callable(hook):
        return _native(predictor, hook, texts)
    if predictor.clip is None:
        raise no_clip_error(predictor.model)
    check_options(threshold, max_instances, min_area)
    h, w = state.image.shape[:2]
    names, n = query_names(texts, background)
    emb = text_embeddings(predictor.clip, names, templates)
    feats = predictor.clip_features(emb.shape[1])
    heat = probabilities(similarity(feats, emb), work_size((h, w)), temperature, denoise)
    found = [(j, p) for j in range(n) for p in peaks_to_prompts(heat[j], (h, w), threshold, max_instances, min_area)]
    if not found:
        return [_empty(h, w) for _ in texts]
    points = np.stack([p.point for _, p in found])[:, None, :]
    boxes = np.stack([p.box for _, p in found])
    cands = predictor.predict_batch(boxes=boxes, points=points, labels=np.ones((len(found), 1), np.int32),
                                    multimask=multimask)
    probs, _ = class_probabilities(feats, np.concatenate([c.masks for c in cands]), emb, temperature)
    parts: List[List[Masks]] = [[] for _ in texts]
    start = 0
    for (j, _), cand in zip(found, cands):
        p = probs[start : start + len(cand), j].numpy()
        start += len(cand)
        best = int(np.argmax(p * cand.scores)) if multimask else 0
        one = cand[best]
        parts[j].append(Masks(one.masks, one.scores, one.low_res_logits, None, [texts[j]], one.stability,
                              p[best : best + 1]))
    return [_finish(parts[j], h, w, nms_thresh) for j in range(len(texts))]
