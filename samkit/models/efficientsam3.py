"""EfficientSAM3 (Zeng et al., SimonZeng7108/efficientsam3): SAM 3 with a distilled image encoder
(EfficientViT / RepViT / TinyViT student, :mod:`samkit.backbones.efficientsam3_trunk`) and, in the
released "stage 3" models, a distilled MobileCLIP text encoder. Everything after the trunk (both
necks, the concept detector, the mask head, the interactive head and the tracker) is SAM 3's:
the model is :class:`samkit.models.sam3.Sam3Model` with the trunk (and text encoder) injected.

Released stage-3 models (HF ``Simon7108528/EfficientSAM3``, ``efficientsam3_ft/``): EV-M =
EfficientViT-B1 (``efficientsam3_efficientvit.pt``), RV-M = RepViT-M1.1 (``efficientsam3_repvit.pt``),
TV-M = TinyViT-11M (``efficientsam3_tinyvit.pt``), each with a MobileCLIP-S0 text student (context
16). Stage-1 students (``stage1_all_converted/efficient_sam3_<family>_<s|m|l>.pt``): the trunk alone
distilled, SAM 3's own text encoder (``STAGE1_TRUNKS``). Input 1008 px, SAM 3's preprocessing.

Checkpoints: the released SAM 3 layout (``detector.*`` / ``tracker.*``) with the student trunk
under ``detector.backbone.vision_backbone.trunk.model.*`` (``student_trunk.`` removed when
present, bare ``backbone.*`` image-model files prefixed with ``detector.`` as the official loader
does). Checkpoint formats ``efficientsam3_{efficientvit,repvit,tinyvit}``: SAM 3's remap
(:func:`samkit.models.sam3_remap.remap_sam3_keys`) after checking that the file holds a student of
that family; SAM 3's own file (ViT trunk) or another family's student raise ``CheckpointError``.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..backbones.efficientsam3_trunk import STUDENT_BACKBONES, StudentTrunk
from ..errors import CheckpointError
from ..backbones.mobileclip_text import POS_TABLE, mobileclip_text_encoder
from ..families import register_builder, register_remap
from . import sam3_remap
from .sam3 import SAM3_CONFIG, Sam3Config, Sam3Model

# the trunks of the released stage-3 models
RELEASED_TRUNKS = {"efficientvit": "efficientvit_b1", "repvit": "repvit_m1_1", "tinyvit": "tinyvit_11m"}
_NAMES = {"efficientvit": "EfficientViT", "repvit": "RepViT", "tinyvit": "TinyViT", "vit": "Perception Encoder ViT"}


def build_efficientsam3_trunk(kind: str, cfg: Sam3Config = SAM3_CONFIG) -> StudentTrunk:
    """The student trunk ``kind`` (a key of ``STUDENT_BACKBONES``, e.g. ``"efficientvit_b1"``) for
    a SAM 3 model of ``cfg``: ``B x 3 x S x S -> B x vit_dim x S/14 x S/14`` (1024 x 72 x 72 at 1008 px)."""
    if kind not in STUDENT_BACKBONES:
        raise ValueError(f"unknown EfficientSAM3 trunk {kind!r}; known: {', '.join(STUDENT_BACKBONES)}")
    return StudentTrunk(kind, cfg.vit_dim, cfg.image_size // cfg.patch_size)


class EfficientSam3Model(Sam3Model):
    """:class:`Sam3Model` with a student trunk; ``fuse()`` folds the trunk's BatchNorms."""

    @torch.no_grad()
    def fuse(self) -> "EfficientSam3Model":
        """Fold every BatchNorm of the student trunk into its convolution (in place; eval mode,
        after loading: the fused trunk no longer has the checkpoint's keys). Returns ``self``."""
        self.image_encoder.trunk.fuse()
        return self


def efficientsam3_model(trunk_kind: str, text_encoder: Optional[nn.Module] = None,
                        cfg: Sam3Config = SAM3_CONFIG) -> EfficientSam3Model:
    """An EfficientSAM3 model: SAM 3 (``cfg``) with the student trunk ``trunk_kind`` and
    ``text_encoder`` (the text student; None: SAM 3's own text encoder from ``cfg``). Un-initialised
    weights, training mode like ``Sam3Model``; load the checkpoint with the ``efficientsam3_<family>``
    format."""
    model = EfficientSam3Model(cfg, trunk=build_efficientsam3_trunk(trunk_kind, cfg), text_encoder=text_encoder)
    model.trunk_kind = trunk_kind
    return model


