"""TEST-ONLY: SAM 3 weights in the released layouts and Hugging Face transformers as the oracle.

* ``REDUCED``: a small SAM 3 (same code paths: windowed + global RoPE blocks, tiled position
  embedding, 4-level necks, every detector part, the interactive head) and
  ``hf_detector_config`` / ``hf_tracker_config``: transformers configurations built from the
  same numbers (``layer_norm_eps`` of the ViT set to the official 1e-5; transformers' default
  is 1e-6).
* ``synth_official(cfg)``: deterministic weights in the layout of the released ``sam3.pt``
  (``detector.*`` / ``tracker.*``, including the RoPE tables ``attn.freqs_cis`` and the unused
  point projections of the geometry encoder), values by the rules of
  ``shared/parity/synth_weights.py``. ``to_official`` maps samkit's key names to the released
  ones (its extra keys are added here); tests/sam3/manifest_official.json checks it at full size.
* ``official_to_hf(sd)``: the released layout -> transformers' ``Sam3VideoModel`` layout (the
  ``facebook/sam3`` safetensors), restating transformers' ``convert_sam3_video_to_hf.py``: q/k/v
  split, class slot of the position embedding dropped, CLIP text projection transposed,
  SAM 2-style tracker names.
* ``tv_roi_align``: torchvision's ``roi_align`` (not aligned, adaptive sampling), written out
  per sample; transformers' geometry encoder calls it and torchvision cannot be installed here.
"""
from __future__ import annotations

import functools
import importlib
import math
import re
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from samkit.models.sam3 import Sam3Config, Sam3Model  # noqa: E402
from samkit.memory.config import SAM3 as SAM3_MEMORY  # noqa: E402

HERE = Path(__file__).resolve().parent
REDUCED = Sam3Config(image_size=252, patch_size=14, vit_dim=64, vit_depth=4, vit_heads=4, vit_mlp=128, window=6,
                     global_blocks=(1, 3), pretrain_size=84, d_model=128, heads=4, ffn=64, geometry_layers=1,
                     encoder_layers=2, decoder_layers=2, num_queries=16, text_width=64, text_heads=4, text_layers=2,
                     sam_heads=4, sam_mlp=64, iou_hidden=32, memory=SAM3_MEMORY)  # memory width 64: fixed in transformers


# --------------------------------------------------------------------------- released layout
_TO_OFFICIAL = (("image_encoder.", "detector.backbone.vision_backbone."),
                ("text_encoder.", "detector.backbone.language_backbone."),
                ("geometry_encoder.", "detector.geometry_encoder."), ("transformer.", "detector.transformer."),
                ("segmentation_head.", "detector.segmentation_head."), ("dot_prod_scoring.", "detector.dot_prod_scoring."),
                ("prompt_encoder.", "tracker.sam_prompt_encoder."), ("mask_decoder.", "tracker.sam_mask_decoder."),
                ("memory_attention.", "tracker.transformer.encoder."), ("memory_encoder.", "tracker.maskmem_backbone."))


def load_reduced(cfg: Sam3Config = REDUCED, seed: int = 0) -> Sam3Model:
    """A reduced SAM 3 loaded through samkit's loader from synthesized released-layout weights,
    with the ``sam3`` spec (eval mode)."""
    from samkit.checkpoint import load_into
    from samkit.specs import get_spec

    model = Sam3Model(cfg).eval()
    load_into(model, synth_official(cfg, seed), "sam3")
    model.spec = get_spec("sam3")
    return model


def to_official(key: str) -> str:
    for ours, theirs in _TO_OFFICIAL:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return "tracker." + key


