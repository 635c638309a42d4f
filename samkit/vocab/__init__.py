"""Open vocabulary: find masks from text and name every mask, with a CLIP (MaskCLIP features).

CLIP's BPE tokenizer (``tokenizer``) and the MaskCLIP dense features (``maskclip``) live here
too; nothing below this package (models, backbones, heads, layers) imports it.

```python
from samkit import load_model, ImagePredictor, AutoMaskGenerator
from samkit.vocab import load_clip
clip = load_clip("clip_vit_b16")                       # a DenseClip (MaskCLIP over CLIP ViT-B/16)
predictor = ImagePredictor(load_model("sam_vit_b"), clip=clip).set_image(image)
dogs = predictor.predict(text="dog")                   # Masks with labels and label_scores
named = AutoMaskGenerator(model, vocabulary="coco", clip=clip).generate(image)
named = masks.classify("lvis", clip=clip, image=image)
```
Layers: ``base`` (the DenseClip protocol), ``vocabularies`` (built-in COCO / LVIS / ADE20K
names), ``embeddings`` (prompt templates, ensembles, disk cache), ``heatmap`` (text ->
probability maps, prompt denoising), ``text_prompts`` (peaks -> point/box prompts), ``classify``
(mask pooling, naming), ``text_predict`` (text -> masks for ``ImagePredictor``), ``video``
(objects found by text for ``VideoTracker``), ``labels`` (labelled exports). Importing this
package does not import torch.
"""
from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from typing import Any, Optional

from .._lazy import lazy_getattr
from .base import DenseClip, check_dense_clip
from .vocabularies import BUILTIN, Vocabulary, check_texts, load_vocabulary, vocabulary

DEFAULT_CLIP = "clip_vit_b16"

_LAZY = {
    "text_embeddings": ("samkit.vocab.embeddings", "text_embeddings"),
    "MASKCLIP_TEMPLATES": ("samkit.vocab.embeddings", "MASKCLIP_TEMPLATES"),
    "IMAGENET_TEMPLATES": ("samkit.vocab.embeddings", "IMAGENET_TEMPLATES"),
    "heat_maps": ("samkit.vocab.heatmap", "heat_maps"),
    "similarity_maps": ("samkit.vocab.heatmap", "similarity_maps"),
    "BACKGROUND": ("samkit.vocab.heatmap", "BACKGROUND"),
    "text_prompts": ("samkit.vocab.text_prompts", "text_prompts"),
    "peaks_to_prompts": ("samkit.vocab.text_prompts", "peaks_to_prompts"),
    "classify_masks": ("samkit.vocab.classify", "classify_masks"),
}

__all__ = ["DenseClip", "check_dense_clip", "BUILTIN", "Vocabulary", "check_texts", "load_vocabulary", "vocabulary",
           "load_clip", "DEFAULT_CLIP", *_LAZY]


@contextmanager
def _offline(on: bool):
    """``SAMKIT_OFFLINE=1`` for the duration (the hub reads it when it would download)."""
    old = os.environ.get("SAMKIT_OFFLINE")
    if on:
        os.environ["SAMKIT_OFFLINE"] = "1"
    try:
        yield
    finally:
        if on:
            if old is None:
                os.environ.pop("SAMKIT_OFFLINE", None)
            else:
                os.environ["SAMKIT_OFFLINE"] = old


def load_clip(name: str = DEFAULT_CLIP, checkpoint: Optional[Any] = None, device: str = "cpu",
              download: bool = True, **options: Any) -> DenseClip:
    """A DenseClip: ``samkit.vocab.maskclip.load_maskclip(name, checkpoint, device, **options)``
    (MaskCLIP dense features over a CLIP from the model registry, ``samkit models ls``).
    ``download=False`` never downloads (a missing file fails with the path to copy it to).
    The one place the command line builds its CLIP (tests replace it with a double)."""
    maskclip = importlib.import_module("samkit.vocab.maskclip")
    with _offline(not download):
        clip = maskclip.load_maskclip(name, checkpoint=checkpoint, device=device, **options)
    return check_dense_clip(clip)


__getattr__ = lazy_getattr("samkit.vocab", globals(), _LAZY)
