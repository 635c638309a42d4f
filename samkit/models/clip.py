"""CLIP (Radford et al. 2021): the image towers and the text transformer, loading OpenAI's released
files (TorchScript archives, read without executing them: ``samkit.checkpoint``) and open_clip's
checkpoints of the same models (same key names).

``ClipModel`` keeps OpenAI's state-dict layout at its top level: ``visual`` (a
:class:`~samkit.backbones.clip_vit.VisionTransformer` or
:class:`~samkit.backbones.clip_resnet.ModifiedResNet`), and the text tower ``token_embedding``,
``positional_embedding`` (context x width), ``transformer.resblocks.N``, ``ln_final``,
``text_projection`` (width x embed_dim), ``logit_scale``. Text attention is causal; the text
embedding is the final-norm feature of each sequence's end-of-text token (its highest id).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..backbones.clip_resnet import ModifiedResNet
from ..backbones.clip_vit import VisionTransformer
from ..errors import InputError
from ..families import register_builder, register_remap
from ..layers.residual_attention import ResidualTransformer
from ..specs import CLIP_MEAN, CLIP_STD

#: entries of OpenAI's TorchScript state dicts that are no weights (``clip.model.build_model`` drops them)
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


class ClipModel(nn.Module):
    """Image and text towers of one CLIP. Embeddings are un-normalised (as OpenAI's):
    ``encode_image(B x 3 x S x S) -> B x D``, ``encode_text(B x L token ids) -> B x D``."""

    def __init__(self, visual: nn.Module, *, embed_dim: int, context_length: int, vocab_size: int,
                 transformer_width: int, transformer_heads: int, transformer_layers: int, input_size: int,
                 pixel_mean: Tuple[float, float, float] = CLIP_MEAN,
                 pixel_std: Tuple[float, float, float] = CLIP_STD) -> None:
        super().__init__()
        self.visual = visual
        self.embed_dim = embed_dim
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.input_size = input_size
        self.pixel_mean = tuple(float(v) for v in pixel_mean)
        self.pixel_std = tuple(float(v) for v in pixel_std)
        self.transformer = ResidualTransformer(transformer_width, transformer_layers, transformer_heads)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = nn.LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=transformer_width ** -0.5)
        self._tokenizer = None

    # ------------------------------------------------------------------ text
    @property
    def tokenizer(self):
        """The :class:`samkit.text.clip_tokenizer.ClipTokenizer` of the shipped vocabulary (shared, made
        on first use; needs the ``vocab`` extra). The one place the model core reaches into
        ``samkit.vocab``: the tokenizer is data plus pure Python and imports nothing else of it."""
        if self._tokenizer is None:
            from ..text.clip_tokenizer import default_tokenizer

            self._tokenizer = default_tokenizer()
        return self._tokenizer

    def tokenize(self, texts, context_length: Optional[int] = None) -> torch.Tensor:
        """``texts`` -> ``B x context_length`` ids on the model's device (see ``ClipTokenizer``)."""
        ids = self.tokenizer.tokenize(texts, context_length or self.context_length)
        return ids.to(self.positional_embedding.device)

    def encode_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``B x L`` int token ids (start token, text, end token, zero padding; L <= context) ->
        ``B x embed_dim`` (un-normalised)."""
        ids = self._check_ids(token_ids)
        x = self.token_embedding(ids) + self.positional_embedding[:ids.shape[1]]
        x = self.ln_final(self.transformer(x, causal=True))
        eot = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]
        return eot @ self.text_projection

    def _check_ids(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.is_floating_point() or ids.is_complex():
            raise InputError("encode_text needs a B x L tensor of integer token ids. "
                             "Fix: pass model.tokenize(['a dog', ...]).")
        if ids.shape[1] > self.context_length:
            raise InputError(f"token ids are {ids.shape[1]} long, more than the context of {self.context_length}. "
                             "Fix: tokenize with model.tokenize(texts).")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise InputError(f"token ids must lie in [0, {self.vocab_size}). Fix: tokenize with model.tokenize(texts).")
        return ids.to(device=self.positional_embedding.device, dtype=torch.long)

    # ------------------------------------------------------------------ image
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x S x S`` normalised pixels (see :meth:`preprocess`) -> ``B x embed_dim``."""
        return self.visual(x)

    def preprocess(self, image) -> torch.Tensor:
        """OpenAI's evaluation transform: the short side resized to ``input_size`` (bicubic, PIL;
        the long side ``int(S * long / short)``), the centre ``S x S`` crop, CLIP's mean/std.
        ``image``: path, PIL image or H x W x 3 uint8 -> ``1 x 3 x S x S`` float32."""
        from ..io.image import load_image

        img = load_image(image)
        s = self.input_size
        h, w = img.shape[:2]
        short, long = min(h, w), max(h, w)
        new_short, new_long = s, int(s * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)  # PIL (width, height)
        if (w, h) != size:
            img = np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))
        top = int(round((img.shape[0] - s) / 2.0))
        left = int(round((img.shape[1] - s) / 2.0))
        return self.normalize(img[top:top + s, left:left + s])

    def normalize(self, image: np.ndarray) -> torch.Tensor:
        """H x W x 3 uint8 -> ``1 x 3 x H x W`` float32 on the model's device, (x/255 - mean) / std."""
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # a fresh array
        mean = torch.tensor(self.pixel_mean).view(3, 1, 1)
        std = torch.tensor(self.pixel_std).view(3, 1, 1)
        return ((x - mean) / std)[None].to(self.positional_embedding.device)

    def forward(self, image: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Scaled cosine similarities ``B_image x B_text`` (CLIP's logits per image)."""
        img = nn.functional.normalize(self.encode_image(image), dim=-1)
        txt = nn.functional.normalize(self.encode_text(token_ids), dim=-1)
        return self.logit_scale.exp() * img @ txt.t()


def clip_vit(*, input_size: int, patch_size: int, vision_width: int, vision_layers: int, vision_heads: int,
             embed_dim: int, text_width: int, text_heads: int, text_layers: int, context_length: int = 77,
             vocab_size: int = 49408) -> ClipModel:
    """A CLIP with a ViT image tower (every number explicit; the builders below name them)."""
    visual = VisionTransformer(input_resolution=input_size, patch_size=patch_size, width=vision_width,
                               layers=vision_layers, heads=vision_heads, output_dim=embed_dim)
    return ClipModel(visual, embed_dim=embed_dim, context_length=context_length, vocab_size=vocab_size,
                     transformer_width=text_width, transformer_heads=text_heads,
                     transformer_layers=text_layers, input_size=input_size)


def clip_resnet(*, input_size: int, vision_layers: Sequence[int], vision_width: int, vision_heads: int,
                embed_dim: int, text_width: int, text_heads: int, text_layers: int, context_length: int = 77,
                vocab_size: int = 49408) -> ClipModel:
    """A CLIP with a ModifiedResNet image tower (every number explicit)."""
    visual = ModifiedResNet(layers=tuple(vision_layers), output_dim=embed_dim, heads=vision_heads,
                            input_resolution=input_size, width=vision_width)
    return ClipModel(visual, embed_dim=embed_dim, context_length=context_length, vocab_size=vocab_size,
                     transformer_width=text_width, transformer_heads=text_heads,
                     transformer_layers=text_layers, input_size=input_size)


@register_builder("clip_vit_b16")
def build_clip_vit_b16() -> ClipModel:
    """OpenAI ViT-B/16: 224 px, patch 16, width 768, 12 layers, 12 heads; text width 512, 8 heads,
    12 layers; embedding 512; context 77; vocabulary 49408."""
    return clip_vit(input_size=224, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                    embed_dim=512, text_width=512, text_heads=8, text_layers=12, context_length=77,
                    vocab_size=49408)


@register_builder("clip_rn50x16")
def build_clip_rn50x16() -> ClipModel:
    """OpenAI RN50x16: 384 px, bottlenecks (6, 8, 18, 8), stem width 96, attention pool over 3072
    channels with 48 heads; text width 768, 12 heads, 12 layers; embedding 768; context 77;
    vocabulary 49408."""
    return clip_resnet(input_size=384, vision_layers=(6, 8, 18, 8), vision_width=96, vision_heads=48,
                       embed_dim=768, text_width=768, text_heads=12, text_layers=12, context_length=77,
                       vocab_size=49408)


@register_remap("openai_clip")
def remap_openai_clip(state_dict: dict) -> dict:
    """OpenAI (TorchScript ``state_dict()``) and open_clip keys are samkit's; only OpenAI's
    non-weight entries (``input_resolution``, ``context_length``, ``vocab_size``) are dropped."""
    return {k: v for k, v in state_dict.items() if k not in OPENAI_EXTRA_KEYS}
