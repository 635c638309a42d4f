"""Key remap of SAM 3 checkpoints (checkpoint format ``"sam3"``): the released ``sam3.pt`` and the
Hugging Face ``facebook/sam3`` safetensors (transformers' ``Sam3VideoModel`` layout) both load.

Released file (``detector.*`` + ``tracker.*``, the state dict of the official video model):
``detector.backbone.vision_backbone.`` -> ``image_encoder.``, ``detector.backbone.language_backbone.``
-> ``text_encoder.``, the other ``detector.`` parts keep their names; ``tracker.sam_prompt_encoder``
-> ``prompt_encoder``, ``tracker.sam_mask_decoder`` -> ``mask_decoder``,
``tracker.transformer.encoder`` -> ``memory_attention``, ``tracker.maskmem_backbone`` ->
``memory_encoder``, the other ``tracker.`` entries keep their names. Dropped: the ViT's
precomputed RoPE tables (``attn.freqs_cis``, recomputed) and the geometry encoder's point
projections (``points_*``: point exemplars are not used by the released inference and the
Hugging Face file does not carry them).

EfficientSAM3 student files (SimonZeng7108/efficientsam3) have the released layout with another
trunk (``...vision_backbone.trunk.model.{backbone.model,head}.*``, kept as they are); ``student_trunk.``
is deleted from every name and an image-model file without ``detector.`` / ``tracker.`` parts (keys
``backbone.*``, ...) gets the ``detector.`` prefix, as the official loaders do. Format ``"sam3"``
refuses them (:func:`trunk_family`); ``samkit.models.efficientsam3`` registers their formats.

Hugging Face file (``detector_model.*``, ``tracker_model.*``, ``tracker_neck.*``): the inverse of
transformers' conversion (``convert_sam3_video_to_hf.py``): separate q/k/v projections are packed
back (``nn.MultiheadAttention`` / ViT ``qkv`` layout), the ViT position embedding gets back its
class slot (zeros: it is never used), CLIP's ``text_projection`` is transposed back,
``tracker_model.shared_image_embedding`` (a copy of the prompt encoder's Fourier matrix) is dropped,
``point_embed`` (4 x C) is split into ``point_embeddings.N``; every other name is renamed.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import torch

from ..errors import CheckpointError
from ..families import register_remap

StateDict = Dict[str, torch.Tensor]

_OFFICIAL_PREFIXES = (
    ("detector.backbone.vision_backbone.", "image_encoder."),
    ("detector.backbone.language_backbone.", "text_encoder."),
    ("detector.", ""),
    ("tracker.sam_prompt_encoder.", "prompt_encoder."),
    ("tracker.sam_mask_decoder.", "mask_decoder."),
    ("tracker.transformer.encoder.", "memory_attention."),
    ("tracker.maskmem_backbone.", "memory_encoder."),
    ("tracker.", ""),
)
_OFFICIAL_DROP = re.compile(r"(\.attn\.freqs_cis$|^detector\.geometry_encoder\.points_)")


def _from_official(sd: StateDict) -> StateDict:
    out: StateDict = {}
    bare = not any(k.startswith(("detector.", "tracker.")) for k in sd) and any(k.startswith("backbone.") for k in sd)
    for key, value in sd.items():
        key = key.replace("student_trunk.", "")  # EfficientSAM3 files may carry this wrapper name
        if bare:  # an image-model file (no detector. / tracker. parts), as the official loader reads it
            key = "detector." + key
        if _OFFICIAL_DROP.search(key):
            continue
        for old, new in _OFFICIAL_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


# --------------------------------------------------------------------------- Hugging Face layout
Rule = Tuple[str, object]

_FPN: List[Rule] = [
    (r"fpn_layers\.0\.scale_layers\.0\.", "0.dconv_2x2_0."), (r"fpn_layers\.0\.scale_layers\.2\.", "0.dconv_2x2_1."),
    (r"fpn_layers\.1\.scale_layers\.0\.", "1.dconv_2x2."), (r"fpn_layers\.(\d)\.proj1\.", r"\1.conv_1x1."),
    (r"fpn_layers\.(\d)\.proj2\.", r"\1.conv_3x3.")]
_VIT, _TXT = r"^detector_model\.vision_encoder\.backbone\.", r"^detector_model\.text_encoder\.text_model\."
_DEC = r"^detector_model\.detr_decoder\."
# first matching rule renames the part (prefix); applied once per key
_HF_DETECTOR: List[Rule] = (
    [(r"^tracker_neck\." + p, "image_encoder.sam2_convs." + r) for p, r in _FPN]
    + [(r"^detector_model\.vision_encoder\.neck\." + p, "image_encoder.convs." + r) for p, r in _FPN]
    + [(_VIT + r"embeddings\.patch_embeddings\.projection\.", "image_encoder.trunk.patch_embed.proj."),
       (_VIT + r"embeddings\.position_embeddings$", "image_encoder.trunk.pos_embed"),
       (_VIT + r"layer_norm\.", "image_encoder.trunk.ln_pre."),
       (_VIT + r"layers\.(\d+)\.layer_norm(\d)\.", r"image_encoder.trunk.blocks.\1.norm\2."),
       (_VIT + r"layers\.(\d+)\.attention\.o_proj\.", r"image_encoder.trunk.blocks.\1.attn.proj."),
       (_VIT + r"layers\.(\d+)\.attention\.", r"image_encoder.trunk.blocks.\1.attn."),
       (_VIT + r"layers\.(\d+)\.mlp\.", r"image_encoder.trunk.blocks.\1.mlp."),
       (_TXT + r"embeddings\.token_embedding\.", "text_encoder.encoder.token_embedding."),
       (_TXT + r"embeddings\.position_embedding\.weight$", "text_encoder.encoder.positional_embedding"),
       (_TXT + r"final_layer_norm\.", "text_encoder.encoder.ln_final."),
       (_TXT + r"encoder\.layers\.(\d+)\.self_attn\.", r"text_encoder.encoder.transformer.resblocks.\1.attn."),
       (_TXT + r"encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"text_encoder.encoder.transformer.resblocks.\1.ln_\2."),
       (_TXT + r"encoder\.layers\.(\d+)\.mlp\.fc1\.", r"text_encoder.encoder.transformer.resblocks.\1.mlp.c_fc."),
       (_TXT + r"encoder\.layers\.(\d+)\.mlp\.fc2\.", r"text_encoder.encoder.transformer.resblocks.\1.mlp.c_proj."),
       (r"^detector_model\.text_encoder\.text_projection\.weight$", "text_encoder.encoder.text_projection"),
       (r"^detector_model\.text_projection\.", "text_encoder.resizer."),
       (r"^detector_model\.geometry_encoder\.layers\.(\d+)\.cross_attn\.", r"geometry_encoder.encode.\1.cross_attn_image."),
       (r"^detector_model\.geometry_encoder\.layers\.", "geometry_encoder.encode."),
       (r"^detector_model\.geometry_encoder\.vision_layer_norm\.", "geometry_encoder.img_pre_norm."),
       (r"^detector_model\.geometry_encoder\.prompt_layer_norm\.", "geometry_encoder.norm."),
       (r"^detector_model\.geometry_encoder\.output_layer_norm\.", "geometry_encoder.encode_norm."),
       (r"^detector_model\.geometry_encoder\.", "geometry_encoder."),
       (r"^detector_model\.detr_encoder\.layers\.(\d+)\.cross_attn\.", r"transformer.encoder.layers.\1.cross_attn_image."),
       (r"^detector_model\.detr_encoder\.", "transformer.encoder."),
       (_DEC + r"layers\.(\d+)\.text_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.catext_norm."),
       (_DEC + r"layers\.(\d+)\.vision_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
       (_DEC + r"layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
       (_DEC + r"layers\.(\d+)\.mlp_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
       (_DEC + r"layers\.(\d+)\.text_cross_attn\.", r"transformer.decoder.layers.\1.ca_text."),
       (_DEC + r"layers\.(\d+)\.vision_cross_attn\.", r"transformer.decoder.layers.\1.cross_attn."),
       (_DEC + r"presence_head\.", "transformer.decoder.presence_token_head."),
       (_DEC + r"presence_layer_norm\.", "transformer.decoder.presence_token_out_norm."),
       (_DEC + r"output_layer_norm\.", "transformer.decoder.norm."),
       (_DEC + r"box_head\.", "transformer.decoder.bbox_embed."),
       (_DEC + r"box_rpb_embed_([xy])\.", r"transformer.decoder.boxRPB_embed_\1."),
       (_DEC, "transformer.decoder."),
       (r"^detector_model\.dot_product_scoring\.text_mlp_out_norm\.", "dot_prod_scoring.prompt_mlp.out_norm."),
       (r"^detector_model\.dot_product_scoring\.text_mlp\.", "dot_prod_scoring.prompt_mlp."),
       (r"^detector_model\.dot_product_scoring\.text_proj\.", "dot_prod_scoring.prompt_proj."),
       (r"^detector_model\.dot_product_scoring\.query_proj\.", "dot_prod_scoring.hs_proj."),
       (r"^detector_model\.mask_decoder\.mask_embedder\.", "segmentation_head.mask_predictor.mask_embed."),
       (r"^detector_model\.mask_decoder\.instance_projection\.", "segmentation_head.instance_seg_head."),
       (r"^detector_model\.mask_decoder\.semantic_projection\.", "segmentation_head.semantic_seg_head."),
       (r"^detector_model\.mask_decoder\.prompt_cross_attn_norm\.", "segmentation_head.cross_attn_norm."),
       (r"^detector_model\.mask_decoder\.prompt_cross_attn\.", "segmentation_head.cross_attend_prompt."),
       (r"^detector_model\.mask_decoder\.", "segmentation_head."),
       ])
_HEAD3 = r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head|object_pointer_proj)"
# every matching rule applies, in order
_HF_INNER: List[Rule] = [
    (r"^(geometry_encoder\.encode|transformer\.(?:en|de)coder\.layers)\.(\d+)\.mlp\.fc(\d)\.", r"\1.\2.linear\3."),
    (r"^(geometry_encoder\.encode|transformer\.encoder\.layers)\.(\d+)\.layer_norm(\d)\.", r"\1.\2.norm\3."),
    (r"^(transformer\.decoder|dot_prod_scoring)\.(.*)\.layer([123])\.", lambda m: f"{m[1]}.{m[2]}.layers.{int(m[3]) - 1}."),
    (r"^tracker_model\.no_memory_embedding$", "no_mem_embed"),
    (r"^tracker_model\.no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^tracker_model\.memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^tracker_model\.no_object_pointer$", "no_obj_ptr"),
    (r"^tracker_model\.occlusion_spatial_embedding_parameter$", "no_obj_embed_spatial"),
    (r"^tracker_model\.temporal_positional_encoding_projection_layer\.", "obj_ptr_tpos_proj."),
    (r"^tracker_model\.", ""),
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$", "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "prompt_encoder.mask_downscaling.6."),
    (r"^mask_decoder\.upscale_conv1\.", "mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "mask_decoder.output_upscaling.3."),
    (r"^mask_decoder\.transformer\.layer_norm_final_attn\.", "mask_decoder.transformer.norm_final_attn."),
    (r"^(mask_decoder\.transformer|memory_attention)\.layers\.(\d+)\.layer_norm(\d)\.", r"\1.layers.\2.norm\3."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_in\.", r"mask_decoder.transformer.layers.\1.mlp.lin1."),
    (r"^mask_decoder\.transformer\.layers\.(\d+)\.mlp\.proj_out\.", r"mask_decoder.transformer.layers.\1.mlp.lin2."),
    (_HEAD3 + r"\.layers\.0\.", r"\1.layers.1."),
    (_HEAD3 + r"\.proj_in\.", r"\1.layers.0."),
    (_HEAD3 + r"\.proj_out\.", r"\1.layers.2."),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.conv\.", lambda m: f"memory_encoder.mask_downsampler.encoder.{3 * int(m[1])}."),
    (r"^memory_encoder\.mask_downsampler\.layers\.(\d+)\.layer_norm\.",
     lambda m: f"memory_encoder.mask_downsampler.encoder.{3 * int(m[1]) + 1}."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.scale$", r"memory_encoder.fuser.layers.\1.gamma"),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.depthwise_conv\.", r"memory_encoder.fuser.layers.\1.dwconv."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.pointwise_conv(\d)\.", r"memory_encoder.fuser.layers.\1.pwconv\2."),
    (r"^memory_encoder\.memory_fuser\.layers\.(\d+)\.layer_norm\.", r"memory_encoder.fuser.layers.\1.norm."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"\.o_proj\.", ".out_proj."),
]
_HF_DETECTOR_C = [(re.compile(p), r) for p, r in _HF_DETECTOR]
_HF_INNER_C = [(re.compile(p), r) for p, r in _HF_INNER]
_PACKED = ("image_encoder.", "text_encoder.", "geometry_encoder.", "transformer.", "segmentation_head.")


def _hf_name(key: str) -> str:
    for pat, rep in _HF_DETECTOR_C:
        new, n = pat.subn(rep, key)
        if n:
            key = new
            break
    for pat, rep in _HF_INNER_C:
        key = pat.sub(rep, key)
    return key


def _pack_qkv(out: StateDict) -> None:
    """``X.{q,k,v}_proj.{weight,bias}`` of the detector's attentions -> ``X.qkv.*`` (ViT) or
    ``X.in_proj_{weight,bias}`` (``nn.MultiheadAttention`` layout), in place."""
    for key in [k for k in out if k.startswith(_PACKED) and ".q_proj." in k]:
        base, kind = key.rsplit(".q_proj.", 1)
        parts = [out.pop(f"{base}.{p}_proj.{kind}") for p in "qkv"]
        name = f"{base}.qkv.{kind}" if base.startswith("image_encoder.trunk.") else f"{base}.in_proj_{kind}"
        out[name] = torch.cat(parts, dim=0)


def _from_hf(sd: StateDict) -> StateDict:
    out: StateDict = {}
    downsampler_layers = set()
    for key, value in sd.items():
        if key.startswith("tracker_model.shared_image_embedding."):
            continue  # the prompt encoder's own copy is kept
        m = re.match(r"^tracker_model\.memory_encoder\.mask_downsampler\.layers\.(\d+)\.", key)
        if m:
            downsampler_layers.add(int(m[1]))
        if key == "tracker_model.prompt_encoder.point_embed.weight":
            for i in range(value.shape[0]):
                out[f"prompt_encoder.point_embeddings.{i}.weight"] = value[i:i + 1]
            continue
        if key.startswith("tracker_model.memory_encoder.mask_downsampler.final_conv."):
            key = None  # placed after the stages are counted
        if key is not None:
            out[_hf_name(key)] = value
    for kind in ("weight", "bias"):
        final = sd.get(f"tracker_model.memory_encoder.mask_downsampler.final_conv.{kind}")
        if final is not None:
            out[f"memory_encoder.mask_downsampler.encoder.{3 * len(downsampler_layers)}.{kind}"] = final
    _pack_qkv(out)
    pos = out.get("image_encoder.trunk.pos_embed")
    if pos is not None:  # the class slot transformers drops (never used: the class token is not kept)
        out["image_encoder.trunk.pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    proj = out.get("text_encoder.encoder.text_projection")
    if proj is not None:
        out["text_encoder.encoder.text_projection"] = proj.t()
    return out


_HF_PREFIXES = ("detector_model.", "tracker_model.", "tracker_neck.")


def remap_sam3_keys(state_dict: StateDict) -> StateDict:
    """The released ``sam3.pt`` or the Hugging Face ``facebook/sam3`` safetensors -> samkit
    keys (module docstring); EfficientSAM3 student files too (their trunk keys
    ``...vision_backbone.trunk.model.*`` keep their names under ``image_encoder.trunk.model.``).
    Pure: the input is not modified."""
    if any(k.startswith(_HF_PREFIXES) for k in state_dict):
        return _from_hf(state_dict)
    return _from_official(state_dict)


# --------------------------------------------------------------------------- which image encoder
_STUDENT_TRUNK = re.compile(r"trunk\.model\.backbone\.model\.(input_stem|stages|features|layers|patch_embed)\.")
_STUDENT_FAMILY = {"input_stem": "efficientvit", "stages": "efficientvit", "features": "repvit",
                   "layers": "tinyvit", "patch_embed": "tinyvit"}


def trunk_family(state_dict: StateDict) -> Optional[str]:
    """The image encoder a SAM 3-layout checkpoint holds: ``"vit"`` (SAM 3's Perception Encoder),
    ``"efficientvit"`` / ``"repvit"`` / ``"tinyvit"`` (EfficientSAM3 students), or None (no SAM 3
    trunk keys: e.g. another family's file, whose keys the strict load then lists)."""
    for key in state_dict:
        if "vision_backbone.trunk." in key:  # released layout (also without "detector.")
            m = _STUDENT_TRUNK.search(key.replace("student_trunk.", ""))
            if m:
                return _STUDENT_FAMILY[m[1]]
            if re.search(r"trunk\.(blocks\.\d+\.attn\.|patch_embed\.proj\.)", key):
                return "vit"
        elif key.startswith("detector_model.vision_encoder.backbone."):
            return "vit"
    return None


@register_remap("sam3")
def remap_sam3(state_dict: StateDict) -> StateDict:
    """Checkpoint format ``"sam3"``: :func:`remap_sam3_keys`. An EfficientSAM3 student file
    (another image encoder) raises ``CheckpointError`` naming the model to load it with."""
    family = trunk_family(state_dict)
    if family not in (None, "vit"):
        raise CheckpointError(
            f"the checkpoint is an EfficientSAM3 student (image encoder: {family}), not SAM 3's own; SAM 3 "
            f"needs its Perception Encoder ViT weights. Fix: load it with the EfficientSAM3 {family} model "
            f"(efficientsam3_{family}; samkit.models.efficientsam3.efficientsam3_model), or pass sam3.pt.")
    return remap_sam3_keys(state_dict)