_POS_KEY = "text_encoder.encoder.positional_embedding.pos_embed.pos_embed"


def _full_position_table(sd: Dict) -> Dict:
    """A text student saved with a position table cut to its context (the official merge script
    may cut it: ``--text-pos-embed-table-size``) is zero-padded to the model's 77 rows; only the
    first ``context_length`` rows are ever read. Pure."""
    pos = sd.get(_POS_KEY)
    if pos is not None and pos.dim() == 4 and pos.shape[2] < POS_TABLE:
        sd = dict(sd)
        sd[_POS_KEY] = torch.cat([pos, pos.new_zeros(*pos.shape[:2], POS_TABLE - pos.shape[2], pos.shape[3])], 2)
    return sd


def _remap_for(family: str):
    def remap(state_dict: Dict) -> Dict:
        found = sam3_remap.trunk_family(state_dict)
        if found is not None and found != family:
            what = ("SAM 3's own checkpoint (image encoder: the Perception Encoder ViT)" if found == "vit" else
                    f"an EfficientSAM3 {_NAMES[found]} student checkpoint")
            model = "sam3" if found == "vit" else f"the EfficientSAM3 {_NAMES[found]} model (efficientsam3_{found})"
            raise CheckpointError(
                f"the checkpoint is {what}, but this model is the EfficientSAM3 {_NAMES[family]} student "
                f"(efficientsam3_{family}). Fix: load it with {model}, or pass the EfficientSAM3 "
                f"{_NAMES[family]} checkpoint (efficientsam3_{family}.pt).")
        return _full_position_table(sam3_remap.remap_sam3_keys(state_dict))

    remap.__name__ = remap.__qualname__ = f"remap_efficientsam3_{family}"
    return remap


for _family in RELEASED_TRUNKS:
    register_remap(f"efficientsam3_{_family}")(_remap_for(_family))


# the released stage-3 models: the student trunk + the MobileCLIP-S0 text student reading 16 tokens
# (the official example builds them with text_encoder_type="MobileCLIP-S0", context 16)
STAGE3_TEXT = ("MobileCLIP-S0", 16)

# the stage-1 image-encoder students (HF ``stage1_all_converted/efficient_sam3_<family>_<size>.pt``):
# sam3.pt with the student trunk spliced in, SAM 3's own text encoder
STAGE1_TRUNKS = {
    ("efficientvit", "s"): "efficientvit_b0", ("efficientvit", "m"): "efficientvit_b1",
    ("efficientvit", "l"): "efficientvit_b2", ("repvit", "s"): "repvit_m0_9", ("repvit", "m"): "repvit_m1_1",
    ("repvit", "l"): "repvit_m2_3", ("tinyvit", "s"): "tinyvit_5m", ("tinyvit", "m"): "tinyvit_11m",
    ("tinyvit", "l"): "tinyvit_21m",
}


def _register(name: str, kind: str, text: Optional[tuple], doc: str) -> None:
    """Register ``build_<name>``: the trunk ``kind`` with the text student ``text`` ((variant,
    context); None: SAM 3's own text encoder)."""
    def build() -> EfficientSam3Model:
        return efficientsam3_model(kind, text_encoder=None if text is None else mobileclip_text_encoder(*text))

    build.__name__ = build.__qualname__ = f"build_{name}"
    build.__doc__ = doc
    globals()[build.__name__] = register_builder(name)(build)


for _family, _kind in RELEASED_TRUNKS.items():
    _register(f"efficientsam3_{_family}", _kind, STAGE3_TEXT,
              f"EfficientSAM3 {_NAMES[_family]} (stage 3): the {_kind} trunk and the {STAGE3_TEXT[0]} text student, "
              f"context {STAGE3_TEXT[1]}.")
for (_family, _size), _kind in STAGE1_TRUNKS.items():
    _register(f"efficientsam3_stage1_{_family}_{_size}", _kind, None,
              f"EfficientSAM3 stage-1 ES-{_family[:2].upper()}-{_size.upper()}: the {_kind} trunk, SAM 3's text "
              "encoder.")
