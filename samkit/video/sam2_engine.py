"""One tracking step of the SAM 2 family for one object on one frame.

The engine reads from a model (any ``nn.Module`` with ``image_encoder`` returning the
upstream dict ``{"backbone_fpn": [...], "vision_pos_enc": [...]}``, the prompt encoder and
mask decoder as ``prompt_encoder``/``mask_decoder`` or upstream's ``sam_prompt_encoder``/
``sam_mask_decoder``, and the memory modules added by ``samkit.memory.attach_memory``).

Shapes (SAM 2.1 at 1024 px): image features ``1 x 256 x 64 x 64``; high-res features
``1 x 32 x 256 x 256`` and ``1 x 64 x 128 x 128``; low-res mask logits ``1 x 1 x 256 x 256``;
object pointer ``1 x 256``; object score ``1 x 1``; memory features as tokens
``1 x 4096 x 64`` (EdgeTAM: ``1 x 512 x 64`` after its perceiver), stored bfloat16 and
upcast to float32 when read; memory position ``1 x 4096 x 64`` (shared by all frames).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..memory.config import MemoryConfig
from ..memory.modules import sine_encoding_1d

NO_OBJ_SCORE = -1024.0
MEMORY_DTYPE = torch.bfloat16


@dataclass
class FrameFeatures:
    """Backbone output of one frame: ``feats`` finest first (high-res levels already
    projected by ``conv_s0``/``conv_s1``), ``pos`` of the top level ``1 x C x h x w``."""

    index: int
    feats: List[torch.Tensor]
    pos: torch.Tensor

    @property
    def top(self) -> torch.Tensor:
        return self.feats[-1]

    @property
    def high_res(self) -> Optional[List[torch.Tensor]]:
        return self.feats[:-1] if len(self.feats) > 1 else None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.feats) + self.pos.numel() * self.pos.element_size()


@dataclass
class FrameEntry:
    """What one object keeps from one frame. ``maskmem`` (bfloat16) and ``low_res`` are
    dropped once the frame is too old to be read as spatial memory; ``obj_ptr`` lives
    longer (object pointers reach further back)."""

    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    low_res: Optional[torch.Tensor] = None
    maskmem: Optional[torch.Tensor] = None

    def strip(self) -> None:
        self.low_res = None
        self.maskmem = None

    def tensors(self) -> int:
        return sum(t is not None for t in (self.obj_ptr, self.object_score, self.low_res, self.maskmem))


def preprocess_video_frame(frame: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
                           device: torch.device) -> torch.Tensor:
    """Upstream video loader rule: PIL ``resize((size, size))`` (bicubic) on uint8, /255,
    normalise. ``H x W x 3`` uint8 -> ``1 x 3 x size x size`` float32."""
    img = np.asarray(Image.fromarray(frame).resize((size, size)))
    x = torch.from_numpy((img / 255.0).astype(np.float32)).permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((x - m) / s)[None].to(device)


class Sam2Engine:
    """Stateless computations of the SAM 2 video model; state lives in the session."""

    def __init__(self, model: torch.nn.Module) -> None:
        cfg = getattr(model, "memory_config", None)
        if not isinstance(cfg, MemoryConfig):
            raise TypeError("the model has no memory_config; build it with samkit.memory.attach_memory")
        self.model = model
        self.cfg = cfg
        self.prompt_encoder = getattr(model, "prompt_encoder", None) or getattr(model, "sam_prompt_encoder")
        self.mask_decoder = getattr(model, "mask_decoder", None) or getattr(model, "sam_mask_decoder")
        self.device = next(model.parameters()).device
        self._maskmem_pos: Optional[torch.Tensor] = None

    # ----------------------------------------------------------------------- image
    @torch.inference_mode()
    def features(self, x: torch.Tensor, index: int) -> FrameFeatures:
        """``x``: 1 x 3 x S x S normalised frame -> ``FrameFeatures``."""
        out = self.model.image_encoder(x)
        feats = list(out["backbone_fpn"])
        pos = list(out["vision_pos_enc"])
        if self.cfg.use_high_res_features_in_sam:
            feats[0], feats[1] = self.mask_decoder.project_high_res(feats[0], feats[1])
            feats = feats[-3:]
        else:
            feats = feats[-1:]
        return FrameFeatures(index, feats, pos[-1])

    # ----------------------------------------------------------------------- heads
    def _heads(self, embed: torch.Tensor, high_res, coords: Optional[torch.Tensor], labels: Optional[torch.Tensor],
               mask_input: Optional[torch.Tensor], multimask: bool):
        """Prompt encoder + mask decoder as upstream's ``_forward_sam_heads``.
        Returns (low_res 1x1x256x256, obj_ptr 1xC, object_score 1x1)."""
        cfg = self.cfg
        b = embed.shape[0]
        if coords is None:
            coords = torch.zeros(b, 1, 2, device=embed.device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=embed.device)
        if mask_input is not None:
            size = tuple(self.prompt_encoder.mask_input_size) if hasattr(self.prompt_encoder, "mask_input_size") \
                else (4 * embed.shape[-2], 4 * embed.shape[-1])
            if tuple(mask_input.shape[-2:]) != size:
                mask_input = F.interpolate(mask_input.float(), size=size, mode="bilinear", align_corners=False,
                                           antialias=True)
        sparse, dense = self.prompt_encoder(points=(coords, labels), boxes=None, masks=mask_input)
        masks, ious, tokens, score = self.mask_decoder(
            image_embeddings=embed, image_pe=self.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=False, high_res_features=high_res)
        appearing = score > 0
        if cfg.pred_obj_scores:
            masks = torch.where(appearing[:, None, None], masks, torch.full_like(masks, NO_OBJ_SCORE))
        masks = masks.float()
        token = tokens[:, 0]
        if multimask:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=embed.device)
            masks = masks[rows, best].unsqueeze(1)
            if tokens.shape[1] > 1:
                token = tokens[rows, best]
        obj_ptr = self.model.obj_ptr_proj(token)
        if cfg.pred_obj_scores:
            lam = score.sigmoid() if cfg.soft_no_obj_ptr else appearing.float()
            if cfg.fixed_no_obj_ptr:
                obj_ptr = lam * obj_ptr
            obj_ptr = obj_ptr + (1 - lam) * self.model.no_obj_ptr
        return masks, obj_ptr, score

    def _mask_as_output(self, feats: FrameFeatures, mask: torch.Tensor):
        """A mask prompt (1 x 1 x S x S in {0,1}) becomes the output directly (upstream
        ``use_mask_input_as_output_without_sam``); the pointer still comes from the heads."""
        high = mask.float() * 20.0 - 10.0
        low = F.interpolate(high, size=(high.shape[-2] // 4, high.shape[-1] // 4), mode="bilinear",
                            align_corners=False, antialias=True)
        if self.cfg.use_obj_ptrs_in_encoder:
            _, obj_ptr, _ = self._heads(feats.top, feats.high_res, None, None,
                                        self.model.mask_downsample(mask.float()), False)
        else:
            obj_ptr = torch.zeros(1, self.cfg.hidden_dim, device=mask.device)
        appearing = (mask.flatten(1).float() > 0).any(dim=1, keepdim=True).float()
        score = 20.0 * appearing - 10.0
        if self.cfg.pred_obj_scores:
            if self.cfg.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * self.model.no_obj_ptr
        return low, obj_ptr, score

    # ----------------------------------------------------------------------- memory
    @torch.inference_mode()
    def encode_memory(self, feats: FrameFeatures, low_res: torch.Tensor, score: torch.Tensor,
                      from_points: bool) -> torch.Tensor:
        """Memory features (bfloat16 1 x Cm x h x w) from a low-res mask 1 x 1 x 256 x 256."""
        cfg = self.cfg
        high = F.interpolate(low_res, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
        if cfg.binarize_mask_from_pts_for_mem_enc and from_points:
            m = (high > 0).float()
        else:
            m = torch.sigmoid(high)
        m = m * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        mem, pos = self.model.memory_encoder(feats.top, m)
        if cfg.no_obj_embed_spatial:
            absent = 1 - (score > 0).float()
            mem = mem + absent[..., None, None] * self.model.no_obj_embed_spatial[..., None, None]
        perceiver = getattr(self.model, "spatial_perceiver", None)
        if perceiver is not None:  # EdgeTAM: B x 512 x Cm tokens
            mem, pos = perceiver(mem, pos)
        else:
            mem, pos = mem.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2)
        if self._maskmem_pos is None:
            self._maskmem_pos = pos[:1].clone()
        return mem.to(MEMORY_DTYPE)

    def _memory_tokens(self, frame_idx: int, cond: Dict[int, FrameEntry], non_cond: Dict[int, FrameEntry],
                       num_frames: Optional[int], reverse: bool):
        """Gather memory tokens (B x M x Cm), their positions and the pointer-token count."""
        cfg = self.cfg
        c, cm = cfg.hidden_dim, cfg.mem_dim
        selected, unselected = select_cond_frames(frame_idx, cond, cfg.max_cond_frames_in_attn)
        t_pos_and_prev: List[Tuple[int, Optional[FrameEntry]]] = [(0, e) for e in selected.values()]
        stride = cfg.memory_temporal_stride_for_eval
        for t_pos in range(1, cfg.num_maskmem):
            t_rel = cfg.num_maskmem - t_pos
            if t_rel == 1:
                prev = frame_idx + t_rel if reverse else frame_idx - t_rel
            elif not reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            e = non_cond.get(prev)
            if e is None:
                e = unselected.get(prev)
            t_pos_and_prev.append((t_pos, e))
        mems, poses = [], []
        for t_pos, e in t_pos_and_prev:
            if e is None or e.maskmem is None:
                continue
            mems.append(e.maskmem.float())
            poses.append(self._maskmem_pos + self.model.maskmem_tpos_enc[cfg.num_maskmem - t_pos - 1].reshape(1, 1, cm))
        n_spatial = len(mems)
        n_ptr_tokens = 0
        if cfg.use_obj_ptrs_in_encoder:
            max_ptrs = cfg.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, cfg.max_obj_ptrs_in_encoder)
            if cfg.only_obj_ptrs_in_the_past_for_eval:
                ptr_cond = {t: e for t, e in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
            else:
                ptr_cond = selected
            sign = -1 if reverse else 1
            pos_ptrs = [((frame_idx - t) * sign if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), e.obj_ptr)
                        for t, e in ptr_cond.items()]
            for t_diff in range(1, max_ptrs):
                t = frame_idx + t_diff if reverse else frame_idx - t_diff
                if t < 0 or (num_frames is not None and t >= num_frames):
                    break
                e = non_cond.get(t, unselected.get(t))
                if e is not None:
                    pos_ptrs.append((t_diff, e.obj_ptr))
            if pos_ptrs:
                ptrs = torch.stack([p for _, p in pos_ptrs], dim=0)  # P x B x C
                b = ptrs.shape[1]
                if cfg.add_tpos_enc_to_obj_ptrs:
                    t_max = max_ptrs - 1
                    dim = c if cfg.proj_tpos_enc_in_obj_ptrs else cm
                    rel = torch.tensor([float(p) for p, _ in pos_ptrs], device=ptrs.device)
                    ppos = self.model.obj_ptr_tpos_proj(sine_encoding_1d(rel / t_max, dim))
                    ppos = ppos.unsqueeze(1).expand(-1, b, cm)
                else:
                    ppos = ptrs.new_zeros(len(pos_ptrs), b, cm)
                if cm < c:
                    k = c // cm
                    ptrs = ptrs.reshape(-1, b, k, cm).permute(0, 2, 1, 3).flatten(0, 1)
                    ppos = ppos.repeat_interleave(k, dim=0)
                mems.append(ptrs.transpose(0, 1))
                poses.append(ppos.transpose(0, 1))
                n_ptr_tokens = ptrs.shape[0]
        return mems, poses, n_ptr_tokens, n_spatial

    def _with_memory(self, feats: FrameFeatures, frame_idx: int, is_init_cond: bool, cond, non_cond,
                     num_frames: Optional[int], reverse: bool) -> torch.Tensor:
        """Image embedding conditioned on the memory bank: 1 x C x h x w."""
        top = feats.top
        b, c, h, w = top.shape
        if is_init_cond:
            if self.cfg.directly_add_no_mem_embed:
                return top + self.model.no_mem_embed.reshape(1, c, 1, 1)
            mems = [self.model.no_mem_embed.expand(b, 1, c)]
            poses = [self.model.no_mem_pos_enc.expand(b, 1, c)]
            n_ptr, n_spatial = 0, 0
        else:
            if not cond:
                raise RuntimeError("tracking an object without a conditioning frame")
            mems, poses, n_ptr, n_spatial = self._memory_tokens(frame_idx, cond, non_cond, num_frames, reverse)
        memory = torch.cat(mems, dim=1)
        memory_pos = torch.cat(poses, dim=1)
        curr = top.flatten(2).transpose(1, 2)
        curr_pos = feats.pos.flatten(2).transpose(1, 2)
        out = self.model.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=n_ptr,
                                          num_spatial_frames=n_spatial)
        return out.transpose(1, 2).reshape(b, c, h, w)

    # ----------------------------------------------------------------------- step
    @torch.inference_mode()
    def step(self, feats: FrameFeatures, frame_idx: int, is_init_cond: bool, cond, non_cond,
             num_frames: Optional[int], reverse: bool, coords: Optional[torch.Tensor] = None,
             labels: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
             prev_logits: Optional[torch.Tensor] = None, run_memory: bool = True) -> FrameEntry:
        """Track one object on one frame. Prompts in model-frame pixels (coords 1 x N x 2,
        labels 1 x N int32, box corners as labels 2/3) or ``mask`` 1 x 1 x S x S binary."""
        cfg = self.cfg
        if mask is not None and cfg.use_mask_input_as_output_without_sam:
            low, obj_ptr, score = self._mask_as_output(feats, mask)
            from_points = True
        else:
            embed = self._with_memory(feats, frame_idx, is_init_cond, cond, non_cond, num_frames, reverse)
            mask_input = mask
            if prev_logits is not None:
                mask_input = prev_logits
            n_pts = 0 if labels is None else labels.shape[1]
            multimask = (cfg.multimask_output_in_sam and (is_init_cond or cfg.multimask_output_for_tracking)
                         and cfg.multimask_min_pt_num <= n_pts <= cfg.multimask_max_pt_num)
            low, obj_ptr, score = self._heads(embed, feats.high_res, coords, labels, mask_input, multimask)
            from_points = coords is not None
        entry = FrameEntry(obj_ptr=obj_ptr, object_score=score, low_res=low)
        if run_memory and cfg.num_maskmem > 0:
            entry.maskmem = self.encode_memory(feats, low, score, from_points)
        return entry


def select_cond_frames(frame_idx: int, cond: Dict[int, FrameEntry], max_num: int):
    """Upstream ``select_closest_cond_frames``: all when ``max_num`` is -1, else the closest
    before, the closest at/after and the temporally nearest others."""
    if max_num == -1 or len(cond) <= max_num:
        return dict(cond), {}
    sel: Dict[int, FrameEntry] = {}
    before = max((t for t in cond if t < frame_idx), default=None)
    if before is not None:
        sel[before] = cond[before]
    after = min((t for t in cond if t >= frame_idx), default=None)
    if after is not None:
        sel[after] = cond[after]
    rest = sorted((t for t in cond if t not in sel), key=lambda t: abs(t - frame_idx))[: max_num - len(sel)]
    sel.update((t, cond[t]) for t in rest)
    return sel, {t: e for t, e in cond.items() if t not in sel}
