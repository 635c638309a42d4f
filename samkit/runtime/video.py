"""``OnnxVideoTracker``: ``VideoTracker``'s contract on the video graphs of an export folder,
without torch.

```python
from samkit.runtime import OnnxVideoTracker
tracker = OnnxVideoTracker("edgetam-onnx/")           # checks the sha256 of every file
session = tracker.start("clip.mp4")                    # folder, video file, array or iterator
tracker.add_prompt(session, frame=0, obj_id=1, points=[[x, y]], labels=[1])
for frame, result in tracker.propagate(session):
    result.masks[1]                                     # H x W bool, as VideoTracker
```
The graphs are stateless (``samkit.export.video_graphs``); the memory bank lives in the same
``samkit.video.session.TrackingSession`` as the torch tracker's, with numpy arrays in place of
tensors, and is read and bounded by the same rules (``samkit.video.memory_plan``,
``samkit.video.session.evict``): the same memory frames and object pointers on every frame.
Memory features are stored as bfloat16 bit patterns (uint16), as the torch tracker stores
bfloat16 tensors. Shapes: see ``samkit.video.session`` (``1 x N x Cm`` memory tokens,
``1 x C`` object pointers, ``1 x 1 x S/4 x S/4`` low-res logits).
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io.video import open_frames
from ..prompts import check_video_prompt
from ..video.memory_plan import memory_plan, propagate_frames
from ..video.session import (FrameEntry, FrameFeatures, FrameResult, ObjectTrack, TrackingSession, cap_cond_frames)
from . import imageops
from .manifest import ExportFolder, read_export
from .session import open_graph

_STEPS = ("image_encoder", "memory_attention", "decoder", "memory_encoder")


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest, ties to even (torch's rule)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def from_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _video_spec(export: ExportFolder) -> dict:
    """The manifest's ``video`` section, or an ``InputError`` naming the fix."""
    video = export.manifest.get("video")
    pipeline = export.manifest.get("pipelines", {}).get("video")
    if not isinstance(video, dict) or not isinstance(pipeline, dict) or any(s not in pipeline for s in _STEPS):
        raise InputError(f"the export folder {export.folder} ({export.model}) has no video graphs, so it cannot track. "
                         "Fix: export a video model (sam2.1_hiera_*, edgetam, efficienttam_*) with `samkit export "
                         "MODEL --format onnx --out DIR` and pass that folder.")
    if video.get("layout") != "sam2_memory":
        raise InputError(f"the export folder {export.folder} has a video pipeline this samkit does not know "
                         f"({video.get('layout')!r}). Fix: re-export the model with this samkit version.")
    return video


