"""Trained weights back into each family's official checkpoint layout.

``load_model(name, checkpoint=...)`` reads an official file through the family's registered remap
(:func:`samkit.checkpoint.remap`). A trained model is written as that official file would be: the
inverse of the remap, wrapped under ``"model"`` where the official release is (EfficientSAM and the
SAM 2 family). So the output loads unchanged in samkit and in the official code.

``official_state_dict(model, spec)`` computes the layout; :func:`save_official` writes it
atomically and checks, before writing, that the registered remap maps it back onto exactly the
model's keys (a wrong inverse is a bug, never a silently unloadable file).
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Union

import torch

from ..errors import InputError
from ..io.atomic import atomic_write_bytes
from ..specs import ModelSpec

StateDict = Dict[str, torch.Tensor]

#: checkpoint formats whose official files hold the state dict under "model"
WRAPPED_FORMATS = ("efficient_sam", "sam2", "efficienttam", "edgetam")


# --------------------------------------------------------------------------- per format
def _identity(sd: StateDict) -> StateDict:
    """SAM, MobileSAM, EdgeSAM: samkit keeps the official module names."""
    return dict(sd)


def _mobile_sam(sd: StateDict) -> StateDict:
    """MobileSAM keeps SAM's names; its official file also holds TinyViT's unused ImageNet head
    (``image_encoder.norm_head.*``, ``image_encoder.head.*``, 1000 classes), which the remap drops.
    An identity head (LayerNorm ones / zeros, zero classifier) is added so the official loader,
    which is strict, reads the file too."""
    out = dict(sd)
    neck = sd.get("image_encoder.neck.0.weight")
    if neck is not None and "image_encoder.head.weight" not in out:
        c = neck.shape[1]
        kw = {"dtype": neck.dtype, "device": neck.device}
        out["image_encoder.norm_head.weight"] = torch.ones(c, **kw)
        out["image_encoder.norm_head.bias"] = torch.zeros(c, **kw)
        out["image_encoder.head.weight"] = torch.zeros(1000, c, **kw)
        out["image_encoder.head.bias"] = torch.zeros(1000, **kw)
    return out


_SAM2_MLP = re.compile(r"^(mask_decoder\.transformer\.layers\.\d+\.mlp\.)lin([12])\.")


def _sam2(sd: StateDict) -> StateDict:
    """Inverse of ``remap_sam2``: ``prompt_encoder.`` -> ``sam_prompt_encoder.``, ``mask_decoder.``
    -> ``sam_mask_decoder.`` with the decoder transformer's ``mlp.lin1/lin2`` -> ``mlp.layers.0/1``."""
    out: StateDict = {}
    for key, value in sd.items():
        if key.startswith("prompt_encoder."):
            key = "sam_" + key
        elif key.startswith("mask_decoder."):
            key = "sam_" + _SAM2_MLP.sub(lambda m: f"{m.group(1)}layers.{int(m.group(2)) - 1}.", key)
        out[key] = value
    return out


_TRUNK = "image_encoder.trunk."
_TIMM_BLOCK = (("token_mixer.0.conv.", "token_mixer.conv."), ("token_mixer.0.conv1.", "token_mixer.conv1."),
               ("token_mixer.1.", "se."), ("channel_mixer.m.0.", "channel_mixer.conv1."),
               ("channel_mixer.m.2.", "channel_mixer.conv2."))
_TIMM_DOWN = (("token_mixer.0.", "spatial_downsample."), ("token_mixer.2.", "channel_downsample."),
              ("channel_mixer.m.0.", "ffn.conv1."), ("channel_mixer.m.2.", "ffn.conv2."))


def _timm_names(out_indices) -> Dict[int, tuple]:
    """features index -> (stage, role, block) of timm's legacy RepViT: stage ``s`` ends at
    ``out_indices[s]``; stages after the first start with ``pre_block`` and the stride-2 block."""
    names: Dict[int, tuple] = {}
    start = 1
    for s, end in enumerate(out_indices):
        i = start
        if s > 0:
            names[i], names[i + 1] = (s, "pre_block", 0), (s, "down", 0)
            i += 2
        for j in range(end - i + 1):
            names[i + j] = (s, "block", j)
        start = end + 1
    return names


def _timm_key(rest: str, names: Dict[int, tuple]) -> str:
    """``features.{i}.X`` of a :class:`RepViTTrunk` -> the timm key (inverse of ``remap_timm_repvit``)."""
    m = re.match(r"^features\.(\d+)\.(.+)$", rest)
    if m is None:
        return rest
    i, part = int(m.group(1)), m.group(2)
    if i == 0:
        stem = re.match(r"^([02])\.(.+)$", part)
        return f"stem.conv{1 if stem.group(1) == '0' else 2}.{stem.group(2)}" if stem else rest
    stage, role, j = names[i]
    table = _TIMM_DOWN if role == "down" else _TIMM_BLOCK
    head = {"down": f"stages_{stage}.downsample.", "pre_block": f"stages_{stage}.downsample.pre_block.",
            "block": f"stages_{stage}.blocks.{j}."}[role]
    for ours, theirs in table:
        if part.startswith(ours):
            return head + theirs + part[len(ours):]
    return rest


def _edgetam(sd: StateDict, model: torch.nn.Module) -> StateDict:
    """Inverse of ``remap_edgetam``: the SAM 2 renames, then the RepViT trunk back to timm's
    ``image_encoder.trunk.body.*`` keys (stage boundaries from the trunk's ``out_indices``)."""
    names = _timm_names(model.image_encoder.trunk.out_indices)
    out: StateDict = {}
    for key, value in _sam2(sd).items():
        if key.startswith(_TRUNK):
            key = _TRUNK + "body." + _timm_key(key[len(_TRUNK):], names)
        out[key] = value
    return out


