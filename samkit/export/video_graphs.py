"""The torch modules traced into the video graphs of a SAM 2-family export folder.

The graphs are stateless: the runtime (``samkit.runtime.OnnxVideoTracker``) keeps the memory
bank and chooses what each graph reads, by the rules of ``samkit.video.memory_plan``. One frame
of one object goes through them as ``samkit.video.memory_tracker.MemoryTracker.step`` does:

* ``video_image_encoder``: ``image`` 1 x 3 x S x S (the video frame rule: PIL bicubic resize to
  S x S, / 255, ImageNet mean / std) -> ``high_res_feats_0`` 1 x C/8 x S/4 x S/4,
  ``high_res_feats_1`` 1 x C/4 x S/8 x S/8 (projected by ``conv_s0`` / ``conv_s1``; not for
  EfficientTAM), ``vision_features`` 1 x C x h x w (h = S/16, *without* ``no_mem_embed``),
  ``vision_pos_enc`` 1 x C x h x w (``Sam2Model.forward_image``).
* ``memory_attention``: ``vision_features``, ``vision_pos_enc``, ``memory`` F x N x Cm (the
  spatial memory of F frames, float32), ``memory_pos`` F x N x Cm (memory position plus each
  frame's ``maskmem_tpos_enc`` row), ``obj_ptrs`` P x C (object pointers), ``obj_ptr_tpos`` (P,)
  (their temporal position divided by ``max_ptrs - 1``; read only when the model adds a
  temporal encoding to pointers) -> ``pix_feat_with_mem`` 1 x C x h x w. F and P are dynamic
  (P may be 0). RoPE is written with real arithmetic (cos / sin tables, no complex numbers);
  EfficientTAM's pooled cross-attention (v1 / v2) pools only when F > 1: for those models the
  graph pools, and a second graph ``memory_attention_single`` (the same inputs) attends plainly;
  the runtime runs it when the memory holds one frame.
* ``video_decoder``: the memory-conditioned ``image_embed`` (1 x C x h x w), the high-res
  features, ``point_coords`` 1 x P x 2 / ``point_labels`` 1 x P (model-frame pixels, box corners
  first; a padding point is appended inside; no prompt = one (0, 0) point labelled -1),
  ``mask_input`` 1 x 1 x 4h x 4w with ``has_mask_input`` (1,) -> ``masks`` 1 x K x 4h x 4w (raw
  logits of every mask token), ``iou_predictions`` 1 x K, ``obj_ptr`` 1 x K x C (the object
  pointer of each token, blended with ``no_obj_ptr`` by the object score), ``object_score_logits``
  1 x 1. Choosing the token (multimask, SAM 2's stability fallback) and setting absent objects
  to -1024 is the runtime's.
* ``mask_downsample``: ``mask`` 1 x 1 x S x S -> ``mask_input`` 1 x 1 x S/4 x S/4 (the object
  pointer of a mask prompt: ``Sam2Model.use_mask_as_output``).
* ``memory_encoder``: ``vision_features``, ``mask_logits`` 1 x 1 x 4h x 4w (the chosen low-res
  mask), ``object_score_logits`` 1 x 1, ``binarize`` (1,) (1: threshold the mask at 0, for
  masks from clicks / mask prompts; 0: sigmoid) -> ``maskmem_features`` 1 x N x Cm,
  ``maskmem_pos`` 1 x N x Cm (EdgeTAM: N = its perceiver's latents; else N = h * w).
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.position import sine_encoding_1d
from ..memory.attention import RoPEAttentionV2, axial_rope_angles
from .graphs import GraphPlan, sam2_prompt_inputs


def rope_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the channel pairs (2j, 2j+1) of ``x`` (... x L x D) by the angle tables ``L x D/2``:
    ``(a, c) -> (a cos - c sin, a sin + c cos)`` (``samkit.memory.attention.rope_``'s complex
    product, in real arithmetic)."""
    xp = x.unflatten(-1, (cos.shape[-1], 2))
    a, c = xp[..., 0], xp[..., 1]
    return torch.stack((a * cos - c * sin, a * sin + c * cos), dim=-1).flatten(-2)


