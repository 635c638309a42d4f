"""TEST-ONLY: SAM3-LiteText weights in the released layout and transformers' ``sam3_lite_text``
as the oracle (built on tests/sam3/oracle.py, the SAM 3 one).

* ``TEXT_S0`` / ``TEXT_BASE``: reduced MobileCLIP text students (width 64, two transformer blocks;
  ``TEXT_S0`` with the RepMixer blocks before and after them, as MobileCLIP-S0; ``TEXT_BASE`` as
  S1 / MobileCLIP2-L), on the reduced SAM 3 (``oracle.REDUCED``). Their position tables keep the
  released 77 rows.
* ``official_manifest(cfg, text)``: ``[key, shape, dtype]`` of a LiteText file: ``sam3.pt``'s
  keys with ``detector.backbone.language_backbone.*`` replaced by the student's ``encoder.*`` /
  ``projector.*`` (official ``convert_text_encoder_weights_stage1.py``), BatchNorm counters
  (``num_batches_tracked``, int64) included.
* ``synth_official``: values by ``shared/parity/synth_weights.py`` rules, except the RepMixer
  layer scales, set near 0.5 so that those blocks move the features measurably (the rules
  would give them 0.02).
* ``official_to_hf``: the released layout -> transformers' ``Sam3LiteTextModel`` (detector only),
  restating ``convert_sam3_lite_text_to_hf.py``: SAM 3's detector keys as for ``facebook/sam3``,
  the student's keys renamed (packed ``qkv_proj`` split, RepMixer BatchNorms named by role), the
  position table truncated to the context as upstream's ``set_context_length`` does.
"""
from __future__ import annotations

import functools
import importlib
from types import SimpleNamespace
from typing import Dict, List

import torch
import torch.nn.functional as F

import oracle as O
from samkit.backbones.mobileclip_text import MobileClipTextConfig, Sam3StudentTextEncoder
from samkit.models.sam3 import Sam3Config, Sam3Model

LB = "detector.backbone.language_backbone."
D = O.REDUCED.d_model
TEXT_S0 = MobileClipTextConfig(width=64, layers=2, heads=4, repmixer=True, context_length=16, d_model=D,
                               name="MobileCLIP-S0")
TEXT_BASE = MobileClipTextConfig(width=64, layers=2, heads=4, repmixer=False, context_length=32, d_model=D,
                                 name="MobileCLIP-S1")


def build(cfg: Sam3Config = O.REDUCED, text: MobileClipTextConfig = TEXT_S0) -> Sam3Model:
    return Sam3Model(cfg, text_encoder=Sam3StudentTextEncoder(text))