def official_manifest(cfg: Sam3Config) -> List[list]:
    """``[key, shape, dtype]`` of the released layout of a model built with ``cfg``."""
    with torch.device("meta"):
        model = Sam3Model(cfg)
    rows = [[to_official(k), list(v.shape), "float32"] for k, v in model.state_dict().items()]
    grid, hd, d = cfg.image_size // cfg.patch_size, cfg.vit_dim // cfg.vit_heads, cfg.d_model
    for i in range(cfg.vit_depth):
        side = grid if i in cfg.global_blocks else cfg.window
        rows.append([f"detector.backbone.vision_backbone.trunk.blocks.{i}.attn.freqs_cis", [side * side, hd // 2],
                     "complex64"])
    for name, shape in (("points_direct_project.weight", [d, 2]), ("points_direct_project.bias", [d]),
                        ("points_pool_project.weight", [d, d]), ("points_pool_project.bias", [d]),
                        ("points_pos_enc_project.weight", [d, d]), ("points_pos_enc_project.bias", [d])):
        rows.append(["detector.geometry_encoder." + name, shape, "float32"])
    return rows


def _synth(key: str, shape, dtype: str, seed: int) -> torch.Tensor:
    from parity import _synth_module

    if dtype == "complex64":
        rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(key.encode())]))
        ang = rng.uniform(-math.pi, math.pi, size=shape)
        return torch.polar(torch.ones(shape), torch.from_numpy(ang).float())
    return _synth_module().synth_tensor(key, shape, dtype, seed)


def synth_official(cfg: Sam3Config = REDUCED, seed: int = 0) -> Dict[str, torch.Tensor]:
    """The released-layout state dict of ``cfg`` with synthesized values. The reduced
    configuration's tensors are made once per process (each call returns a new dict of the same
    tensors: callers copy them into models and never change them in place); other sizes, e.g.
    the released one (3.4 GB), are made afresh and not kept."""
    if cfg == REDUCED:
        return dict(_synth_reduced(seed))
    return {k: _synth(k, s, d, seed) for k, s, d in official_manifest(cfg)}


@functools.lru_cache(maxsize=2)
def _synth_reduced(seed: int) -> Dict[str, torch.Tensor]:
    return {k: _synth(k, s, d, seed) for k, s, d in official_manifest(REDUCED)}