def split_heads(x: torch.Tensor, heads: int, width: int) -> torch.Tensor:
    """``B x N x width`` -> ``B x heads x N x width/heads`` (``Attention._split`` with the sizes
    given, so that N = 0, no object pointer, traces into a valid reshape)."""
    return x.unflatten(-1, (heads, width // heads)).transpose(1, 2)


def _pooled(q: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor,
            side: int, v1: bool) -> torch.Tensor:
    """EfficientTAM's pooled cross-attention (``RoPEAttention(pool=...)`` with more than one
    memory frame) on rotated queries ``q`` 1 x h x Nq x d, spatial keys / values ``ks`` / ``vs``
    F x h x (side*side) x d and pointer keys / values ``kp`` / ``vp`` 1 x h x T x d: the spatial
    ones are 2x2 average pooled per frame, each pooled key standing for 4 (``+ 2 ln 2`` on the
    logits for v1, on the key vectors for v2). With one frame the model attends plainly: that
    case is a second graph (``memory_attention_single``), chosen by the runtime."""
    h = q.shape[1]
    d = q.shape[3]
    g2 = side // 2  # -1 for the frame axis: a size read from ks would be folded to the traced one
    k2 = F.avg_pool2d(ks.reshape(-1, side, side, d).permute(0, 3, 1, 2), 2, 2)
    v2 = F.avg_pool2d(vs.reshape(-1, side, side, d).permute(0, 3, 1, 2), 2, 2)
    k2 = k2.reshape(-1, h, d, g2 * g2).permute(1, 0, 3, 2).reshape(1, h, -1, d)
    v2 = v2.reshape(-1, h, d, g2 * g2).permute(1, 0, 3, 2).reshape(1, h, -1, d)
    v_all = torch.cat([v2, vp], 2)
    if v1:
        scale = 1.0 / math.sqrt(d)
        logits = torch.cat([q @ k2.transpose(-2, -1) * scale + 2 * math.log(2), q @ kp.transpose(-2, -1) * scale], -1)
        return torch.softmax(logits, -1) @ v_all
    return F.scaled_dot_product_attention(q, torch.cat([k2 + 2 * math.log(2), kp], 2), v_all)


# ----------------------------------------------------------------------------- encoder
class VideoEncoderGraph(nn.Module):
    """``image`` 1 x 3 x S x S -> the levels the memory path reads (finest first) and the
    position encoding of the top level (``MemoryTracker.features``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        out = self.model.forward_image(image)
        levels = list(out["backbone_fpn"][-self.model.num_feature_levels:])
        return (*levels, out["vision_pos_enc"][-1])


# ----------------------------------------------------------------------------- memory attention
class MemoryAttentionGraph(nn.Module):
    """``samkit.memory.attention.MemoryAttention`` on the memory bank read by the runtime (see
    the module docstring for the inputs); the model's own layers, RoPE in real arithmetic."""

    def __init__(self, model: nn.Module, single_frame: bool = False) -> None:
        super().__init__()
        cfg = model.memory_config
        self.model = model
        self.cfg = cfg
        self.side = int(cfg.feat_size)
        layer0 = model.memory_attention.layers[0]
        d = layer0.self_attn.internal_dim // layer0.self_attn.num_heads
        cos, sin = axial_rope_angles(d, self.side, self.side, layer0.self_attn.rope_theta)
        self.register_buffer("q_cos", cos, persistent=False)
        self.register_buffer("q_sin", sin, persistent=False)
        cross = layer0.cross_attn_image
        self.v2 = isinstance(cross, RoPEAttentionV2)
        if self.v2:
            kc, ks = axial_rope_angles(d, cross.k_sizes[0], cross.k_sizes[1], cross.rope_theta)
        else:
            kc, ks = cos, sin
        self.register_buffer("k_cos", kc.clone(), persistent=False)
        self.register_buffer("k_sin", ks.clone(), persistent=False)
        self.pool = None if self.v2 or single_frame else cross.pool

    def _self_attention(self, attn: nn.Module, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h, w = attn.num_heads, attn.internal_dim
        q, k, v = split_heads(attn.q_proj(x), h, w), split_heads(attn.k_proj(x), h, w), split_heads(attn.v_proj(v), h, w)
        q, k = rope_real(q, self.q_cos, self.q_sin), rope_real(k, self.q_cos, self.q_sin)
        return attn.out_proj(attn._merge(F.scaled_dot_product_attention(q, k, v)))

    def _cross_attention(self, attn: nn.Module, x: torch.Tensor, key_sp: torch.Tensor, val_sp: torch.Tensor,
                         key_ptr: torch.Tensor, val_ptr: torch.Tensor) -> torch.Tensor:
        """``x`` 1 x Nq x C; spatial keys / values F x N x Cm (per frame), pointer ones T x Cm."""
        h, w = attn.num_heads, attn.internal_dim
        q = rope_real(split_heads(attn.q_proj(x), h, w), self.q_cos, self.q_sin)
        ks, vs = split_heads(attn.k_proj(key_sp), h, w), split_heads(attn.v_proj(val_sp), h, w)  # F x h x N x d
        kp, vp = split_heads(attn.k_proj(key_ptr)[None], h, w), split_heads(attn.v_proj(val_ptr)[None], h, w)
        if self.v2:  # EdgeTAM: per frame [global latents (not rotated), grid latents (rotated)]
            n_glob = ks.shape[2] - self.k_cos.shape[0]
            ks = torch.cat([ks[:, :, :n_glob], rope_real(ks[:, :, n_glob:], self.k_cos, self.k_sin)], dim=2)
        else:
            ks = rope_real(ks, self.k_cos, self.k_sin)
        if self.pool is not None:
            out = _pooled(q, ks, vs, kp, vp, self.side, self.pool == "v1")
        else:
            h, d = ks.shape[1], ks.shape[3]
            k_all = torch.cat([ks.transpose(0, 1).reshape(1, h, -1, d), kp], 2)
            v_all = torch.cat([vs.transpose(0, 1).reshape(1, h, -1, d), vp], 2)
            out = F.scaled_dot_product_attention(q, k_all, v_all)
        return attn.out_proj(attn._merge(out))

    def _pointer_tokens(self, obj_ptrs: torch.Tensor, tpos: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """P x C pointers -> (P*k x Cm tokens, P*k x Cm positions): each pointer split into
        k = C / Cm tokens sharing its temporal encoding (``MemoryTracker._memory_tokens``)."""
        cfg, model = self.cfg, self.model
        c, cm = cfg.hidden_dim, cfg.mem_dim
        k = c // cm if cm < c else 1
        p = obj_ptrs.shape[0]  # explicit sizes: P may be 0
        tokens = obj_ptrs.reshape(p * k, cm) if k > 1 else obj_ptrs
        if cfg.add_tpos_enc_to_obj_ptrs:
            dim = c if cfg.proj_tpos_enc_in_obj_ptrs else cm
            pos = model.obj_ptr_tpos_proj(sine_encoding_1d(tpos, dim))
            pos = pos[:, None, :].expand(p, k, cm).reshape(p * k, cm)
        else:
            pos = torch.zeros_like(tokens)
        return tokens, pos

    def forward(self, vision_features, vision_pos_enc, memory, memory_pos, obj_ptrs, obj_ptr_tpos):
        ma = self.model.memory_attention
        _, c, h, w = vision_features.shape
        curr = vision_features.flatten(2).transpose(1, 2)
        curr_pos = vision_pos_enc.flatten(2).transpose(1, 2)
        ptr, ptr_pos = self._pointer_tokens(obj_ptrs, obj_ptr_tpos)
        key_sp, key_ptr = memory + memory_pos, ptr + ptr_pos
        out = curr + 0.1 * curr_pos if ma.pos_enc_at_input else curr
        for layer in ma.layers:
            t = layer.norm1(out)
            qk = t + curr_pos if layer.pos_enc_at_attn else t
            out = out + self._self_attention(layer.self_attn, qk, t)
            t = layer.norm2(out)
            q = t + curr_pos if layer.pos_enc_at_cross_attn_queries else t
            keys = (key_sp, key_ptr) if layer.pos_enc_at_cross_attn_keys else (memory, ptr)
            out = out + self._cross_attention(layer.cross_attn_image, q, keys[0], memory, keys[1], ptr)
            t = layer.norm3(out)
            out = out + layer.linear2(torch.relu(layer.linear1(t)))
        out = ma.norm(out)
        return out.transpose(1, 2).reshape(1, c, h, w)


# ----------------------------------------------------------------------------- heads
class VideoDecoderGraph(nn.Module):
    """``Sam2Model.forward_sam_heads`` for every mask token (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.high_res = bool(model.use_high_res_features)

    def forward(self, image_embed, *rest):
        high_res, _, sparse, dense = sam2_prompt_inputs(self.model, self.high_res, rest)
        low, iou, tokens, score = self.model.mask_decoder._predict(
            image_embed, self.model.prompt_encoder.get_dense_pe(), sparse, dense, False, high_res)
        # Sam2Model._object_pointer of every token: tokens 1 x K x C, score 1 x 1 broadcast over them
        return low, iou, self.model._object_pointer(tokens, score), score


class MaskDownsampleGraph(nn.Module):
    """``mask`` 1 x 1 x S x S -> ``model.mask_downsample(mask)`` 1 x 1 x S/4 x S/4."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mask):
        return self.model.mask_downsample(mask)


class MemoryEncoderGraph(nn.Module):
    """``MemoryTracker.encode_memory`` without the session (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cfg = model.memory_config

    def forward(self, vision_features, mask_logits, object_score_logits, binarize):
        cfg, model = self.cfg, self.model
        s = int(cfg.image_size)
        high = F.interpolate(mask_logits, size=(s, s), mode="bilinear", align_corners=False)
        if cfg.binarize_mask_from_pts_for_mem_enc:
            m = torch.where(binarize.reshape(1, 1, 1, 1) > 0.5, (high > 0).float(), torch.sigmoid(high))
        else:
            m = torch.sigmoid(high)
        m = m * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        mem, pos = model.memory_encoder(vision_features, m)
        if cfg.no_obj_embed_spatial:
            absent = 1 - (object_score_logits > 0).float()
            mem = mem + absent[..., None, None] * model.no_obj_embed_spatial[..., None, None]
        perceiver = getattr(model, "spatial_perceiver", None)
        if perceiver is not None:
            return perceiver(mem, pos)
        return mem.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2)


# ----------------------------------------------------------------------------- plans
def _rand(gen: torch.Generator, dev, *shape) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dev)


def video_plans(model: nn.Module) -> List[Tuple[GraphPlan, List[Dict[str, torch.Tensor]]]]:
    """Every video graph of ``model`` with example inputs and other-shape checks, in the order
    they are exported: ``[(plan, checks)]``. Example features come from the traced encoder."""
    cfg = model.memory_config
    s, c, cm, g = int(cfg.image_size), int(cfg.hidden_dim), int(cfg.mem_dim), int(cfg.feat_size)
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(3)
    high = bool(model.use_high_res_features)
    enc_names = (["high_res_feats_0", "high_res_feats_1"] if high else []) + ["vision_features", "vision_pos_enc"]
    enc = GraphPlan("video_image_encoder", VideoEncoderGraph(model).eval(), {"image": _rand(gen, dev, 1, 3, s, s)},
                    enc_names, {})
    feats = dict(zip(enc_names, (t.detach() for t in enc.module(*enc.inputs.values()))))
    top, pos = feats["vision_features"], feats["vision_pos_enc"]
    low = _rand(gen, dev, 1, 1, 4 * g, 4 * g) * 4.0
    mem_in = {"vision_features": top, "mask_logits": low, "object_score_logits": torch.tensor([[-1.5]], device=dev),
              "binarize": torch.ones(1, device=dev)}
    menc = GraphPlan("memory_encoder", MemoryEncoderGraph(model).eval(), mem_in, ["maskmem_features", "maskmem_pos"],
                     {})
    mem_checks = [dict(mem_in, object_score_logits=torch.tensor([[2.0]], device=dev), binarize=torch.zeros(1, device=dev))]
    n = menc.module(*mem_in.values())[0].shape[1]

    def attention_inputs(frames: int, pointers: int) -> Dict[str, torch.Tensor]:
        return {"vision_features": top, "vision_pos_enc": pos, "memory": _rand(gen, dev, frames, n, cm),
                "memory_pos": _rand(gen, dev, frames, n, cm), "obj_ptrs": _rand(gen, dev, pointers, c),
                "obj_ptr_tpos": torch.linspace(-0.5, 1.0, pointers).to(dev)}

    axes = {"memory": {0: "num_frames"}, "memory_pos": {0: "num_frames"}, "obj_ptrs": {0: "num_pointers"},
            "obj_ptr_tpos": {0: "num_pointers"}}
    pooled = getattr(model.memory_attention.layers[0].cross_attn_image, "pool", None) is not None
    attn = GraphPlan("memory_attention", MemoryAttentionGraph(model).eval(), attention_inputs(3, 4),
                     ["pix_feat_with_mem"], axes)
    attn_checks = [attention_inputs(2, 0), attention_inputs(2, 7)] + ([] if pooled else [attention_inputs(1, 0)])
    dec_in = {"image_embed": top}
    dec_in.update({k: feats[k] for k in ("high_res_feats_0", "high_res_feats_1") if high})
    dec_in.update(point_coords=torch.tensor([[[10.0, 12.0], [s * 0.7, s * 0.4], [s - 1.0, s * 0.9]]], device=dev),
                  point_labels=torch.tensor([[2.0, 3.0, 1.0]], device=dev), mask_input=low,
                  has_mask_input=torch.ones(1, device=dev))
    dec = GraphPlan("video_decoder", VideoDecoderGraph(model).eval(), dec_in,
                    ["masks", "iou_predictions", "obj_ptr", "object_score_logits"],
                    {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
    dec_checks = [dict(dec_in, point_coords=torch.zeros(1, 1, 2, device=dev),
                       point_labels=-torch.ones(1, 1, device=dev), has_mask_input=torch.zeros(1, device=dev))]
    plans = [(enc, []), (attn, attn_checks), (dec, dec_checks), (menc, mem_checks)]
    if pooled:  # EfficientTAM v1 / v2: one memory frame is attended without pooling
        single = GraphPlan("memory_attention_single", MemoryAttentionGraph(model, single_frame=True).eval(),
                           attention_inputs(1, 4), ["pix_feat_with_mem"], axes)
        plans.insert(2, (single, [attention_inputs(1, 0)]))
    if cfg.use_obj_ptrs_in_encoder:
        mask = (_rand(gen, dev, 1, 1, s, s) > 0.3).float()
        plans.append((GraphPlan("mask_downsample", MaskDownsampleGraph(model).eval(), {"mask": mask},
                                ["mask_input"], {}), []))
    return plans


# ----------------------------------------------------------------------------- manifest
#: graph id (= role) -> file name part (``<m>.<part>.onnx``)
VIDEO_FILES = {"video_image_encoder": "video_encoder", "memory_attention": "memory_attention",
               "memory_attention_single": "memory_attention_single",
               "video_decoder": "video_decoder", "memory_encoder": "memory_encoder",
               "mask_downsample": "mask_downsample"}
#: the manifest's ``pipelines.video``: step -> graph id
VIDEO_PIPELINE = {"image_encoder": "video_image_encoder", "memory_attention": "memory_attention",
                  "memory_attention_single": "memory_attention_single",
                  "decoder": "video_decoder", "memory_encoder": "memory_encoder",
                  "mask_downsample": "mask_downsample"}


def _floats(t: torch.Tensor) -> list:
    """A float32 tensor as nested lists of Python floats (exact: float32 -> float64 -> JSON)."""
    return t.detach().float().cpu().tolist()


def video_section(model: nn.Module, tokens_per_frame: int) -> dict:
    """The manifest's ``video`` section: what ``samkit.runtime.OnnxVideoTracker`` needs besides
    the graphs (``samkit.export`` documents every key)."""
    from dataclasses import asdict

    from ..models.sam2 import NO_OBJ_SCORE
    from ..video.tracker import VideoTracker

    cfg = model.memory_config
    tracker = VideoTracker(model)  # the frame normalisation the torch tracker uses
    dec = model.mask_decoder
    dyn = None
    if getattr(dec, "dynamic_multimask_via_stability", False):
        dyn = {"stability_delta": float(dec.dynamic_multimask_stability_delta),
               "stability_thresh": float(dec.dynamic_multimask_stability_thresh)}
    no_obj_ptr = getattr(model, "no_obj_ptr", None)
    return {
        "layout": "sam2_memory", "image_size": int(cfg.image_size), "backbone_stride": int(cfg.backbone_stride),
        "feat_size": int(cfg.feat_size), "hidden_dim": int(cfg.hidden_dim), "mem_dim": int(cfg.mem_dim),
        "memory_tokens_per_frame": int(tokens_per_frame), "high_res_features": bool(model.use_high_res_features),
        "preprocess": {"rule": "square_pil", "resize": "PIL Image.resize((S, S)) (bicubic) on the uint8 frame, "
                       "x / 255 in float64 then float32, (x - mean) / std per channel",
                       "mean": list(tracker.mean), "std": list(tracker.std)},
        "config": asdict(cfg),
        "memory_dtype": {"dtype": "bfloat16", "rule": "maskmem_features are rounded to bfloat16 (nearest, ties to "
                         "even) when stored and read back as float32; positions and pointers stay float32"},
        "mask_threshold": float(model.mask_threshold), "no_obj_score": float(NO_OBJ_SCORE),
        "prev_logits_clamp": 32.0, "mask_tokens": {"count": int(dec.num_mask_tokens), "single": 0,
                                                   "multimask": list(range(1, int(dec.num_mask_tokens)))},
        "dynamic_multimask": dyn,
        "mask_prompt": "H x W mask -> bilinear antialiased to S x S (when the sizes differ), >= 0.5; with "
                       "use_mask_input_as_output_without_sam it is the output: logits 20 * m - 10 (high), "
                       "bilinear antialiased to S/4 (low), object score +10 / -10 (mask has a pixel or not)",
        "constants": {"no_mem_embed": _floats(model.no_mem_embed.reshape(-1)),
                      "no_obj_ptr": None if no_obj_ptr is None else _floats(no_obj_ptr.reshape(-1)),
                      "maskmem_tpos_enc": _floats(model.maskmem_tpos_enc.reshape(cfg.num_maskmem, -1))},
    }
