"""MaskCLIP: dense CLIP features without training (Zhou, Loy, Dai, "Extract Free Dense Labels from
CLIP", ECCV 2022). Implements the ``DenseClip`` protocol of :mod:`samkit.vocab.base`.

The modification (facts of the paper and its official code):

* ViT: the last transformer block keeps its value path only. For every token ``x_i`` entering
  it, ``v_i = x_i + out_proj(W_v ln_1(x_i) + b_v)`` (no query-key attention: each location sees
  only itself), then the block's MLP with its residual, ``v_i + mlp(ln_2(v_i))``, then ``ln_post``
  and ``proj``: one embedding in CLIP's joint space per patch.
* ResNet: the attention pool is dropped; its value and output projections act as 1x1
  convolutions at every location of the last stage, ``c_proj(v_proj(x_ij))`` (no positional
  embedding, no pooling).
* Key smoothing (option ``key_smoothing``): the keys of that last attention (ViT: ``out_proj`` of
  the key projection, as the official code computes them; ResNet: ``k_proj``) say which locations
  look alike. Each location's (normalised) feature becomes the sum over all locations of
  ``cos(k_i, k_j) * f_j``, then is normalised again. Smoothing the features is smoothing the
  cosine scores of every class (up to a positive scale per location, which the final
  normalisation removes), as the paper's equation smooths predictions; the official code applies
  it to softmax scores at low-confidence locations only, a class-score step left to the caller.
  Prompt denoising acts on class scores and lives above this protocol.

Input resolution policy: the image is resized as a whole (bicubic) so that its short side is
about ``short_side`` pixels (default 448; the long side at most ``max_long_side``), each side
rounded to a whole number of cells (the ViT's patch, 16 px; the ResNet's stride, 32 px; at least
one cell). The feature grid ``h x w`` therefore covers the whole image: cell ``(i, j)`` is rows
``i*H/h .. (i+1)*H/h`` and columns ``j*W/w .. (j+1)*W/w`` of the original ``H x W`` image. The ViT's
learned position embeddings are resized bicubically to the grid (as MaskCLIP does for its
evaluations, which resize the short side to 512 px); any aspect ratio works. The default 448 keeps
a ViT-B/16 pass on a CPU near a second for a 4:3 photo (28 x 37 cells).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError


class MaskClip:
    """Dense CLIP features of one image (``D x h x w``, L2-normalised) and text embeddings
    (``N x D``, L2-normalised) from a :class:`samkit.models.clip.ClipModel`."""

    def __init__(self, clip, *, key_smoothing: bool = False, short_side: int = 448,
                 max_long_side: int = 1344) -> None:
        from ..backbones.clip_resnet import ModifiedResNet
        from ..backbones.clip_vit import VisionTransformer

        visual = getattr(clip, "visual", None)
        if not isinstance(visual, (VisionTransformer, ModifiedResNet)) or not hasattr(clip, "encode_text"):
            raise InputError(f"MaskClip needs a CLIP model (samkit.models.clip.ClipModel), got {type(clip).__name__}. "
                             "Fix: load one with load_maskclip('clip_vit_b16') or load_model('clip_vit_b16').")
        if int(short_side) < 1 or int(max_long_side) < int(short_side):
            raise InputError(f"short_side={short_side}, max_long_side={max_long_side}: need 1 <= short_side <= "
                             "max_long_side. Fix: e.g. short_side=448, max_long_side=1344.")
        self.clip = clip.eval()
        self.vit = isinstance(visual, VisionTransformer)
        self.cell = visual.patch_size if self.vit else 32
        self.key_smoothing = bool(key_smoothing)
        self.short_side = int(short_side)
        self.max_long_side = int(max_long_side)
        spec = getattr(clip, "spec", None)
        base = spec.name if spec is not None else type(visual).__name__
        self.name = f"{base}/maskclip{'+keysmooth' if self.key_smoothing else ''}@{self.short_side}"

    @property
    def device(self) -> torch.device:
        return self.clip.positional_embedding.device

    # ------------------------------------------------------------------ text
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """One embedding per text exactly as given (no templates): ``N x D`` float32, L2-normalised."""
        if isinstance(texts, str):
            texts = [texts]
        with torch.inference_mode():
            emb = self.clip.encode_text(self.clip.tokenize(list(texts)))
        return F.normalize(emb.float(), dim=-1)

    # ------------------------------------------------------------------ image
    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """The feature grid ``(h, w)`` of an ``height x width`` image (see the module docstring)."""
        scale = self.short_side / min(height, width)
        scale = min(scale, self.max_long_side / max(height, width))
        return (max(1, int(round(height * scale / self.cell))), max(1, int(round(width * scale / self.cell))))

    def image_tensor(self, image) -> torch.Tensor:
        """Image (path, PIL, H x W x 3 uint8) -> ``1 x 3 x h*cell x w*cell`` normalised input."""
        from ..io.image import load_image

        img = load_image(image)
        h, w = self.grid_size(*img.shape[:2])
        size = (w * self.cell, h * self.cell)
        if (img.shape[1], img.shape[0]) != size:
            img = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
        return self.clip.normalize(img)

    def dense_maps(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``1 x 3 x H x W`` normalised input (sides multiples of the cell) -> the MaskCLIP features
        ``D x h x w`` (not normalised) and the last attention's keys ``C x h x w``."""
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[2] % self.cell or x.shape[3] % self.cell:
            raise InputError(f"dense_maps needs a 1 x 3 x H x W tensor with H and W multiples of {self.cell}, "
                             f"got {tuple(x.shape)}. Fix: use image_tensor(image) or dense_features(image).")
        x = x.to(self.device)
        feats, keys, (h, w) = self._vit(x) if self.vit else self._resnet(x)
        return (feats[0].transpose(0, 1).reshape(-1, h, w), keys[0].transpose(0, 1).reshape(-1, h, w))

    def _vit(self, x: torch.Tensor):
        visual = self.clip.visual
        tokens, hw = visual.embed(x)
        blocks = visual.transformer.resblocks
        tokens = visual.transformer(tokens, upto=len(blocks) - 1)
        last = blocks[-1]
        _, k, v = last.attn.qkv(last.ln_1(tokens))
        v = tokens + last.attn.out_proj(v)
        v = v + last.mlp(last.ln_2(v))
        feats = visual.ln_post(v[:, 1:]) @ visual.proj
        return feats, last.attn.out_proj(k[:, 1:]), hw

    def _resnet(self, x: torch.Tensor):
        visual = self.clip.visual
        last = visual.stages(x)[-1]
        hw = (last.shape[2], last.shape[3])
        tokens = last.flatten(2).transpose(1, 2)  # 1 x hw x C
        pool = visual.attnpool
        return pool.c_proj(pool.v_proj(tokens)), pool.k_proj(tokens), hw

    def smooth(self, features: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Key smoothing: ``D x h x w`` features, ``C x h x w`` keys -> ``D x h x w``, each location
        ``sum_j cos(k_i, k_j) * f_j / |f_j|`` (not normalised)."""
        d, h, w = features.shape
        f = F.normalize(features.reshape(d, h * w), dim=0)
        k = F.normalize(keys.reshape(keys.shape[0], h * w), dim=0)
        return (f @ (k.t() @ k)).reshape(d, h, w)

    def dense_features(self, image) -> torch.Tensor:
        """H x W x 3 uint8 RGB (or path / PIL) -> ``D x h x w`` float32, L2-normalised per location;
        the grid covers the whole image (bilinear upsampling to H x W aligns it)."""
        with torch.inference_mode():
            feats, keys = self.dense_maps(self.image_tensor(image))
            if self.key_smoothing:
                feats = self.smooth(feats, keys)
            return F.normalize(feats.float(), dim=0)


def load_maskclip(name: str = "clip_vit_b16", checkpoint=None, device="cpu", **options) -> MaskClip:
    """``MaskClip`` over the registered CLIP ``name`` (``clip_vit_b16``, ``clip_rn50x16``), its
    official file or ``checkpoint`` (OpenAI's TorchScript archive or an open_clip checkpoint of
    the same model). ``options``: those of :class:`MaskClip`."""
    from ..registry import load_model
    from ..specs import MODELS, get_spec

    spec = get_spec(name)
    if spec.kind != "clip":
        clips = ", ".join(n for n, s in MODELS.items() if s.kind == "clip")
        raise InputError(f"{name!r} is a {spec.kind}, not a CLIP model. Fix: pass one of {clips}.")
    return MaskClip(load_model(name, checkpoint=checkpoint, device=device), **options)
