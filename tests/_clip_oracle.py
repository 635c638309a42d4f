"""TEST-ONLY: CLIP configurations, weights synthesized in OpenAI's key layout, and open_clip (the
test-only oracle, imported through the torchvision stand-in) built with the same numbers.

Configurations: ``vit_tiny`` / ``rn_tiny`` take the same code paths as the released models with
fewer layers and widths (default suite); ``vit_b16`` / ``rn50x16`` are the released sizes (slow).
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from samkit.models.clip import ClipModel, clip_resnet, clip_vit

# our builder keyword arguments; open_clip's vision/text configs are derived from them
CONFIGS: Dict[str, dict] = {
    "vit_tiny": dict(kind="vit", input_size=64, patch_size=16, vision_width=64, vision_layers=2, vision_heads=2,
                     embed_dim=32, text_width=32, text_heads=2, text_layers=2),
    "rn_tiny": dict(kind="rn", input_size=128, vision_layers=(1, 2, 1, 1), vision_width=16, vision_heads=2,
                    embed_dim=32, text_width=32, text_heads=2, text_layers=2),
    "vit_b16": dict(kind="vit", input_size=224, patch_size=16, vision_width=768, vision_layers=12, vision_heads=12,
                    embed_dim=512, text_width=512, text_heads=8, text_layers=12),
    "rn50x16": dict(kind="rn", input_size=384, vision_layers=(6, 8, 18, 8), vision_width=96, vision_heads=48,
                    embed_dim=768, text_width=768, text_heads=12, text_layers=12),
}


def build(name: str) -> ClipModel:
    """Our (un-initialised) model of configuration ``name``."""
    cfg = dict(CONFIGS[name])
    kind = cfg.pop("kind")
    return (clip_vit if kind == "vit" else clip_resnet)(**cfg)


def synth_state_dict(model: torch.nn.Module, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random weights for every key of ``model`` (OpenAI's names), scaled so that activations stay
    O(1) through deep towers: fan-in scaled matrices, LayerNorm / BatchNorm gains near 1, small
    last-BN gains of every bottleneck, positive running variances."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, ref in model.state_dict().items():
        shape = ref.shape

        def randn(scale: float, shape=shape) -> torch.Tensor:
            return torch.randn(shape, generator=g) * scale

        if key.endswith("num_batches_tracked"):
            t = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("running_mean"):
            t = randn(0.1)
        elif key == "logit_scale":
            t = torch.tensor(math.log(1 / 0.07))
        elif len(shape) == 1 and key.endswith(".weight"):  # LayerNorm / BatchNorm gains
            t = (0.25 if key.endswith("bn3.weight") else 1.0) + randn(0.1)
        elif key.endswith("bias") or key.endswith("class_embedding"):
            t = randn(0.05)
        elif "positional_embedding" in key or key == "token_embedding.weight":
            t = randn(0.1)
        elif key in ("text_projection", "visual.proj"):
            t = randn(shape[0] ** -0.5)
        else:  # conv / linear / packed projections: fan-in scaled
            fan_in = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else shape[0]
            t = randn(fan_in ** -0.5)
        out[key] = t.to(ref.dtype) if ref.dtype != torch.float32 else t
    return out


def openai_file_state_dict(model: torch.nn.Module, seed: int = 0) -> Dict[str, torch.Tensor]:
    """``synth_state_dict`` as OpenAI's TorchScript ``state_dict()`` gives it: the weights in
    half precision except the norms' statistics, plus the three non-weight entries
    (``input_resolution``, ``context_length``, ``vocab_size``)."""
    sd = synth_state_dict(model, seed)
    half = {k: (v.half() if v.is_floating_point() and "running_" not in k else v) for k, v in sd.items()}
    half.update(input_resolution=torch.tensor(model.input_size), context_length=torch.tensor(77),
                vocab_size=torch.tensor(49408))
    return half


def open_clip_module():
    """The open_clip package, imported through the torchvision stand-in."""
    from oracle_shims import import_oracle

    return import_oracle("open_clip")


def oracle(name: str, state_dict: Dict[str, torch.Tensor]):
    """open_clip's CLIP of configuration ``name`` (QuickGELU, as OpenAI's weights), loaded with
    ``state_dict`` (strict: the key layouts are the same), in eval mode."""
    oc = open_clip_module()
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    cfg = CONFIGS[name]
    if cfg["kind"] == "vit":
        vision = CLIPVisionCfg(layers=cfg["vision_layers"], width=cfg["vision_width"], patch_size=cfg["patch_size"],
                               image_size=cfg["input_size"], head_width=cfg["vision_width"] // cfg["vision_heads"])
    else:
        vision = CLIPVisionCfg(layers=tuple(cfg["vision_layers"]), width=cfg["vision_width"], patch_size=None,
                               image_size=cfg["input_size"],
                               head_width=cfg["vision_width"] * 32 // cfg["vision_heads"])
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=cfg["text_width"], heads=cfg["text_heads"],
                       layers=cfg["text_layers"])
    model = CLIP(cfg["embed_dim"], vision, text, quick_gelu=True)
    model.load_state_dict(state_dict, strict=True)
    assert oc is not None
    return model.eval()