_ESAM_PROMPT = (("prompt_encoder.not_a_point_embed.", "prompt_encoder.invalid_points."),
                ("prompt_encoder.point_embeddings.1.", "prompt_encoder.point_embeddings."),
                ("prompt_encoder.point_embeddings.2.", "prompt_encoder.bbox_top_left_embeddings."),
                ("prompt_encoder.point_embeddings.3.", "prompt_encoder.bbox_bottom_right_embeddings."),
                ("mask_decoder.output_upscaling.0.", "mask_decoder.final_output_upscaling_layers.0.0."),
                ("mask_decoder.output_upscaling.1.", "mask_decoder.final_output_upscaling_layers.0.1."),
                ("mask_decoder.output_upscaling.3.", "mask_decoder.final_output_upscaling_layers.1.0."))
_ESAM_HEAD = re.compile(r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.")


def _efficient_sam(sd: StateDict) -> StateDict:
    """Inverse of ``remap_efficient_sam``. ``point_embeddings.0`` (negative clicks) has no official
    key: EfficientSAM adds nothing to negative clicks, so it must still be zero."""
    neg = sd.get("prompt_encoder.point_embeddings.0.weight")
    if neg is not None and neg.device.type != "meta" and bool(neg.detach().abs().max() > 0):
        raise InputError("prompt_encoder.point_embeddings.0 (EfficientSAM's negative-click embedding) changed in "
                         "training, but EfficientSAM's checkpoint format has no such weight. Fix: keep the prompt "
                         "encoder frozen (the default) when training EfficientSAM.")
    last: Dict[str, int] = {}
    for key in sd:
        m = _ESAM_HEAD.match(key)
        if m:
            last[m.group(1)] = max(last.get(m.group(1), 0), int(m.group(2)))
    out: StateDict = {}
    for key, value in sd.items():
        if key == "prompt_encoder.point_embeddings.0.weight":
            continue
        m = _ESAM_HEAD.match(key)
        if m:
            j = int(m.group(2))
            mid = "fc." if j == last[m.group(1)] else f"layers.{j}.0."
            key = f"{m.group(1)}.{mid}{key[m.end():]}"
        elif ".mlp.lin1." in key or ".mlp.lin2." in key:
            key = key.replace(".mlp.lin1.", ".mlp.layers.0.0.").replace(".mlp.lin2.", ".mlp.fc.")
        else:
            for ours, theirs in _ESAM_PROMPT:
                if key.startswith(ours):
                    key = theirs + key[len(ours):]
                    break
        out[key] = value
    return out


_INVERSES: Dict[str, Callable] = {
    "sam": _identity, "mobile_sam": _mobile_sam, "edge_sam": _identity, "efficient_sam": _efficient_sam,
    "sam2": _sam2, "efficienttam": _sam2, "edgetam": _edgetam,
}


def supported_formats() -> List[str]:
    """Checkpoint formats that training can write (the seven image families)."""
    return sorted(_INVERSES)


def check_trainable_spec(spec: ModelSpec) -> None:
    """Refuse models whose weights training cannot write back (non-neural, several files, CLIP)."""
    ok = spec.neural and spec.checkpoint_format in _INVERSES and not spec.extra.get("requires")
    if not ok:
        raise InputError(
            f"{spec.name} cannot be trained by samkit (checkpoint format {spec.checkpoint_format!r}). Fix: choose a "
            "model of the SAM, MobileSAM, EdgeSAM, EfficientSAM, SAM 2 / 2.1, EdgeTAM or EfficientTAM families "
            "(`samkit models ls`).")


# --------------------------------------------------------------------------- the file
def official_state_dict(state_dict: Mapping[str, torch.Tensor], spec: ModelSpec,
                        model: torch.nn.Module) -> StateDict:
    """samkit keys -> the official keys of ``spec.checkpoint_format`` (tensors shared, not copied)."""
    check_trainable_spec(spec)
    fn = _INVERSES[spec.checkpoint_format]
    sd = {k: v for k, v in state_dict.items()}
    return fn(sd, model) if spec.checkpoint_format == "edgetam" else fn(sd)


def check_round_trip(official: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor],
                     spec: ModelSpec) -> None:
    """The registered remap must give back exactly ``ours`` (keys, and equal tensors: a remap may
    rebuild a constant, e.g. EfficientSAM's zero negative-click embedding)."""
    from ..checkpoint import remap

    back = remap(official, spec)
    same = set(back) == set(ours)
    differ = [k for k in ours if same and back[k] is not ours[k] and not (
        back[k].shape == ours[k].shape and back[k].dtype == ours[k].dtype and torch.equal(back[k], ours[k]))]
    if not same or differ:
        extra = (sorted(set(back) ^ set(ours)) + differ)[:5]
        raise RuntimeError(f"the inverse key layout of {spec.checkpoint_format!r} does not round-trip "
                           f"(differing keys: {extra}); this is a samkit bug")


def save_official(model: torch.nn.Module, spec: ModelSpec, path: Union[str, Path],
                  state_dict: Mapping[str, torch.Tensor] = None) -> Path:
    """Write ``model``'s weights (or ``state_dict`` in samkit keys) as ``spec``'s official file,
    atomically, so that ``load_model(spec.name, checkpoint=path)`` loads it unchanged."""
    ours = {k: v.detach().to("cpu").contiguous()
            for k, v in (state_dict if state_dict is not None else model.state_dict()).items()}
    official = official_state_dict(ours, spec, model)
    check_round_trip(official, ours, spec)
    obj = {"model": official} if spec.checkpoint_format in WRAPPED_FORMATS else official
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())
