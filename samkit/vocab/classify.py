"""Name masks: mask-pooled dense CLIP features against a vocabulary's text embeddings.

The one implementation behind ``Masks.classify``, ``AutoMaskGenerator(vocabulary=...)`` and the
re-scoring of text predictions (``ImagePredictor.predict(text=...)``).

Mask pooling runs at the dense grid's resolution: each H x W mask is reduced to the h x w grid
by area averaging (``adaptive_avg_pool2d``: the weight of a cell is the fraction of its pixels
inside the mask, cells as defined in ``samkit.vocab.base``), the features are averaged with
those weights and L2-normalised. A mask smaller than a cell still weighs the cells it touches.
The pooled embedding is compared with the K class embeddings (cosine) and a softmax with the
temperature (default 0.01, CLIP's logit scale 100) gives class probabilities: the label is the
most probable class and its probability is ``label_score``. An empty mask has no features: its
label is ``""`` and its score 0.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .heatmap import TEMPERATURE, check_temperature

POOL_CHUNK = 16  # masks reduced to the grid at a time (bounds the float copy of the masks)


def mask_weights(masks: Any, grid_hw: Sequence[int]) -> torch.Tensor:
    """K x H x W bool masks -> K x h x w float32 cell weights (fraction of each cell inside)."""
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.dim() != 3:
        raise InputError(f"masks must be K x H x W, got shape {tuple(m.shape)}. Fix: pass Masks.masks.")
    parts = [F.adaptive_avg_pool2d(m[s : s + POOL_CHUNK].float()[None], tuple(grid_hw))[0]
             for s in range(0, m.shape[0], POOL_CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0, *grid_hw)


def pool(features: torch.Tensor, masks: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """D x h x w features, K x H x W masks -> (K x D pooled, L2-normalised; (K,) bool non-empty)."""
    d, h, w = features.shape
    wts = mask_weights(masks, (h, w)).reshape(-1, h * w)
    total = wts.sum(1)
    pooled = wts @ features.reshape(d, -1).T.float()
    nonempty = total > 0
    pooled = F.normalize(pooled / total.clamp(min=1e-12)[:, None], dim=-1) * nonempty[:, None]
    return pooled, nonempty


def class_probabilities(features: torch.Tensor, masks: Any, embeddings: torch.Tensor,
                        temperature: float = TEMPERATURE) -> Tuple[torch.Tensor, torch.Tensor]:
    """(K x C probabilities of the C classes per mask, (K,) bool non-empty); rows of empty masks are 0."""
    t = check_temperature(temperature)
    pooled, nonempty = pool(features, masks)
    if embeddings.shape[1] != pooled.shape[1]:
        raise InputError(f"text embeddings have width {embeddings.shape[1]} but the dense features "
                         f"{pooled.shape[1]}. Fix: use one CLIP for both.")
    probs = torch.softmax(pooled @ embeddings.float().T / t, dim=1) * nonempty[:, None]
    return probs, nonempty


def dense_features_of(clip, image, dim: int, features: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The checked D x h x w dense features of ``image`` (computed unless ``features`` is given)."""
    from .base import check_dense_output

    if features is None:
        with torch.inference_mode():
            features = clip.dense_features(image)
    return check_dense_output(features, dim, type(clip).__name__)


def classify_masks(clip, image, masks: Any, vocabulary: Any, *, features: Optional[torch.Tensor] = None,
                   templates: Optional[Sequence[str]] = None, temperature: float = TEMPERATURE,
                   embeddings: Optional[torch.Tensor] = None) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Name K masks of ``image`` with ``vocabulary`` (anything ``load_vocabulary`` takes).

    Returns (labels: K str, label_scores: (K,) float32, probabilities: K x C float32).
    ``features``: the DenseClip's features of ``image`` if already computed; ``embeddings``:
    the vocabulary's C x D text embeddings if already computed."""
    from ..io.image import load_image
    from .base import check_dense_clip
    from .embeddings import text_embeddings
    from .vocabularies import load_vocabulary

    clip = check_dense_clip(clip)
    vocab = load_vocabulary(vocabulary)
    img = load_image(image)
    m = np.asarray(masks)
    if m.ndim != 3 or m.shape[1:] != img.shape[:2]:
        raise InputError(f"masks of shape {m.shape} do not fit the {img.shape[1]} x {img.shape[0]} image. "
                         "Fix: classify masks with the image they were predicted on.")
    emb = text_embeddings(clip, vocab.names, templates) if embeddings is None else embeddings
    feats = dense_features_of(clip, img, emb.shape[1], features)
    probs, nonempty = class_probabilities(feats, m, emb, temperature)
    best = probs.argmax(1) if len(vocab) else torch.zeros(0, dtype=torch.int64)
    scores = probs.gather(1, best[:, None])[:, 0] if probs.shape[0] else torch.zeros(0)
    labels = [vocab.names[int(b)] if ok else "" for b, ok in zip(best, nonempty)]
    return labels, scores.numpy().astype(np.float32), probs.numpy().astype(np.float32)


def classify(masks, vocabulary: Any, clip, image, **options):
    """``Masks`` -> the same masks with ``labels`` and ``label_scores`` from ``vocabulary``
    (see ``classify_masks`` for the options)."""
    import dataclasses

    labels, scores, _ = classify_masks(clip, image, masks.masks, vocabulary, **options)
    return dataclasses.replace(masks, labels=labels, label_scores=scores)
