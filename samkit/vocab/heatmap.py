"""Text -> heat maps on the image, from a DenseClip's dense features (MaskCLIP).

For K class embeddings (``embeddings.text_embeddings``) and the D x h x w dense features:

1. cosine similarity per grid cell: ``S = E @ F`` (both L2-normalised), K x h x w;
2. bilinear upsampling of S to the wanted size (``align_corners=False``; the grid covers the
   whole image, see ``samkit.vocab.base``), K x H x W;
3. softmax over the K classes with a temperature (default 0.01, i.e. CLIP's logit scale 100
   that MaskCLIP uses): the probability of each class at each pixel.

Prompt denoising (MaskCLIP, Zhou et al. ECCV 2022, sec. 3.3; ``pd_thresh`` of the official
head): a class whose highest probability over the whole grid is below ``denoise`` (the paper
uses 0.5) is taken as absent: its logits are set to minus infinity, so it gets probability zero
everywhere and the remaining classes share the pixels it held. When every class is removed,
every probability is zero. The test runs on the grid, before upsampling, as in the official head.

Contrast for free text: a softmax over one text is 1 everywhere, so text queries are compared
against ``BACKGROUND``, the background classes MaskCLIP's demo adds to its class lists
(building, ground, grass, tree, sky), unless given otherwise. With a single class and no
background the heat map is the similarity rescaled to [0, 1] over the image.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputError

BACKGROUND: Tuple[str, ...] = ("building", "ground", "grass", "tree", "sky")
TEMPERATURE = 0.01


def similarity(features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """D x h x w features, K x D embeddings -> K x h x w cosine similarities."""
    d, h, w = features.shape
    if embeddings.dim() != 2 or embeddings.shape[1] != d:
        raise InputError(f"text embeddings have shape {tuple(embeddings.shape)} but the dense features have "
                         f"D = {d}. Fix: embed the texts with the same CLIP that gave the features.")
    return (embeddings.float() @ features.reshape(d, -1).float()).reshape(-1, h, w)


def upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """K x h x w -> K x H x W, bilinear with ``align_corners=False`` (grid cells cover the image)."""
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[None], size=size, mode="bilinear", align_corners=False)[0]


def check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not t > 0 or t != t:
        raise InputError(f"temperature must be > 0, got {temperature!r}. Fix: use 0.01 (CLIP's logit scale 100).")
    return t


def denoised_classes(grid_sims: torch.Tensor, temperature: float, denoise: Optional[float]) -> torch.Tensor:
    """(K,) bool: the classes that prompt denoising keeps (all when ``denoise`` is None or 0)."""
    k = grid_sims.shape[0]
    if not denoise:
        return torch.ones(k, dtype=torch.bool)
    if not 0.0 < float(denoise) <= 1.0:
        raise InputError(f"denoise must be in (0, 1], got {denoise!r}. Fix: use 0.5 (MaskCLIP) or None to turn it off.")
    probs = torch.softmax(grid_sims / temperature, dim=0)
    return probs.reshape(k, -1).amax(dim=1) >= float(denoise)


def probabilities(grid_sims: torch.Tensor, size: Optional[Sequence[int]] = None, temperature: float = TEMPERATURE,
                  denoise: Optional[float] = None) -> torch.Tensor:
    """K x h x w grid similarities -> K x H x W class probabilities at ``size`` (default: the
    grid), softmax over K with ``temperature``, prompt denoising on the grid (module docstring)."""
    t = check_temperature(temperature)
    keep = denoised_classes(grid_sims, t, denoise)
    sims = upsample(grid_sims, size) if size is not None else grid_sims
    if sims.shape[0] == 1:
        lo, hi = sims.amin(), sims.amax()
        return ((sims - lo) / (hi - lo)).nan_to_num(0.0) if hi > lo else torch.zeros_like(sims)
    if not keep.any():
        return torch.zeros_like(sims)
    logits = (sims / t).masked_fill(~keep[:, None, None], float("-inf"))
    return torch.softmax(logits, dim=0)


def query_names(texts: Sequence[str], background: Optional[Sequence[str]] = None) -> Tuple[list, int]:
    """(the class list: ``texts`` then the background classes not among them, number of texts)."""
    bg = BACKGROUND if background is None else tuple(background)
    low = {t.strip().lower() for t in texts}
    return list(texts) + [b for b in bg if b.strip().lower() not in low], len(texts)


def similarity_maps(clip, image, texts: Sequence[str], *, size: Optional[Sequence[int]] = None,
                    features: Optional[torch.Tensor] = None, templates: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Cosine similarity of every text's prompt ensemble with the dense features, bilinearly
    upsampled to ``size`` (default: the image's H x W): N x H x W float32 in [-1, 1]."""
    from ..io.image import load_image
    from .base import check_dense_clip, check_dense_output
    from .embeddings import text_embeddings

    clip = check_dense_clip(clip)
    img = load_image(image)
    emb = text_embeddings(clip, list(texts), templates)
    if features is None:
        with torch.inference_mode():
            features = clip.dense_features(img)
    feats = check_dense_output(features, emb.shape[1], type(clip).__name__)
    return upsample(similarity(feats, emb), size or img.shape[:2])


def heat_maps(clip, image, texts: Sequence[str], *, size: Optional[Sequence[int]] = None,
              features: Optional[torch.Tensor] = None, background: Optional[Sequence[str]] = None,
              templates: Optional[Sequence[str]] = None, temperature: float = TEMPERATURE,
              denoise: Optional[float] = None) -> torch.Tensor:
    """Probability maps of ``texts`` (N strings): N x H x W float32 in [0, 1] at ``size``
    (default: the image's H x W), computed against ``texts`` + ``background`` classes.

    ``image``: H x W x 3 uint8 RGB (anything ``load_image`` takes); ``features``: the
    DenseClip's D x h x w features of that image when already computed."""
    from ..io.image import load_image
    from .base import check_dense_clip, check_dense_output
    from .embeddings import text_embeddings

    clip = check_dense_clip(clip)
    img = load_image(image)
    names, n = query_names(list(texts), background)
    emb = text_embeddings(clip, names, templates)
    if features is None:
        with torch.inference_mode():
            features = clip.dense_features(img)
    feats = check_dense_output(features, emb.shape[1], type(clip).__name__)
    probs = probabilities(similarity(feats, emb), size or img.shape[:2], temperature, denoise)
    return probs[:n]
