"""The SAM 2-family memory step: stateless computations of one object on one frame over a
``TrackingSession`` (its memory bank lives in the session's ``ObjectTrack`` entries).

The model is a :class:`samkit.models.sam2.Sam2Model` with the memory modules of
``samkit.memory.attach_memory`` (``memory_config``, ``memory_attention``, ``memory_encoder``,
...). Its own methods compute the image features (``forward_image``) and the heads
(``forward_sam_heads``, ``use_mask_as_output``); this module adds the memory: which
frames are read (``select_cond_frames``, the temporal stride, object pointers), the
memory-conditioned embedding and the memory encoding of a predicted mask. Shapes are listed
in ``samkit.video.session``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..memory.config import MemoryConfig
from ..layers.position import sine_encoding_1d
from .memory_plan import memory_plan, select_cond_frames  # noqa: F401  (select_cond_frames: old path)
from .session import FrameEntry, FrameFeatures, ObjectTrack, TrackingSession

MEMORY_DTYPE = torch.bfloat16


def preprocess_video_frame(frame: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
                           device: torch.device) -> torch.Tensor:
    """Upstream video loader rule: PIL ``resize((size, size))`` (bicubic) on uint8, /255,
    normalise. ``H x W x 3`` uint8 -> ``1 x 3 x size x size`` float32."""
    img = np.asarray(Image.fromarray(frame).resize((size, size)))
    x = torch.from_numpy((img / 255.0).astype(np.float32)).permute(2, 0, 1)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((x - m) / s)[None].to(device)


class MemoryTracker:
    """Stateless memory step of a SAM 2-family model; all state lives in the session."""

    #: most objects of one memory layout whose memory attention ``step_many`` runs as one batch:
    #: on a 2-core CPU pairs were a little faster than single objects and batches of 4 or 8
    #: slower (their B x 4096 x 256 activations leave the cache); every size gives the numbers of
    #: one-at-a-time tracking (tests/test_video_batch.py)
    attention_batch = 2

    def __init__(self, model: torch.nn.Module) -> None:
        cfg = getattr(model, "memory_config", None)
        if not isinstance(cfg, MemoryConfig):
            raise TypeError("the model has no memory_config; build it with samkit.memory.attach_memory")
        self.model = model
        self.cfg = cfg
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def features(self, x: torch.Tensor, index: int) -> FrameFeatures:
        """``x``: 1 x 3 x S x S normalised frame -> ``FrameFeatures`` (the model's
        ``forward_image``, keeping the levels the heads read)."""
        out = self.model.forward_image(x)
        levels = self.model.num_feature_levels
        det = out.get("detector_fpn")  # concept models (SAM 3): the detector neck of the same frame
        return FrameFeatures(index, list(out["backbone_fpn"][-levels:]), out["vision_pos_enc"][-1],
                             detector=None if det is None else list(det),
                             detector_pos=None if det is None else [p[:1] for p in out["vision_pos_enc"]])

    # ----------------------------------------------------------------------- memory
    @torch.inference_mode()
    def encode_memory(self, session: TrackingSession, feats: FrameFeatures, low_res: torch.Tensor,
                      score: torch.Tensor, from_points: bool, projected: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Memory tokens (bfloat16 1 x N x Cm) of a low-res mask 1 x 1 x 256 x 256; sets the
        session's memory position (1 x N x Cm, the same for every frame) on first use.
        ``projected``: ``memory_encoder.project(feats.top)`` when the caller computed it once
        for several objects of the frame."""
        cfg = self.cfg
        high = F.interpolate(low_res, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
        if cfg.binarize_mask_from_pts_for_mem_enc and from_points:
            m = (high > 0).float()
        else:
            m = torch.sigmoid(high)
        m = m * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        enc = self.model.memory_encoder
        mem, pos = enc(feats.top, m) if projected is None else enc(feats.top, m, projected=projected)
        if cfg.no_obj_embed_spatial:
            absent = 1 - (score > 0).float()
            mem = mem + absent[..., None, None] * self.model.no_obj_embed_spatial[..., None, None]
        perceiver = getattr(self.model, "spatial_perceiver", None)
        if perceiver is not None:  # EdgeTAM: B x 512 x Cm tokens
            mem, pos = perceiver(mem, pos)
        else:
            mem, pos = mem.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2)
        if session.maskmem_pos is None:
            session.maskmem_pos = pos[:1].clone()
        return mem.to(MEMORY_DTYPE)

    def _memory_tokens(self, session: TrackingSession, track: ObjectTrack, frame_idx: int, reverse: bool):
        """Gather memory tokens (B x M x Cm), their positions and the pointer-token count
        (which frames and pointers: ``samkit.video.memory_plan``)."""
        cfg = self.cfg
        c, cm = cfg.hidden_dim, cfg.mem_dim
        frames, pointers, max_ptrs = memory_plan(cfg, track, frame_idx, reverse, session.num_frames)
        mems, poses = [], []
        for t_pos, e in frames:
            mems.append(e.maskmem.float())
            tpos = self.model.maskmem_tpos_enc[cfg.num_maskmem - t_pos - 1].reshape(1, 1, cm)
            poses.append(session.maskmem_pos + tpos)
        n_spatial = len(mems)
        n_ptr_tokens = 0
        if pointers:
            ptrs = torch.stack([e.obj_ptr for _, e in pointers], dim=0)  # P x B x C
            b = ptrs.shape[1]
            if cfg.add_tpos_enc_to_obj_ptrs:
                t_max = max_ptrs - 1
                dim = c if cfg.proj_tpos_enc_in_obj_ptrs else cm
                rel = torch.tensor([float(p) for p, _ in pointers], device=ptrs.device)
                ppos = self.model.obj_ptr_tpos_proj(sine_encoding_1d(rel / t_max, dim))
                ppos = ppos.unsqueeze(1).expand(-1, b, cm)
            else:
                ppos = ptrs.new_zeros(len(pointers), b, cm)
            if cm < c:
                k = c // cm
                ptrs = ptrs.reshape(-1, b, k, cm).permute(0, 2, 1, 3).flatten(0, 1)
                ppos = ppos.repeat_interleave(k, dim=0)
            mems.append(ptrs.transpose(0, 1))
            poses.append(ppos.transpose(0, 1))
            n_ptr_tokens = ptrs.shape[0]
        return mems, poses, n_ptr_tokens, n_spatial

    def _with_memory(self, session: TrackingSession, track: ObjectTrack, feats: FrameFeatures, frame_idx: int,
                     is_init_cond: bool, reverse: bool) -> torch.Tensor:
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
            if not track.cond:
                raise RuntimeError("tracking an object without a conditioning frame")
            mems, poses, n_ptr, n_spatial = self._memory_tokens(session, track, frame_idx, reverse)
        memory = torch.cat(mems, dim=1)
        memory_pos = torch.cat(poses, dim=1)
        curr = top.flatten(2).transpose(1, 2)
        curr_pos = feats.pos.flatten(2).transpose(1, 2)
        out = self.model.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=n_ptr,
                                          num_spatial_frames=n_spatial)
        return out.transpose(1, 2).reshape(b, c, h, w)

    # ----------------------------------------------------------------------- step
    @torch.inference_mode()
    def step(self, session: TrackingSession, track: ObjectTrack, feats: FrameFeatures, frame_idx: int,
             is_init_cond: bool, reverse: bool, coords: Optional[torch.Tensor] = None,
             labels: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
             prev_logits: Optional[torch.Tensor] = None, encode: bool = True) -> FrameEntry:
        """Track ``track``'s object on one frame (upstream ``track_step``). Prompts in
        model-frame pixels (coords 1 x N x 2, labels 1 x N int32, box corners as labels 2/3)
        or ``mask`` 1 x 1 x S x S binary; ``prev_logits`` 1 x 1 x 256 x 256 replace the
        mask input (a correction on a tracked frame). Reads the memory of ``track``; stores
        nothing."""
        cfg = self.cfg
        if mask is not None and cfg.use_mask_input_as_output_without_sam:
            out = self.model.use_mask_as_output(feats.top, feats.high_res, mask)
            from_points = True
        else:
            embed = self._with_memory(session, track, feats, frame_idx, is_init_cond, reverse)
            mask_input = mask
            if prev_logits is not None:
                mask_input = prev_logits
            point_inputs = None if coords is None else {"point_coords": coords, "point_labels": labels}
            n_pts = 0 if labels is None else labels.shape[1]
            multimask = (cfg.multimask_output_in_sam and (is_init_cond or cfg.multimask_output_for_tracking)
                         and cfg.multimask_min_pt_num <= n_pts <= cfg.multimask_max_pt_num)
            out = self.model.forward_sam_heads(embed, point_inputs, mask_input, feats.high_res, multimask)
            from_points = coords is not None
        _, _, _, low, _, obj_ptr, score = out
        entry = FrameEntry(obj_ptr=obj_ptr, object_score=score, low_res=low)
        if cfg.num_maskmem > 0 and encode:  # encode=False: the caller encodes (SAM 3 concepts)
            entry.maskmem = self.encode_memory(session, feats, low, score, from_points)
        return entry

    @torch.inference_mode()
    def step_many(self, session: TrackingSession, tracks: Sequence[ObjectTrack], feats: FrameFeatures,
                  frame_idx: int, reverse: bool, max_batch: int = 8) -> List[FrameEntry]:
        """Track several objects on one frame without prompts (a propagation step): the same
        entries as ``step(session, track, feats, frame_idx, False, reverse)`` for each track,
        in order.

        Shared once per frame: the image features (the caller's cache), everything of the
        memory attention before its first cross-attention (``MemoryAttention.prefix``) and the
        memory encoder's projection of the image features (``MemoryEncoder.project``). The rest
        of the memory attention runs for objects whose memory has the same layout (the same
        number of memory frames and pointer tokens) in batches of at most
        ``min(max_batch, self.attention_batch)``; the mask decoder and the memory encoder run one
        object at a time: on CPU their batched activations (B x 256 x 64 x 64 and up) leave the
        cache and run slower than B single calls (``benchmarks/RESULTS.md``, video_objects)."""
        groups: Dict[tuple, list] = {}
        for i, track in enumerate(tracks):
            if not track.cond:
                raise RuntimeError("tracking an object without a conditioning frame")
            mems, poses, n_ptr, n_spatial = self._memory_tokens(session, track, frame_idx, reverse)
            memory, memory_pos = torch.cat(mems, dim=1), torch.cat(poses, dim=1)
            groups.setdefault((n_spatial, n_ptr, memory.shape[1]), []).append((i, memory, memory_pos))
        out: List[Optional[FrameEntry]] = [None] * len(tracks)
        step = max(1, min(int(max_batch), int(self.attention_batch)))
        curr_pos = feats.pos.flatten(2).transpose(1, 2)
        prefix = self.model.memory_attention.prefix(feats.top.flatten(2).transpose(1, 2), curr_pos)
        projected = self._projected(feats)
        for (n_spatial, n_ptr, _), items in groups.items():
            for lo in range(0, len(items), step):
                chunk = items[lo:lo + step]
                memory = torch.cat([m for _, m, _ in chunk], dim=0) if len(chunk) > 1 else chunk[0][1]
                memory_pos = torch.cat([p for _, _, p in chunk], dim=0) if len(chunk) > 1 else chunk[0][2]
                embeds = self._attend(feats, memory, memory_pos, n_ptr, n_spatial, prefix)
                for j, (i, _, _) in enumerate(chunk):
                    out[i] = self._heads_and_memory(session, feats, embeds[j:j + 1], projected)
        return out  # type: ignore[return-value]

    def _projected(self, feats: FrameFeatures) -> Optional[torch.Tensor]:
        """The memory encoder's projection of the frame's features (1 x C x h x w), or None."""
        project = getattr(self.model.memory_encoder, "project", None)
        return None if self.cfg.num_maskmem <= 0 or project is None else project(feats.top)

    def _attend(self, feats: FrameFeatures, memory: torch.Tensor, memory_pos: torch.Tensor, n_ptr: int,
                n_spatial: int, prefix: torch.Tensor) -> torch.Tensor:
        """The memory attention of B objects whose memories (``B x M x Cm``, positions alike)
        have one layout, from the frame's ``prefix`` (``memory_attention.prefix``): B x N x C."""
        curr = feats.top.flatten(2).transpose(1, 2)
        curr_pos = feats.pos.flatten(2).transpose(1, 2)
        embed = self.model.memory_attention(curr, curr_pos, memory, memory_pos, num_obj_ptr_tokens=n_ptr,
                                            num_spatial_frames=n_spatial, prefix=prefix)
        b = memory.shape[0]
        return embed.expand(b, -1, -1) if embed.shape[0] != b else embed

    def _heads_and_memory(self, session: TrackingSession, feats: FrameFeatures, embed: torch.Tensor,
                          projected: Optional[torch.Tensor]) -> FrameEntry:
        """The rest of a propagation step of one object from its memory-conditioned tokens
        (1 x N x C): the mask decoder without prompts and the memory encoder (the numbers of
        ``step``)."""
        cfg = self.cfg
        _, c, h, w = feats.top.shape
        embed = embed.transpose(1, 2).reshape(1, c, h, w)
        multimask = (cfg.multimask_output_in_sam and cfg.multimask_output_for_tracking
                     and cfg.multimask_min_pt_num <= 0 <= cfg.multimask_max_pt_num)
        _, _, _, low, _, obj_ptr, score = self.model.forward_sam_heads(embed, None, None, feats.high_res, multimask)
        entry = FrameEntry(obj_ptr=obj_ptr, object_score=score, low_res=low)
        if cfg.num_maskmem > 0:
            entry.maskmem = self.encode_memory(session, feats, low, score, False, projected=projected)
        return entry

    @torch.inference_mode()
    def empty_entry(self, session: TrackingSession, feats: FrameFeatures) -> FrameEntry:
        """EdgeTAM's placeholder for an object without a prompt on a prompted frame: the
        pointer of an empty mask prompt, logits -1024, object score 10 and the memory of that
        empty mask."""
        size = self.cfg.image_size
        empty = torch.zeros(1, 1, size, size, device=self.device)
        ptr = self.model.use_mask_as_output(feats.top, feats.high_res, empty)[5]
        low = torch.full((1, 1, size // 4, size // 4), -1024.0, device=self.device)
        score = torch.full((1, 1), 10.0, device=self.device)
        entry = FrameEntry(obj_ptr=ptr, object_score=score, low_res=low)
        entry.maskmem = self.encode_memory(session, feats, low, score, True)
        return entry