def text_manifest(text: MobileClipTextConfig) -> List[list]:
    """The student's rows of a LiteText file (prefix ``detector.backbone.language_backbone.``)."""
    with torch.device("meta"):
        enc = Sam3StudentTextEncoder(text)
    return [[LB + k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in enc.state_dict().items()]


def official_manifest(cfg: Sam3Config, text: MobileClipTextConfig) -> List[list]:
    rows = [r for r in O.official_manifest(cfg) if not r[0].startswith(LB)]
    return rows + text_manifest(text)


def _synth(key: str, shape, dtype: str, seed: int) -> torch.Tensor:
    t = O._synth(key, shape, dtype, seed)
    if key.endswith("layer_scale"):
        t = 0.5 + 5.0 * t  # 0.5 +- 0.1
    return t


def synth_official(cfg: Sam3Config = O.REDUCED, text: MobileClipTextConfig = TEXT_S0,
                   seed: int = 0) -> Dict[str, torch.Tensor]:
    """A LiteText file's state dict with synthesized values (the reduced SAM 3's tensors are
    shared with ``oracle.synth_official``; callers never change them in place)."""
    base = O.synth_official(cfg, seed)
    sd = {k: v for k, v in base.items() if not k.startswith(LB)}
    sd.update(_synth_text(text, seed))
    return sd


@functools.lru_cache(maxsize=4)
def _synth_text(text: MobileClipTextConfig, seed: int) -> Dict[str, torch.Tensor]:
    return {k: _synth(k, s, d, seed) for k, s, d in text_manifest(text)}


def load_reduced(text: MobileClipTextConfig = TEXT_S0, name: str = "sam3_litetext_s0_16") -> Sam3Model:
    """The reduced LiteText model loaded through samkit's loader (format ``sam3_litetext``)."""
    from samkit.checkpoint import load_into
    from samkit.specs import get_spec

    model = build(O.REDUCED, text).eval()
    load_into(model, synth_official(O.REDUCED, text), "sam3_litetext")
    model.spec = get_spec(name)
    return model


# --------------------------------------------------------------------------- transformers' layout
_TEXT_RULES = [  # on the student's keys without the ``detector.backbone.language_backbone.`` prefix
    (r"^encoder\.embedding_layer\.", "text_encoder.embeddings.token_embedding."),
    (r"^encoder\.positional_embedding\.pos_embed\.pos_embed$",
     "text_encoder.embeddings.position_embedding.position_embedding"),
    (r"^encoder\.final_layer_norm\.", "text_encoder.final_layer_norm."),
    (r"^encoder\.projection_layer$", "text_encoder.projection.weight"),
    (r"^projector\.", "text_projection."),
    (r"^encoder\.transformer\.", "text_encoder.layers."),
    (r"\.pre_norm_mha\.0\.", ".layer_norm1."),
    (r"\.pre_norm_mha\.1\.qkv_proj\.", ".self_attn.qkv_proj."),
    (r"\.pre_norm_mha\.1\.out_proj\.", ".self_attn.out_proj."),
    (r"\.pre_norm_ffn\.0\.", ".layer_norm2."),
    (r"\.pre_norm_ffn\.1\.", ".mlp.fc1."),
    (r"\.pre_norm_ffn\.4\.", ".mlp.fc2."),
    (r"\.token_mixer\.norm\.rbr_skip\.", ".token_mixer.reference_batchnorm."),
    (r"\.token_mixer\.mixer\.rbr_skip\.", ".token_mixer.mixer.batchnorm_skip."),
    (r"\.token_mixer\.mixer\.rbr_conv\.0\.conv\.", ".token_mixer.mixer.conv."),
    (r"\.token_mixer\.mixer\.rbr_conv\.0\.bn\.", ".token_mixer.mixer.batchnorm_conv."),
    (r"\.convffn\.conv\.conv\.", ".conv_feed_forward.depthwise_conv."),
    (r"\.convffn\.conv\.bn\.", ".conv_feed_forward.depthwise_batchnorm."),
    (r"\.convffn\.fc([12])\.", r".conv_feed_forward.mlp.fc\1."),
]


def official_to_hf(sd: Dict[str, torch.Tensor], text: MobileClipTextConfig) -> Dict[str, torch.Tensor]:
    """A LiteText file -> the state dict of transformers' ``Sam3LiteTextModel`` (its detector)."""
    hf = O.official_to_hf({k: v for k, v in sd.items() if not k.startswith(LB)})
    out = {k[len("detector_model."):]: v for k, v in hf.items() if k.startswith("detector_model.")}
    out.update(text_to_hf(sd, text))
    return out


def text_to_hf(sd: Dict[str, torch.Tensor], text: MobileClipTextConfig) -> Dict[str, torch.Tensor]:
    """The student's keys of a LiteText file (``detector.backbone.language_backbone.*``) ->
    transformers' ``text_encoder.*`` / ``text_projection.*``."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(LB):
            continue
        new = O._apply(_TEXT_RULES, key[len(LB):])
        if new.endswith("position_embedding.position_embedding"):
            value = value[:, :, :text.context_length]
        elif new == "text_encoder.projection.weight":
            value = value.t()
        if ".self_attn.qkv_proj." in new:
            for part, t in zip("qkv", value.chunk(3, dim=0)):
                out[new.replace(".qkv_proj.", f".{part}_proj.")] = t
        else:
            out[new] = value
    return out


@functools.lru_cache(maxsize=1)
def hf_modules() -> SimpleNamespace:
    O.transformers_modules()  # transformers imported with torchvision hidden
    with O._without_torchvision():
        mod = importlib.import_module("transformers.models.sam3_lite_text.modeling_sam3_lite_text")
    mod.torchvision = SimpleNamespace(ops=SimpleNamespace(roi_align=O.tv_roi_align))
    return SimpleNamespace(modeling=mod, transformers=O.transformers_modules().transformers)


def hf_config(cfg: Sam3Config, text: MobileClipTextConfig):
    tf = hf_modules().transformers
    text_cfg = dict(vocab_size=text.vocab_size, hidden_size=text.width, intermediate_size=text.mlp,
                    projection_dim=text.width, num_hidden_layers=text.layers + (2 if text.repmixer else 0),
                    num_attention_heads=text.heads, max_position_embeddings=text.context_length,
                    use_repmixer_blocks=text.repmixer, repmixer_kernel_size=text.kernel)
    return tf.Sam3LiteTextConfig(text_config=text_cfg, **O.detector_subconfigs(cfg))


def hf_model(cfg: Sam3Config, text: MobileClipTextConfig, hf_sd: Dict[str, torch.Tensor], assign: bool = False):
    """transformers' ``Sam3LiteTextModel`` with ``cfg`` / ``text``'s numbers, loaded strictly."""
    model = hf_modules().transformers.Sam3LiteTextModel(hf_config(cfg, text)).eval()
    model.load_state_dict(hf_sd, strict=True, assign=assign)
    return model


def hf_text_model(text: MobileClipTextConfig, hf_sd: Dict[str, torch.Tensor]):
    """transformers' ``Sam3LiteTextTextModel`` alone, loaded strictly from ``hf_sd``'s
    ``text_encoder.*`` (the full-size checks build no detector)."""
    tf = hf_modules().transformers
    model = tf.Sam3LiteTextTextModel(hf_config(O.REDUCED, text).text_config).eval()
    sd = {k[len("text_encoder."):]: v for k, v in hf_sd.items() if k.startswith("text_encoder.")}
    model.load_state_dict(sd, strict=True)
    return model


def load_text_student(text: MobileClipTextConfig, sd: Dict[str, torch.Tensor]) -> Sam3StudentTextEncoder:
    """samkit's student loaded strictly through the ``sam3_litetext`` remap from the released-layout
    keys ``sd`` (eval mode)."""
    from samkit.checkpoint import remap

    enc = Sam3StudentTextEncoder(text).eval()
    mapped = remap(sd, "sam3_litetext")
    enc.load_state_dict({k[len("text_encoder."):]: v for k, v in mapped.items()}, strict=True)
    return enc


def text_pair(text: MobileClipTextConfig, sd: Dict[str, torch.Tensor]):
    """(samkit's student from ``sd`` (:func:`load_text_student`), a function giving transformers'
    features (text model + projection) of ids on the same weights)."""
    hf_sd = text_to_hf(sd, text)
    hf = hf_text_model(text, hf_sd)
    w, b = hf_sd["text_projection.weight"], hf_sd["text_projection.bias"]
    return load_text_student(text, sd), lambda ids: F.linear(hf(input_ids=ids).last_hidden_state, w, b)