# --------------------------------------------------------------------------- transformers' layout
_VIT = "detector_model.vision_encoder.backbone."
_DETECTOR_RULES = [  # (pattern, replacement) on "detector_model." keys, applied in order
    (r"backbone\.vision_backbone\.trunk\.", "vision_encoder.backbone."),
    (r"vision_encoder\.backbone\.pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (r"vision_encoder\.backbone\.patch_embed\.proj\.", "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (r"vision_encoder\.backbone\.ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (r"vision_encoder\.backbone\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.layers.\1.layer_norm\2."),
    (r"vision_encoder\.backbone\.blocks\.(\d+)\.attn\.qkv\.", r"vision_encoder.backbone.layers.\1.attention.qkv."),
    (r"vision_encoder\.backbone\.blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (r"vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    (r"backbone\.vision_backbone\.(convs|sam2_convs)\.(\d+)\.dconv_2x2_0\.", r"\1.fpn_layers.\2.scale_layers.0."),
    (r"backbone\.vision_backbone\.(convs|sam2_convs)\.(\d+)\.dconv_2x2_1\.", r"\1.fpn_layers.\2.scale_layers.2."),
    (r"backbone\.vision_backbone\.(convs|sam2_convs)\.(\d+)\.dconv_2x2\.", r"\1.fpn_layers.\2.scale_layers.0."),
    (r"backbone\.vision_backbone\.(convs|sam2_convs)\.(\d+)\.conv_1x1\.", r"\1.fpn_layers.\2.proj1."),
    (r"backbone\.vision_backbone\.(convs|sam2_convs)\.(\d+)\.conv_3x3\.", r"\1.fpn_layers.\2.proj2."),
    (r"detector_model\.convs\.", "detector_model.vision_encoder.neck."),
    (r"^detector_model\.sam2_convs\.", "tracker_neck."),
    (r"backbone\.language_backbone\.encoder\.", "text_encoder."),
    (r"text_encoder\.token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (r"text_encoder\.positional_embedding$", "text_encoder.text_model.embeddings.position_embedding.weight"),
    (r"text_encoder\.ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (r"text_encoder\.text_projection$", "text_encoder.text_projection.weight"),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.attn\.", r"text_encoder.text_model.encoder.layers.\1.self_attn."),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.ln_(\d)\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm\2."),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (r"text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    (r"backbone\.language_backbone\.resizer\.", "text_projection."),
    (r"geometry_encoder\.encode\.(\d+)\.cross_attn_image\.", r"geometry_encoder.layers.\1.cross_attn."),
    (r"geometry_encoder\.encode\.(\d+)\.linear(\d)\.", r"geometry_encoder.layers.\1.mlp.fc\2."),
    (r"geometry_encoder\.encode\.(\d+)\.norm(\d)\.", r"geometry_encoder.layers.\1.layer_norm\2."),
    (r"geometry_encoder\.encode\.", "geometry_encoder.layers."),
    (r"geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"transformer\.encoder\.layers\.(\d+)\.cross_attn_image\.", r"detr_encoder.layers.\1.cross_attn."),
    (r"transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", r"detr_encoder.layers.\1.mlp.fc\2."),
    (r"transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", r"detr_encoder.layers.\1.layer_norm\2."),
    (r"transformer\.encoder\.", "detr_encoder."),
    (r"transformer\.decoder\.presence_token_head\.layers\.(\d)\.", lambda m: f"detr_decoder.presence_head.layer{int(m[1]) + 1}."),
    (r"transformer\.decoder\.presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (r"transformer\.decoder\.norm\.", "detr_decoder.output_layer_norm."),
    (r"transformer\.decoder\.bbox_embed\.layers\.(\d)\.", lambda m: f"detr_decoder.box_head.layer{int(m[1]) + 1}."),
    (r"transformer\.decoder\.ref_point_head\.layers\.(\d)\.", lambda m: f"detr_decoder.ref_point_head.layer{int(m[1]) + 1}."),
    (r"transformer\.decoder\.boxRPB_embed_([xy])\.layers\.(\d)\.", lambda m: f"detr_decoder.box_rpb_embed_{m[1]}.layer{int(m[2]) + 1}."),
    (r"transformer\.decoder\.layers\.(\d+)\.ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (r"transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (r"transformer\.decoder\.layers\.(\d+)\.linear(\d)\.", r"detr_decoder.layers.\1.mlp.fc\2."),
    (r"transformer\.decoder\.layers\.(\d+)\.norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (r"transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (r"transformer\.decoder\.layers\.(\d+)\.norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (r"transformer\.decoder\.layers\.(\d+)\.norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (r"transformer\.decoder\.", "detr_decoder."),
    (r"dot_prod_scoring\.prompt_mlp\.layers\.(\d)\.", lambda m: f"dot_product_scoring.text_mlp.layer{int(m[1]) + 1}."),
    (r"dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    (r"segmentation_head\.pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (r"segmentation_head\.mask_predictor\.mask_embed\.", "mask_decoder.mask_embedder."),
    (r"segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
    (r"^(?!detector_model\.text_encoder\.)(.*)\.out_proj\.", r"\1.o_proj."),  # CLIP keeps out_proj
]
_HEAD3 = r"(output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head|object_pointer_proj)"
_TRACKER_RULES = [  # on "tracker." keys with the prefix removed, applied in order
    (r"^sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", "prompt_encoder.shared_embedding.positional_embedding"),
    (r"^sam_prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^sam_mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^sam_mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^sam_mask_decoder\.transformer\.norm_final_attn\.", "mask_decoder.transformer.layer_norm_final_attn."),
    (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.", r"mask_decoder.transformer.layers.\1.layer_norm\2."),
    (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.lin1\.", r"mask_decoder.transformer.layers.\1.mlp.proj_in."),
    (r"^sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.lin2\.", r"mask_decoder.transformer.layers.\1.mlp.proj_out."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (_HEAD3 + r"\.layers\.0\.", r"\1.proj_in."),
    (_HEAD3 + r"\.layers\.1\.", r"\1.layers.0."),
    (_HEAD3 + r"\.layers\.2\.", r"\1.proj_out."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", r"memory_attention.layers.\1.layer_norm\2."),
    (r"^transformer\.encoder\.norm\.", "memory_attention.layer_norm."),
    (r"^transformer\.encoder\.", "memory_attention."),
    (r"^maskmem_backbone\.mask_downsampler\.encoder\.(\d+)\.",
     lambda m: (f"memory_encoder.mask_downsampler.layers.{int(m[1]) // 3}.conv." if int(m[1]) % 3 == 0 and int(m[1]) < 12
                else f"memory_encoder.mask_downsampler.layers.{int(m[1]) // 3}.layer_norm." if int(m[1]) < 12
                else "memory_encoder.mask_downsampler.final_conv.")),
    (r"^maskmem_backbone\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^maskmem_backbone\.fuser\.layers\.(\d+)\.gamma$", r"memory_encoder.memory_fuser.layers.\1.scale"),
    (r"^maskmem_backbone\.fuser\.layers\.(\d+)\.dwconv\.", r"memory_encoder.memory_fuser.layers.\1.depthwise_conv."),
    (r"^maskmem_backbone\.fuser\.layers\.(\d+)\.pwconv(\d)\.", r"memory_encoder.memory_fuser.layers.\1.pointwise_conv\2."),
    (r"^maskmem_backbone\.fuser\.layers\.(\d+)\.norm\.", r"memory_encoder.memory_fuser.layers.\1.layer_norm."),
    (r"^maskmem_backbone\.out_proj\.", "memory_encoder.projection."),
    (r"^no_mem_embed$", "no_memory_embedding"), (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"), (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"\.out_proj\.", ".o_proj."),
]


def _apply(rules, key: str) -> str:
    for pat, rep in rules:
        key = re.sub(pat, rep, key)
    return key


def official_to_hf(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out: Dict[str, torch.Tensor] = {}
    points: Dict[int, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith("attn.freqs_cis") or ".geometry_encoder.points_" in key:
            continue  # recomputed / not ported by transformers
        if key.startswith("detector."):
            new = _apply(_DETECTOR_RULES, "detector_model." + key[len("detector."):])
        else:
            tail = key[len("tracker."):]
            m = re.match(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$", tail)
            if m:
                points[int(m[1])] = value
                continue
            new = "tracker_model." + _apply(_TRACKER_RULES, tail)
        if new.endswith("position_embeddings"):
            value = value[:, 1:]  # transformers drops the class slot
        if new == "detector_model.text_encoder.text_projection.weight":
            value = value.t()
        out[new] = value
    out["tracker_model.prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)])
    out["tracker_model.shared_image_embedding.positional_embedding"] = \
        out["tracker_model.prompt_encoder.shared_embedding.positional_embedding"].clone()
    for key in [k for k in out if k.endswith(("qkv.weight", "qkv.bias", "in_proj_weight", "in_proj_bias"))]:
        packed = out.pop(key)
        kind = "weight" if key.endswith("weight") else "bias"
        base = key[: -len(f"qkv.{kind}")] if ".qkv." in key else key[: -len(f"in_proj_{kind}")]
        for part, t in zip("qkv", packed.chunk(3, dim=0)):
            out[f"{base}{part}_proj.{kind}"] = t
    return out


# --------------------------------------------------------------------------- transformers models
from oracle_shims import torchvision_hidden as _without_torchvision  # noqa: E402


@functools.lru_cache(maxsize=1)
def transformers_modules() -> SimpleNamespace:
    """transformers' SAM 3 modules, imported once with torchvision hidden."""

    with _without_torchvision():
        iu = importlib.import_module("transformers.utils.import_utils")
        iu.is_torchvision_available.cache_clear()
        assert not iu.is_torchvision_available()
        transformers = importlib.import_module("transformers")
        modeling_sam3 = importlib.import_module("transformers.models.sam3.modeling_sam3")
        for name in ("Sam3Config", "Sam3Model", "Sam3VisionConfig", "Sam3ViTConfig", "Sam3TrackerConfig",
                     "Sam3TrackerModel", "Sam3VideoConfig", "Sam3VideoModel", "Sam3TrackerVideoConfig"):
            getattr(transformers, name)
        importlib.import_module("transformers.models.sam3_video.modeling_sam3_video")
    modeling_sam3.torchvision = SimpleNamespace(ops=SimpleNamespace(roi_align=tv_roi_align))
    return SimpleNamespace(transformers=transformers, modeling_sam3=modeling_sam3)


def tv_roi_align(features: torch.Tensor, boxes: List[torch.Tensor], output_size: int, spatial_scale: float = 1.0,
                 sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """torchvision.ops.roi_align for a list of per-image ``K_i x 4`` boxes (CPU kernel semantics)."""
    _, c, h, w = features.shape
    rows = []
    for b, bx in enumerate(boxes):
        for x1, y1, x2, y2 in bx.tolist():
            off = 0.5 if aligned else 0.0
            x1, y1, x2, y2 = x1 * spatial_scale - off, y1 * spatial_scale - off, x2 * spatial_scale - off, y2 * spatial_scale - off
            rw, rh = x2 - x1, y2 - y1
            if not aligned:
                rw, rh = max(rw, 1.0), max(rh, 1.0)
            bh, bw = rh / output_size, rw / output_size
            gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / output_size)
            gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / output_size)
            out = torch.zeros(c, output_size, output_size, dtype=features.dtype)
            for py in range(output_size):
                for px in range(output_size):
                    acc = torch.zeros(c, dtype=torch.float64)
                    for iy in range(gh):
                        y = y1 + py * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = x1 + px * bw + (ix + 0.5) * bw / gw
                            acc += _bilinear(features[b], y, x, h, w)
                    out[:, py, px] = (acc / max(gh * gw, 1)).to(features.dtype)
            rows.append(out)
    return torch.stack(rows)


def _bilinear(f: torch.Tensor, y: float, x: float, h: int, w: int) -> torch.Tensor:
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return torch.zeros(f.shape[0], dtype=torch.float64)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    g = f.double()
    return ((1 - ly) * (1 - lx) * g[:, y0, x0] + (1 - ly) * lx * g[:, y0, x1] + ly * (1 - lx) * g[:, y1, x0]
            + ly * lx * g[:, y1, x1])


def _vision_config(cfg: Sam3Config, scales):
    tf = transformers_modules().transformers
    Sam3VisionConfig, Sam3ViTConfig = tf.Sam3VisionConfig, tf.Sam3ViTConfig

    g = cfg.image_size // cfg.patch_size
    vit = Sam3ViTConfig(hidden_size=cfg.vit_dim, intermediate_size=cfg.vit_mlp, num_hidden_layers=cfg.vit_depth,
                        num_attention_heads=cfg.vit_heads, global_attn_indexes=list(cfg.global_blocks),
                        window_size=cfg.window, image_size=cfg.image_size, patch_size=cfg.patch_size,
                        pretrain_image_size=cfg.pretrain_size, layer_norm_eps=1e-5)
    return Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=cfg.d_model, scale_factors=list(scales),
                            backbone_feature_sizes=[[4 * g, 4 * g], [2 * g, 2 * g], [g, g]])


def hf_detector(cfg: Sam3Config, hf_sd: Dict[str, torch.Tensor], assign: bool = False):
    """transformers' ``Sam3Model`` with ``cfg``'s numbers and the detector part of ``hf_sd``
    (``assign``: the model takes the tensors themselves, no copy)."""
    model = transformers_modules().transformers.Sam3Model(hf_detector_config(cfg)).eval()
    sd = {k[len("detector_model."):]: v for k, v in hf_sd.items() if k.startswith("detector_model.")}
    model.load_state_dict(sd, strict=True, assign=assign)
    return model


def detector_subconfigs(cfg: Sam3Config) -> dict:
    """The keyword arguments of transformers' detector configurations (``Sam3Config``,
    ``Sam3LiteTextConfig``) other than the text encoder's, with ``cfg``'s numbers."""
    d, h, f = cfg.d_model, cfg.heads, cfg.ffn
    return dict(vision_config=_vision_config(cfg, (4.0, 2.0, 1.0, 0.5)),
                geometry_encoder_config=dict(hidden_size=d, num_layers=cfg.geometry_layers, num_attention_heads=h,
                                             intermediate_size=f),
                detr_encoder_config=dict(hidden_size=d, num_layers=cfg.encoder_layers, num_attention_heads=h,
                                         intermediate_size=f),
                detr_decoder_config=dict(hidden_size=d, num_layers=cfg.decoder_layers, num_attention_heads=h,
                                         intermediate_size=f, num_queries=cfg.num_queries),
                mask_decoder_config=dict(hidden_size=d, num_attention_heads=h))


def hf_detector_config(cfg: Sam3Config):
    HFConfig = transformers_modules().transformers.Sam3Config
    text = dict(model_type="clip_text_model", vocab_size=cfg.vocab_size, hidden_size=cfg.text_width,
                intermediate_size=4 * cfg.text_width, projection_dim=512, num_hidden_layers=cfg.text_layers,
                num_attention_heads=cfg.text_heads, max_position_embeddings=cfg.context_length, hidden_act="gelu")
    return HFConfig(text_config=text, **detector_subconfigs(cfg))


def hf_tracker(cfg: Sam3Config, hf_sd: Dict[str, torch.Tensor], assign: bool = False):
    """transformers' ``Sam3TrackerModel`` (interactive head) on the shared ViT with the tracker
    neck. Its vision config keeps the three used neck levels (scale factors 4, 2, 1): with the
    default four levels the standalone model adds ``no_memory_embedding`` to the dropped 0.5
    level (``Sam3VideoModel`` drops that level before the tracker, as upstream does)."""
    tf = transformers_modules().transformers
    Sam3TrackerConfig, Sam3TrackerModel = tf.Sam3TrackerConfig, tf.Sam3TrackerModel
    hf_cfg = Sam3TrackerConfig(
        vision_config=_vision_config(cfg, (4.0, 2.0, 1.0)),
        prompt_encoder_config=dict(hidden_size=cfg.d_model, image_size=cfg.image_size, patch_size=cfg.patch_size),
        mask_decoder_config=dict(hidden_size=cfg.d_model, mlp_dim=cfg.sam_mlp, num_attention_heads=cfg.sam_heads,
                                 iou_head_hidden_dim=cfg.iou_hidden))
    model = Sam3TrackerModel(hf_cfg).eval()
    sd = {}
    for k, v in hf_sd.items():
        if k.startswith("detector_model.vision_encoder.backbone."):
            sd[k[len("detector_model."):]] = v
        elif k.startswith("tracker_neck.") and ".fpn_layers.3." not in k:
            sd["vision_encoder.neck." + k[len("tracker_neck."):]] = v
        elif k.startswith("tracker_model.") and k[len("tracker_model."):] in model.state_dict():
            sd[k[len("tracker_model."):]] = v
    model.load_state_dict(sd, strict=True, assign=assign)
    return model


def hf_video(cfg: Sam3Config, hf_sd: Dict[str, torch.Tensor], **video_options):
    """transformers' ``Sam3VideoModel`` (detector, tracker with memory, tracker neck) with
    ``cfg``'s numbers, restated to the official code in four places (module docstring of
    ``samkit.video.concept``): the text-only prompt ends with the geometry CLS token (a padding
    box stands for "no box"), masks enter memory as sigmoid -> scale -> resize, a mask prompt's
    object pointer comes from the decoder's single-mask token (upstream ``_use_mask_as_output``
    runs the heads without multimask output), and an object removed on a frame leaves after that
    frame's outputs are built (transformers removes it first and then pairs the remaining ids
    with the masks of all tracks, shifting the masks of the later ids by one)."""
    tf = transformers_modules().transformers
    g, d = cfg.image_size // cfg.patch_size, cfg.d_model
    mem = cfg.memory
    tracker = tf.Sam3TrackerVideoConfig(
        vision_config=_vision_config(cfg, (4.0, 2.0, 1.0, 0.5)),
        prompt_encoder_config=dict(hidden_size=d, image_size=cfg.image_size, patch_size=cfg.patch_size),
        mask_decoder_config=dict(hidden_size=d, mlp_dim=cfg.sam_mlp, num_attention_heads=cfg.sam_heads,
                                 iou_head_hidden_dim=cfg.iou_hidden),
        memory_attention_hidden_size=d, memory_attention_rope_feat_sizes=[g, g], memory_encoder_hidden_size=d,
        memory_encoder_output_channels=mem.mem_dim, mask_downsampler_embed_dim=d, memory_fuser_embed_dim=d,
        memory_fuser_intermediate_dim=4 * d, image_size=cfg.image_size)
    config = tf.Sam3VideoConfig(detector_config=hf_detector_config(cfg), tracker_config=tracker,
                                low_res_mask_size=4 * g, **video_options)
    model = tf.Sam3VideoModel(config).eval()
    model.load_state_dict(hf_sd, strict=True)
    det_forward = model.detector_model.forward

    def detector_with_cls(*args, **kwargs):
        if kwargs.get("input_boxes") is None:
            b = kwargs["vision_embeds"].fpn_hidden_states[0].shape[0]
            kwargs["input_boxes"] = torch.zeros(b, 1, 4)
            kwargs["input_boxes_labels"] = torch.full((b, 1), -10)
        return det_forward(*args, **kwargs)

    model.detector_model.forward = detector_with_cls
    trk = model.tracker_model
    size = 4 * trk.prompt_encoder.mask_input_size[0]

    def encode_new_memory(current_vision_feats, pred_masks_high_res, object_score_logits, is_mask_from_pts):
        b, c = current_vision_feats.size(1), trk.hidden_dim
        h, w = trk.backbone_feature_sizes[-1]
        pix = current_vision_feats.permute(1, 2, 0).view(b, c, h, w)
        m = torch.sigmoid(pred_masks_high_res.float()) * 20.0 - 10.0
        if tuple(m.shape[-2:]) != (size, size):
            m = torch.nn.functional.interpolate(m, size=(size, size), mode="bilinear", align_corners=False,
                                                antialias=True)
        feats, pos = trk.memory_encoder(pix, m)
        appearing = (object_score_logits > 0).float()
        feats = feats + (1 - appearing[..., None]) * trk.occlusion_spatial_embedding_parameter[..., None, None]
        return feats.to(torch.bfloat16).flatten(2).permute(2, 0, 1), pos.flatten(2).permute(2, 0, 1)

    trk._encode_new_memory = encode_new_memory
    single_frame_forward = trk._single_frame_forward

    def mask_as_output_single_mask(*args, **kwargs):  # only _use_mask_as_output leaves it unset
        kwargs.setdefault("multimask_output", False)
        return single_frame_forward(*args, **kwargs)

    trk._single_frame_forward = mask_as_output_single_mask
    execute, build = model.run_tracker_update_execution_phase, model.build_outputs
    pending: list = []

    def execute_then_wait(**kwargs):  # objects removed on this frame leave after its outputs are built
        plan = dict(kwargs["tracker_update_plan"])
        pending.extend(plan["obj_ids_newly_removed"])
        plan["obj_ids_newly_removed"] = set()
        return execute(**{**kwargs, "tracker_update_plan": plan})

    def build_then_remove(**kwargs):
        out = build(**kwargs)
        for oid in pending:
            kwargs["inference_session"].remove_object(oid, strict=False)
        pending.clear()
        return out

    model.run_tracker_update_execution_phase = execute_then_wait
    model.build_outputs = build_then_remove
    return model


def hf_video_session(frames: torch.Tensor, height: int, width: int, texts, ids: torch.Tensor):
    """A transformers video session over preprocessed ``frames`` (T x 3 x S x S) with ``texts``
    tokenized as ``ids`` (N x L)."""
    mod = importlib.import_module("transformers.models.sam3_video.modeling_sam3_video")
    session = mod.Sam3VideoInferenceSession(video=frames, video_height=height, video_width=width, dtype=torch.float32)
    for text, row in zip(texts, ids):
        pid = session.add_prompt(text)
        session.prompt_input_ids[pid] = row[None]
        session.prompt_attention_masks[pid] = (row[None] != 0).long()
    return session