class OnnxVideoTracker:
    """Track prompted objects through a video with the video graphs of an export folder.

    Options as ``VideoTracker``: ``keep_logits``, ``max_cond_frames``, ``feature_cache``,
    ``stream_keep``, ``corrections_as_conditioning``; and as ``OnnxImagePredictor``:
    ``threads``, ``providers``, ``verify``."""

    def __init__(self, path: Union[str, Path, ExportFolder], *, keep_logits: bool = False, max_cond_frames: int = 16,
                 feature_cache: int = 2, stream_keep: int = 2, corrections_as_conditioning: bool = True,
                 threads: Optional[int] = None, providers: Sequence[str] = (), verify: bool = True) -> None:
        self.export = path if isinstance(path, ExportFolder) else read_export(path, verify=verify)
        self.spec = _video_spec(self.export)
        self.cfg = SimpleNamespace(**self.spec["config"])
        self.keep_logits = keep_logits
        self.max_cond_frames = int(max_cond_frames)
        self.feature_cache = max(1, int(feature_cache))
        self.stream_keep = max(1, int(stream_keep))
        self.corrections_as_conditioning = corrections_as_conditioning
        graphs, opset = self.export.manifest["graphs"], self.export.manifest.get("opset")
        self.graphs = {step: open_graph(self.export.path(graphs[gid]), opset, threads, providers)
                       for step, gid in self.export.manifest["pipelines"]["video"].items()}
        self.inputs = {step: {i.name for i in g.get_inputs()} for step, g in self.graphs.items()}
        const = self.spec["constants"]
        self.no_mem_embed = np.asarray(const["no_mem_embed"], np.float32)
        self.no_obj_ptr = None if const["no_obj_ptr"] is None else np.asarray(const["no_obj_ptr"], np.float32)
        self.tpos = np.asarray(const["maskmem_tpos_enc"], np.float32)  # num_maskmem x Cm
        self.size = int(self.spec["image_size"])
        self.mean, self.std = self.spec["preprocess"]["mean"], self.spec["preprocess"]["std"]

    @property
    def model_name(self) -> str:
        return self.export.model

    def _run(self, step: str, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        graph = self.graphs[step]
        outs = graph.run(None, {k: v for k, v in feeds.items() if k in self.inputs[step]})
        return dict(zip([o.name for o in graph.get_outputs()], outs))

    # ------------------------------------------------------------------ session
    def start(self, source: Any) -> TrackingSession:
        """As ``VideoTracker.start``: open ``source`` lazily, return an empty session."""
        src = open_frames(source, keep=self.stream_keep)
        first = src.get(src.first_available())
        h, w = first.shape[:2]
        return TrackingSession(source=src, height=int(h), width=int(w), feature_cache=self.feature_cache,
                               max_cond_frames=self.max_cond_frames)

    def reset(self, session: TrackingSession) -> None:
        """Forget every object and prompt (frames stay readable)."""
        session.objects.clear()
        session.features.clear()
        session.maskmem_pos = None
        session.labels.clear()

    def remove_object(self, session: TrackingSession, obj_id: int) -> None:
        """Stop tracking ``obj_id`` and free its memory."""
        if obj_id not in session.objects:
            raise InputError(f"object id {obj_id!r} was never prompted in this session (known ids: "
                             f"{session.obj_ids}). Fix: pass one of the known ids.")
        del session.objects[obj_id]
        session.labels.pop(obj_id, None)

    # ------------------------------------------------------------------ graphs
    def preprocess(self, frame: np.ndarray) -> np.ndarray:
        """``H x W x 3`` uint8 -> ``1 x 3 x S x S`` float32 (PIL bicubic resize, / 255, mean / std)."""
        img = np.asarray(Image.fromarray(frame).resize((self.size, self.size)))
        x = (img / 255.0).astype(np.float32).transpose(2, 0, 1)
        return imageops.normalise_chw(x, self.mean, self.std)[None]

    def _features(self, session: TrackingSession, t: int) -> FrameFeatures:
        cache = session.features
        if t in cache:
            cache.move_to_end(t)
            return cache[t]
        out = self._run("image_encoder", {"image": self.preprocess(session.source.get(t))})
        levels = [out[k] for k in ("high_res_feats_0", "high_res_feats_1") if k in out] + [out["vision_features"]]
        feats = FrameFeatures(t, levels, out["vision_pos_enc"])
        cache[t] = feats
        while len(cache) > session.feature_cache:
            cache.popitem(last=False)
        return feats

    def _decode(self, embed: np.ndarray, feats: FrameFeatures, coords, labels, mask_input) -> Dict[str, np.ndarray]:
        """The decoder graph on a (memory-conditioned) embedding; no points = one (0, 0) point
        labelled -1 (``forward_sam_heads``)."""
        if coords is None:
            coords, labels = np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.float32)
        g = self.size // 4
        has = np.ones(1, np.float32) if mask_input is not None else np.zeros(1, np.float32)
        mask = mask_input if mask_input is not None else np.zeros((1, 1, g, g), np.float32)
        feeds = {"image_embed": embed, "point_coords": coords.astype(np.float32),
                 "point_labels": labels.astype(np.float32), "mask_input": mask.astype(np.float32), "has_mask_input": has}
        if feats.high_res is not None:
            feeds.update(high_res_feats_0=feats.high_res[0], high_res_feats_1=feats.high_res[1])
        return self._run("decoder", feeds)

    def _heads(self, embed, feats, coords, labels, mask_input, multimask: bool):
        """``Sam2Model.forward_sam_heads``: (low-res mask 1 x 1 x g x g, obj_ptr 1 x C, score 1 x 1)."""
        out = self._decode(embed, feats, coords, labels, mask_input)
        low_all, iou, ptr_all, score = out["masks"], out["iou_predictions"], out["obj_ptr"], out["object_score_logits"]
        dyn = self.spec.get("dynamic_multimask")
        if multimask:
            best = int(np.argmax(iou[0, 1:])) + 1
            low = low_all[:, best:best + 1]
            token = best if self.cfg.use_multimask_token_for_obj_ptr else 0
        else:
            idx = 0
            if dyn:
                idx = int(imageops.dynamic_multimask_index(low_all, iou, float(dyn["stability_delta"]),
                                                           float(dyn["stability_thresh"]))[0])
            low, token = low_all[:, idx:idx + 1], 0
        if not score.reshape(-1)[0] > 0:
            low = np.full_like(low, np.float32(self.spec["no_obj_score"]))
        return low.astype(np.float32), ptr_all[:, token].astype(np.float32), score.astype(np.float32)

    def _mask_as_output(self, feats: FrameFeatures, mask: np.ndarray):
        """``Sam2Model.use_mask_as_output`` of a binary mask 1 x 1 x S x S."""
        cfg = self.cfg
        high = mask * np.float32(20.0) - np.float32(10.0)
        low = imageops.resize_bilinear(high, (self.size // 4, self.size // 4), antialias=True)
        if cfg.use_obj_ptrs_in_encoder:
            down = self._run("mask_downsample", {"mask": mask})["mask_input"]
            ptr = self._heads(feats.top, feats, None, None, down, False)[1]
        else:
            ptr = np.zeros((1, int(self.spec["hidden_dim"])), np.float32)
        appearing = np.float32(1.0 if np.any(mask > 0) else 0.0)
        score = np.full((1, 1), np.float32(20.0) * appearing - np.float32(10.0), np.float32)
        if cfg.pred_obj_scores:
            if cfg.fixed_no_obj_ptr:
                ptr = appearing * ptr
            ptr = ptr + (np.float32(1.0) - appearing) * self.no_obj_ptr
        return low.astype(np.float32), ptr.astype(np.float32), score

    def _encode_memory(self, session: TrackingSession, feats: FrameFeatures, low, score, from_points: bool):
        """Memory tokens (bfloat16 bits, 1 x N x Cm) of a low-res mask; sets ``maskmem_pos`` once."""
        out = self._run("memory_encoder", {"vision_features": feats.top, "mask_logits": low,
                                           "object_score_logits": score,
                                           "binarize": np.array([1.0 if from_points else 0.0], np.float32)})
        if session.maskmem_pos is None:
            session.maskmem_pos = out["maskmem_pos"][:1].copy()
        return to_bfloat16(out["maskmem_features"])

    def _with_memory(self, session, track: ObjectTrack, feats: FrameFeatures, t: int, is_init: bool,
                     reverse: bool) -> np.ndarray:
        """The memory-conditioned embedding 1 x C x h x w (``MemoryTracker._with_memory``)."""
        cfg, top = self.cfg, feats.top
        if is_init:
            if not cfg.directly_add_no_mem_embed:  # no family in samkit; refused rather than guessed
                raise InputError(f"{self.model_name}: memory without directly_add_no_mem_embed is not supported by "
                                 "the runtime. Fix: track this model with samkit's torch VideoTracker.")
            return (top + self.no_mem_embed.reshape(1, -1, 1, 1)).astype(np.float32)
        if not track.cond:
            raise InputError("tracking an object without a conditioning frame. Fix: prompt it first.")
        frames, pointers, max_ptrs = memory_plan(cfg, track, t, reverse, session.num_frames)
        memory = np.concatenate([from_bfloat16(e.maskmem) for _, e in frames], 0)
        memory_pos = np.concatenate([session.maskmem_pos + self.tpos[cfg.num_maskmem - p - 1][None, None]
                                     for p, _ in frames], 0).astype(np.float32)
        c = int(self.spec["hidden_dim"])
        ptrs = np.concatenate([e.obj_ptr for _, e in pointers], 0) if pointers else np.zeros((0, c), np.float32)
        rel = np.array([float(p) for p, _ in pointers], np.float32) / np.float32(max_ptrs - 1)
        step = "memory_attention_single" if len(frames) == 1 and "memory_attention_single" in self.graphs \
            else "memory_attention"
        return self._run(step, {"vision_features": top, "vision_pos_enc": feats.pos, "memory": memory,
                                "memory_pos": memory_pos, "obj_ptrs": ptrs.astype(np.float32),
                                "obj_ptr_tpos": rel})["pix_feat_with_mem"]

    def _step(self, session, track, feats, t, is_init, reverse, coords=None, labels=None, mask=None,
              prev_logits=None) -> FrameEntry:
        """``MemoryTracker.step``: one object on one frame; stores nothing."""
        cfg = self.cfg
        if mask is not None and cfg.use_mask_input_as_output_without_sam:
            low, ptr, score = self._mask_as_output(feats, mask)
            from_points = True
        else:
            embed = self._with_memory(session, track, feats, t, is_init, reverse)
            mask_input = mask
            if mask_input is not None:
                mask_input = imageops.resize_bilinear(mask_input, (self.size // 4,) * 2, antialias=True)
            if prev_logits is not None:
                mask_input = prev_logits
            n_pts = 0 if labels is None else labels.shape[1]
            multimask = bool(cfg.multimask_output_in_sam and (is_init or cfg.multimask_output_for_tracking)
                             and cfg.multimask_min_pt_num <= n_pts <= cfg.multimask_max_pt_num)
            low, ptr, score = self._heads(embed, feats, coords, labels, mask_input, multimask)
            from_points = coords is not None
        entry = FrameEntry(obj_ptr=ptr, object_score=score, low_res=low)
        if cfg.num_maskmem > 0:
            entry.maskmem = self._encode_memory(session, feats, low, score, from_points)
        return entry

    def _empty_entry(self, session, feats: FrameFeatures) -> FrameEntry:
        """``MemoryTracker.empty_entry`` (EdgeTAM: an unprompted object on a prompted frame)."""
        g = self.size // 4
        ptr = self._mask_as_output(feats, np.zeros((1, 1, self.size, self.size), np.float32))[1]
        low = np.full((1, 1, g, g), -1024.0, np.float32)
        score = np.full((1, 1), 10.0, np.float32)
        entry = FrameEntry(obj_ptr=ptr, object_score=score, low_res=low)
        entry.maskmem = self._encode_memory(session, feats, low, score, True)
        return entry

    # ------------------------------------------------------------------ prompts
    def _check_frame(self, session: TrackingSession, frame: Any) -> int:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise InputError(f"frame must be an integer frame number, got {frame!r}. Fix: pass e.g. frame=0.")
        frame = int(frame)
        n = session.num_frames
        if frame < 0 or (n is not None and frame >= n):
            raise InputError(f"frame {frame} is outside the video (frames 0..{'?' if n is None else n - 1}). "
                             "Fix: prompt on an existing frame.")
        return frame

    def _prompt_arrays(self, session: TrackingSession, points, labels, box, mask):
        """``VideoTracker._prompt_tensors`` in numpy: (coords 1 x N x 2, labels 1 x N, None) in the
        model frame, a box first as two corners (labels 2, 3), or (None, None, mask 1 x 1 x S x S)."""
        prompt, m = check_video_prompt(points, labels, box, mask, (session.height, session.width))
        size = self.size
        if m is not None:
            t = m.astype(np.float32)[None, None]
            if t.shape[-2:] != (size, size):
                t = (imageops.resize_bilinear(t, (size, size), antialias=True) >= 0.5).astype(np.float32)
            return None, None, t
        pts = np.zeros((0, 2), np.float32) if prompt.points is None else prompt.points
        lab = np.zeros((0,), np.int32) if prompt.labels is None else prompt.labels
        if prompt.box is not None:
            pts = np.concatenate([prompt.box.reshape(2, 2), pts], 0)
            lab = np.concatenate([np.array([2, 3], np.int32), lab], 0)
        coords = pts.astype(np.float32)[None] / np.array([session.width, session.height], np.float32) * np.float32(size)
        return coords.astype(np.float32), lab[None].astype(np.float32), None

    def add_prompt(self, session: TrackingSession, frame: int, obj_id: int, points: Optional[Sequence] = None,
                   labels: Optional[Sequence] = None, box: Optional[Sequence] = None,
                   mask: Optional[np.ndarray] = None) -> FrameResult:
        """As ``VideoTracker.add_prompt``: points (x y, video pixels) with labels, and/or a box, or
        a mask (H x W bool) for ``obj_id`` on ``frame``. Returns the masks on that frame."""
        frame = self._check_frame(session, frame)
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise InputError(f"obj_id must be an integer, got {obj_id!r}. Fix: pass e.g. obj_id=1.")
        obj_id = int(obj_id)
        coords, labs, mask_a = self._prompt_arrays(session, points, labels, box, mask)
        feats = self._features(session, frame)
        track = session.objects.get(obj_id) or ObjectTrack(obj_id)
        prev_dir = track.tracked.get(frame)
        is_init = prev_dir is None
        reverse = bool(prev_dir) if prev_dir is not None else False
        prev_logits = None
        old = track.entry(frame)
        if mask_a is None and old is not None and old.low_res is not None:
            prev_logits = np.clip(old.low_res, -32.0, 32.0).astype(np.float32)
        entry = self._step(session, track, feats, frame, is_init, reverse, coords=coords, labels=labs, mask=mask_a,
                           prev_logits=prev_logits)
        session.objects[obj_id] = track
        if is_init or self.corrections_as_conditioning:
            track.cond[frame] = entry
            track.non_cond.pop(frame, None)
            cap_cond_frames(track, frame, session.max_cond_frames)
        else:
            track.non_cond[frame] = entry
        if frame not in track.prompt_frames:
            track.prompt_frames.append(frame)
            del track.prompt_frames[: -session.max_cond_frames]
        if self.cfg.prompted_frames_condition_all:
            self._condition_all(session, frame, obj_id)
        session.note_stats()
        return self._result(session, frame, {oid: o.entry(frame) for oid, o in session.objects.items()})

    def _condition_all(self, session: TrackingSession, frame: int, obj_id: int) -> None:
        """EdgeTAM: a prompted frame conditions every object (``VideoTracker._condition_all``)."""
        wanted = {(oid, frame) for oid in session.objects if oid != obj_id}
        for oid, o in session.objects.items():
            if oid != obj_id:
                wanted |= {(obj_id, t) for t in o.prompt_frames}
        for oid, t in sorted(wanted, key=lambda x: x[1]):
            track = session.objects[oid]
            if t in track.cond or not session.source.can_read(t) and t not in session.features:
                continue
            track.cond[t] = self._empty_entry(session, self._features(session, t))
            track.non_cond.pop(t, None)

    # ------------------------------------------------------------------ tracking
    def propagate(self, session: TrackingSession, start: Optional[int] = None, reverse: bool = False,
                  max_frames: Optional[int] = None) -> Iterator[Tuple[int, FrameResult]]:
        """As ``VideoTracker.propagate``: yield ``(frame, FrameResult)`` from ``start`` (default:
        the earliest prompted frame) forward, or backward with ``reverse``."""
        if not session.objects:
            raise InputError("no object has a prompt in this session. Fix: call add_prompt first.")
        empty = [oid for oid, o in session.objects.items() if not o.cond]
        if empty:
            raise InputError(f"object ids {empty} have no prompt (their prompted frames were released). "
                             "Fix: prompt them again or remove_object.")
        yield from propagate_frames(session, self.cfg, start, reverse, max_frames, self._features, self._step,
                                    self._result)

    def _result(self, session: TrackingSession, t: int, entries: dict) -> FrameResult:
        masks, scores, logits = {}, {}, {}
        for oid, e in entries.items():
            if e is None or e.low_res is None:
                continue
            arr = imageops.resize_bilinear(e.low_res, (session.height, session.width))[0, 0]
            masks[oid] = arr > 0
            scores[oid] = float(e.object_score.reshape(-1)[0])
            if self.keep_logits:
                logits[oid] = arr
        return FrameResult(frame=t, masks=masks, scores=scores, logits=logits if self.keep_logits else None)
