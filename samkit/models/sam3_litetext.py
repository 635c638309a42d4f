"""SAM3-LiteText (Zeng et al., arXiv:2602.12173): SAM 3 with its 353M-parameter CLIP text tower
replaced by a distilled MobileCLIP text student (``samkit.backbones.mobileclip_text``); the
vision encoder, detector, heads and tracker are SAM 3's (``samkit.models.sam3``).

Six released files (``sam3_litetext/sam3_litetext_mobileclip{_s0,_s1,2_l}_ctx{16,32}.pt`` on
Hugging Face Simon7108528/EfficientSAM3): MobileCLIP-S0 / S1 / MobileCLIP2-L reading 16 or 32
tokens. Each is ``sam3.pt`` (``detector.*`` + ``tracker.*``, the official video model's keys)
with ``detector.backbone.language_backbone.*`` replaced by the student's ``encoder.*`` and
``projector.*`` (official ``convert_text_encoder_weights_stage1.py``), loaded by the official
``build_sam3_image_model`` / ``build_sam3_video_model(text_encoder_type=...)``. Checkpoint format
``"sam3_litetext"``: SAM 3's own remap of that layout; ``sam3.pt`` itself is refused by name.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from ..backbones.mobileclip_text import mobileclip_text_encoder
from ..errors import CheckpointError
from ..families import register_builder, register_remap
from .sam3 import SAM3_CONFIG, Sam3Config, Sam3Model, at_image_size, takes_image_size
from .sam3_remap import StateDict, _from_official

LITETEXT: Dict[str, Tuple[str, int]] = {
    "sam3_litetext_s0_16": ("MobileCLIP-S0", 16),
    "sam3_litetext_s0_32": ("MobileCLIP-S0", 32),
    "sam3_litetext_s1_16": ("MobileCLIP-S1", 16),
    "sam3_litetext_s1_32": ("MobileCLIP-S1", 32),
    "sam3_litetext_l_16": ("MobileCLIP2-L", 16),
    "sam3_litetext_l_32": ("MobileCLIP2-L", 32),
}
"""samkit name -> (official ``text_encoder_type``, ``text_encoder_context_length``)."""


def build_litetext(variant: str, context_length: int, cfg: Sam3Config = SAM3_CONFIG) -> Sam3Model:
    """SAM 3 (``cfg``) with the MobileCLIP text student ``variant`` reading ``context_length`` tokens."""
    return Sam3Model(cfg, text_encoder=mobileclip_text_encoder(variant, context_length))


def _builder(name: str, variant: str, context_length: int) -> Callable[[], Sam3Model]:
    @takes_image_size
    def build(image_size: Optional[int] = None) -> Sam3Model:
        return build_litetext(variant, context_length, at_image_size(SAM3_CONFIG, image_size))

    build.__name__ = build.__qualname__ = "build_" + name
    build.__doc__ = f"{name}: SAM 3 with the {variant} text student, context {context_length}."
    return build


for _name, (_variant, _ctx) in LITETEXT.items():
    globals()["build_" + _name] = register_builder(_name)(_builder(_name, _variant, _ctx))


# ----------------------------------------------------------------------------- checkpoint
_SAM3_TEXT = ("detector.backbone.language_backbone.encoder.transformer.resblocks.",
              "detector.backbone.language_backbone.resizer.", "detector_model.text_encoder.text_model.")


@register_remap("sam3_litetext")
def remap_sam3_litetext(state_dict: StateDict) -> StateDict:
    """A released SAM3-LiteText file -> samkit keys (``detector.backbone.language_backbone.`` ->
    ``text_encoder.``, the rest as for ``sam3.pt``). SAM 3's own file (its CLIP text tower) raises
    ``CheckpointError`` naming the fix. Pure: the input is not modified."""
    if any(k.startswith(_SAM3_TEXT) for k in state_dict):
        raise CheckpointError(
            "this is a checkpoint of SAM 3 itself (its text encoder is SAM 3's CLIP tower), not of a "
            "SAM3-LiteText model, whose text encoder is a MobileCLIP student. Fix: load it as --model sam3 "
            "(samkit.load_model('sam3', checkpoint=...)), or pass the sam3_litetext_mobileclip_*.pt file of "
            "this model (`samkit models download <name>`).")
    return _from_official(state_dict)
