"""The ``DenseClip`` protocol: what the open-vocabulary layer needs from a CLIP.

Everything in ``samkit.vocab`` above this protocol (prompt ensembles, heat maps, text prompts,
mask naming) works with any object that has

* ``name: str`` -- identifies the model and its options; part of the text-embeddings cache key,
* ``encode_text(texts) -> N x D`` float32 torch tensor, one L2-normalised embedding per text
  exactly as given (no templates applied),
* ``dense_features(image) -> D x h x w`` float32 torch tensor for an H x W x 3 uint8 RGB image,
  L2-normalised at every location; the h x w grid covers the WHOLE image (cell (i, j) covers
  rows i*H/h .. (i+1)*H/h and columns j*W/w .. (j+1)*W/w), so bilinear upsampling to H x W
  (``align_corners=False``) aligns it with the image.

``samkit.vocab.maskclip.MaskClip`` (MaskCLIP dense features of a CLIP ViT-B/16 or RN50x16)
implements it; ``samkit.vocab.load_clip(name)`` loads one. Tests use synthetic doubles.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import numpy as np
    import torch


class DenseClip(Protocol):
    """A CLIP that gives text embeddings and a dense (per-location) image embedding map."""

    name: str

    def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
        """``texts`` (N strings) -> N x D float32, L2-normalised, one row per text as given."""
        ...

    def dense_features(self, image: "np.ndarray") -> "torch.Tensor":
        """H x W x 3 uint8 RGB -> D x h x w float32, L2-normalised per location, covering the image."""
        ...


_FIX = ("Fix: pass a DenseClip, e.g. clip=samkit.vocab.load_clip('clip_vit_b16') (or wrap a loaded CLIP "
        "model: samkit.vocab.maskclip.MaskClip(clip_model)).")


def check_dense_clip(clip: Any, where: str = "clip") -> DenseClip:
    """Return ``clip`` if it implements :class:`DenseClip`, else raise ``InputError`` saying what
    is missing and how to get one (``where`` names the argument in the message)."""
    if clip is None:
        raise InputError(f"{where}= is None but a CLIP is needed here. {_FIX}")
    if isinstance(clip, (str, bytes)):
        raise InputError(f"{where}={clip!r} is a name, not a loaded CLIP. Fix: pass "
                         f"{where}=samkit.vocab.load_clip({clip!r}).")
    missing = [m for m in ("encode_text", "dense_features") if not callable(getattr(clip, m, None))]
    name = getattr(clip, "name", None)
    if not missing and (not isinstance(name, str) or not name):
        missing.append("name (a non-empty str)")
    if missing:
        kind = type(clip).__name__
        hint = ""
        if "dense_features" in missing and callable(getattr(clip, "encode_image", None)):
            hint = " It looks like a plain CLIP model: it has no dense (per-patch) features."
        raise InputError(f"{where}= got a {kind}, which is not a DenseClip: it lacks {', '.join(missing)}.{hint} "
                         f"{_FIX}")
    return clip


def check_text_output(emb: Any, n: int, who: str) -> "torch.Tensor":
    """Check what ``encode_text`` returned for ``n`` texts: an n x D float tensor (finite)."""
    import torch

    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != n:
        shape = tuple(emb.shape) if hasattr(emb, "shape") else type(emb).__name__
        raise InputError(f"{who}.encode_text returned {shape} for {n} texts, expected an {n} x D tensor. "
                         "Fix: the DenseClip must return one embedding row per text.")
    emb = emb.detach().float().cpu()
    if not torch.isfinite(emb).all():
        raise InputError(f"{who}.encode_text returned NaN or infinity. Fix: check the CLIP weights.")
    return emb


def check_dense_output(feats: Any, dim: int, who: str) -> "torch.Tensor":
    """Check what ``dense_features`` returned: a D x h x w float tensor with D = ``dim`` (finite)."""
    import torch

    if not isinstance(feats, torch.Tensor) or feats.dim() != 3 or feats.shape[0] != dim:
        shape = tuple(feats.shape) if hasattr(feats, "shape") else type(feats).__name__
        raise InputError(f"{who}.dense_features returned {shape}, expected {dim} x h x w (the text embedding "
                         "width first). Fix: the DenseClip must return D x h x w features.")
    feats = feats.detach().float().cpu()
    if not torch.isfinite(feats).all():
        raise InputError(f"{who}.dense_features returned NaN or infinity. Fix: check the CLIP weights.")
    return feats
