"""Concept tracking (SAM 3): every instance of a text, detected on every frame and tracked with
the SAM 2-style memory, new instances added as they appear (the detector-tracker association
of the official ``Sam3VideoInference``, as transformers' ``Sam3VideoModel`` restates it).

On each frame (``ConceptEngine.frame``):

1. the detector runs for every text; an instance counts when ``sigmoid(logit) *
   sigmoid(presence)`` exceeds ``score_threshold`` (0.5), after mask NMS (IoU 0.1);
2. every tracked object takes one memory step (``MemoryTracker.step``); small holes and
   specks of its 288 x 288 mask are filled / removed (``fill_hole_area`` pixels);
3. association on those low-res masks, within each text: a detection overlapping no track
   (IoU < 0.1) with score >= ``new_det_thresh`` (0.7) starts a new object (prompted with its
   mask); a track that no detection overlaps by IoU >= 0.5 is "unmatched";
4. hot start: an object younger than ``hotstart_delay`` frames is removed when it was
   unmatched on ``hotstart_unmatch_thresh`` frames, or when a detection matched it together
   with an older object on ``hotstart_dup_thresh`` frames; removed objects are hidden from the
   frames still held back (outputs lag ``hotstart_delay`` frames behind, except on live streams,
   where nothing is removed); keep-alive counts are kept as upstream;
5. of two tracks of one text overlapping by IoU >= 0.7, the one occluded more recently is
   suppressed on this frame (logits -10);
6. the memory of every track is re-encoded from its (suppressed) low-res mask after the
   per-text non-overlap rule (a track losing more than 70 % of its area to others is
   suppressed in memory), with object scores +-10 from the mask's emptiness; every
   ``recondition_every`` frames confident tracks matching a confident detection become
   conditioning frames and show the detection's mask.

Where transformers differs from the official code, samkit follows the official code (the
parity tests restate these on transformers' side): the text-only prompt ends with the geometry
encoder's CLS token (``samkit.models.sam3``); a mask enters memory as ``sigmoid`` -> scale ->
resized to the memory encoder's input (upstream ``SimpleMaskDownSampler``), not resized as
logits first; a mask prompt's object pointer comes from the single-mask token (upstream
``_use_mask_as_output``); new objects are added on their own, existing ones keep the memory
of step 6 (transformers re-runs every object when it adds one); an object removed on a frame
still has its own mask on that frame (transformers shifts the later objects' masks by one).
New objects start from the detection's mask as transformers prepares it (logit >= 0.5,
antialiased resize to the model frame, kept soft); the official code resizes the logits to
1152 px first. Not ported: the official memory selection for temporal disambiguation
(``use_memory_selection``; transformers has none either).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.nms import mask_nms
from .memory_tracker import MEMORY_DTYPE, MemoryTracker
from .session import ConceptState, FrameEntry, FrameFeatures, ObjectTrack, TrackingSession

NO_OBJ_LOGIT = -10.0
NEVER_OCCLUDED = -1
ALWAYS_OCCLUDED = 100000  # an object removed on this frame always loses an overlap


@dataclass(frozen=True)
class ConceptConfig:
    """Numbers of the official video model (``build_sam3_video_model``)."""

    score_threshold: float = 0.5
    nms_iou: float = 0.1
    assoc_iou: float = 0.1
    trk_assoc_iou: float = 0.5
    new_det_thresh: float = 0.7
    hotstart_delay: int = 15
    hotstart_unmatch_thresh: int = 8
    hotstart_dup_thresh: int = 8
    suppress_unmatched_only_within_hotstart: bool = True
    init_keep_alive: int = 30
    max_keep_alive: int = 30
    min_keep_alive: int = -1
    occlusion_iou: float = 0.7
    fill_hole_area: int = 16
    recondition_every: int = 16
    high_conf: float = 0.8
    high_iou: float = 0.8
    max_objects: int = 10000


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``N x h x w`` and ``M x h x w`` bool -> ``N x M`` IoU (0 for two empty masks)."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = a @ b.t()
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def component_areas(mask: torch.Tensor) -> torch.Tensor:
    """``N x h x w`` bool -> the area of the 8-connected component each pixel belongs to
    (0 outside the mask). OpenCV's connected components when it is installed (the ``cv``
    extra) and the mask is on the CPU; else :func:`component_areas_torch` (same result)."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is None or mask.device.type != "cpu":
        return component_areas_torch(mask)
    out = np.zeros(mask.shape, np.int64)
    for i, m in enumerate(mask.numpy().astype(np.uint8)):
        _, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        stats[0, cv2.CC_STAT_AREA] = 0  # label 0: outside the mask
        out[i] = stats[lab, cv2.CC_STAT_AREA]
    return torch.from_numpy(out)


def component_areas_torch(mask: torch.Tensor) -> torch.Tensor:
    """:func:`component_areas` by label propagation (max over 3 x 3 neighbourhoods until
    stable; as many steps as the longest path inside a component)."""
    n, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32, device=mask.device).reshape(1, 1, h, w)
    m = mask[:, None].float()
    labels = ids * m
    while True:
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * m
        if torch.equal(grown, labels):
            break
        labels = grown
    flat = labels.flatten(1).long()
    areas = torch.zeros(n, h * w + 1, dtype=torch.long, device=mask.device)
    areas.scatter_add_(1, flat, torch.ones_like(flat))
    areas[:, 0] = 0
    return torch.gather(areas, 1, flat).reshape(n, h, w)


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Upstream ``fill_holes_in_mask_scores`` on ``N x h x w`` logits: background components
    of at most ``max_area`` pixels become 0.1, foreground components of at most
    ``min(max_area, area // 2)`` pixels become -0.1."""
    if max_area <= 0 or logits.shape[0] == 0:
        return logits
    bg = logits <= 0
    logits = torch.where(bg & (component_areas(bg) <= max_area), torch.full_like(logits, 0.1), logits)
    fg = logits > 0
    limit = (fg.flatten(1).sum(1) // 2).clamp(max=max_area)[:, None, None]
    return torch.where(fg & (component_areas(fg) <= limit), torch.full_like(logits, -0.1), logits)


@dataclass
class Detections:
    """Detections of one frame, all texts: ``masks`` N x h x w logits, ``scores`` (N,),
    ``prompts`` (N,) text index."""

    masks: torch.Tensor
    scores: torch.Tensor
    prompts: torch.Tensor


class ConceptEngine:
    """One frame of concept tracking over a ``TrackingSession`` (module docstring)."""

    def __init__(self, model, engine: MemoryTracker, config: ConceptConfig = ConceptConfig()) -> None:
        self.model = model
        self.engine = engine
        self.config = config

    # ------------------------------------------------------------------ detection
    def detect(self, state: ConceptState, feats: FrameFeatures) -> Detections:
        from ..models.sam3 import Sam3Features

        cfg = self.config
        if state.tokens is None:
            state.tokens = self.model.encode_text(state.texts)
        det = self.model.detect(Sam3Features(feats.top, detector=tuple(feats.detector), pos=tuple(feats.detector_pos)),
                                text_tokens=state.tokens)
        probs = det.scores
        masks, scores, prompts = [], [], []
        for j in range(probs.shape[0]):
            p = probs[j].clone()
            valid = torch.nonzero(p > cfg.score_threshold).flatten()
            if cfg.nms_iou > 0 and len(valid) > 1:
                keep = mask_nms(det.masks[j, valid] > 0, p[valid], cfg.nms_iou)
                dropped = torch.ones(len(valid), dtype=torch.bool)
                dropped[keep] = False
                p[valid[dropped]] = 0.0
            idx = torch.nonzero(p > cfg.score_threshold).flatten()
            masks.append(det.masks[j, idx])
            scores.append(p[idx])
            prompts.append(torch.full((len(idx),), j, dtype=torch.long))
        return Detections(torch.cat(masks).float(), torch.cat(scores).float(), torch.cat(prompts))

    # ------------------------------------------------------------------ memory
    def encode(self, session: TrackingSession, feats: FrameFeatures, masks: torch.Tensor,
               scores: torch.Tensor) -> torch.Tensor:
        """Memory tokens (bfloat16 B x N x Cm) of mask logits ``B x 1 x h x w`` (any size)
        with object-score logits ``B x 1``: sigmoid, scale and bias, then the memory encoder
        (which resizes to its input size)."""
        mcfg = self.engine.cfg
        m = torch.sigmoid(masks.float()) * mcfg.sigmoid_scale_for_mem_enc + mcfg.sigmoid_bias_for_mem_enc
        mem, pos = self.model.memory_encoder(feats.top.expand(masks.shape[0], -1, -1, -1), m)
        if mcfg.no_obj_embed_spatial:
            absent = 1 - (scores > 0).float()
            mem = mem + absent[..., None, None] * self.model.no_obj_embed_spatial[..., None, None]
        if session.maskmem_pos is None:
            session.maskmem_pos = pos.flatten(2).transpose(1, 2)[:1].clone()
        return mem.flatten(2).transpose(1, 2).to(MEMORY_DTYPE)

    # ------------------------------------------------------------------ the frame
    @torch.inference_mode()
    def frame(self, session: TrackingSession, t: int, feats: FrameFeatures, reverse: bool,
              streaming: bool) -> Tuple[Dict[int, torch.Tensor], Dict[int, float]]:
        """Process frame ``t``: returns the low-res mask logits (obj_id -> h x w, hidden
        objects left out) and object-score logits of the objects shown on this frame."""
        state, cfg = session.concept, self.config
        det = self.detect(state, feats)
        ids = list(session.objects)
        entries: List[FrameEntry] = []
        for oid in ids:
            track = session.objects[oid]
            e = self.engine.step(session, track, feats, t, False, reverse, encode=False)
            track.non_cond[t] = e
            track.tracked.add(t, reverse)
            entries.append(e)
        size = det.masks.shape[-2:] if ids == [] else entries[0].low_res.shape[-2:]
        trk = torch.cat([e.low_res[:, 0] for e in entries]) if ids else det.masks.new_zeros(0, *size)
        trk_scores = torch.cat([e.object_score.reshape(1) for e in entries]) if ids else det.masks.new_zeros(0)
        trk = fill_holes(trk.float(), cfg.fill_hole_area)
        trk_prompts = torch.tensor([state.obj_prompt[o] for o in ids], dtype=torch.long)
        new_inds, unmatched, matched, confident, _ = self.associate(det, trk, ids, trk_prompts)
        new_inds = self._cap(new_inds, det.scores, len(ids))
        new_ids = list(range(state.next_id, state.next_id + len(new_inds)))
        removed = set() if streaming else self.hotstart(state, t, reverse, matched, new_ids, unmatched)
        recond: Set[int] = set()
        if cfg.recondition_every > 0 and t % cfg.recondition_every == 0 and confident:
            recond = {oid for oid in confident if float(trk_scores[ids.index(oid)]) > cfg.high_conf}
        if ids:
            self.suppress_occluded(state, trk, ids, trk_prompts, removed, t, reverse)
            self.update_memories(session, feats, t, ids, trk, trk_prompts, recond)
        shown: Dict[int, torch.Tensor] = {oid: trk[i] for i, oid in enumerate(ids)}
        scores: Dict[int, float] = {oid: float(trk_scores[i]) for i, oid in enumerate(ids)}
        new_masks = fill_holes(det.masks[new_inds], cfg.fill_hole_area) if new_inds else None
        for k, (oid, d) in enumerate(zip(new_ids, new_inds)):
            self.add_object(session, feats, t, reverse, oid, det.masks[d], int(det.prompts[d]))
            shown[oid], scores[oid] = new_masks[k], 10.0
        for oid in recond:
            shown[oid] = det.masks[confident[oid]]
        state.next_id += len(new_ids)
        for oid in state.suppressed:
            shown.pop(oid, None)
        for oid in removed:
            session.objects.pop(oid, None)
            session.labels.pop(oid, None)
            state.forget(oid)
            shown.pop(oid, None)
        return shown, scores

    def _cap(self, new_inds: List[int], scores: torch.Tensor, existing: int) -> List[int]:
        room = self.config.max_objects - existing
        if len(new_inds) <= room:
            return new_inds
        top = torch.topk(scores[new_inds], k=max(room, 0)).indices.tolist()
        return [new_inds[i] for i in top]

    def associate(self, det: Detections, trk: torch.Tensor, ids: List[int], trk_prompts: torch.Tensor):
        """Upstream ``_associate_det_trk``: (new detection indices, unmatched track ids,
        detection index -> matched track ids, track id -> its confident detection, empty track ids)."""
        cfg = self.config
        n = det.masks.shape[0]
        if trk.shape[0] == 0:
            return list(range(n)), [], {}, {}, []
        nonempty = (trk > 0).flatten(1).any(1)
        ids_t = torch.tensor(ids)
        if n == 0:
            return [], ids_t[nonempty].tolist(), {}, {}, ids_t[~nonempty].tolist()
        ious = mask_iou(det.masks > 0, trk > 0)
        ious = torch.where(det.prompts[:, None] == trk_prompts[None, :], ious, torch.zeros_like(ious))
        unmatched = ids_t[nonempty & ~(ious >= cfg.trk_assoc_iou).any(0)].tolist()
        is_new = (det.scores >= cfg.new_det_thresh) & ~(ious >= cfg.assoc_iou).any(1)
        confident_det = (det.scores >= cfg.high_conf) & ~is_new & (ious.max(1).values >= cfg.high_iou)
        best = ious.argmax(1)
        matched, confident = {}, {}
        for d in range(n):
            matched[d] = ids_t[ious[d] >= cfg.assoc_iou].tolist()
            if confident_det[d]:
                confident[int(ids_t[best[d]])] = d
        return torch.nonzero(is_new).flatten().tolist(), unmatched, matched, confident, ids_t[~nonempty].tolist()

    def hotstart(self, state: ConceptState, t: int, reverse: bool, matched: Dict[int, List[int]],
                 new_ids: List[int], unmatched: List[int]) -> Set[int]:
        """Upstream ``_process_hotstart``; returns the ids removed on this frame."""
        cfg = self.config
        limit = t + cfg.hotstart_delay if reverse else t - cfg.hotstart_delay

        def young(oid: int) -> bool:
            first = state.first_frame[oid]
            return first < limit if reverse else first > limit

        for oid in new_ids:
            state.first_frame.setdefault(oid, t)
            state.keep_alive[oid] = cfg.init_keep_alive
        for oid in {o for ms in matched.values() for o in ms}:
            state.keep_alive[oid] = min(cfg.max_keep_alive, state.keep_alive[oid] + 1)
        for oid in unmatched:
            state.unmatched.setdefault(oid, []).append(t)
            state.keep_alive[oid] = max(cfg.min_keep_alive, state.keep_alive[oid] - 1)
        removed: Set[int] = set()
        state.suppressed = set()  # this frame's
        for oid, frames in list(state.unmatched.items()):
            if oid in state.removed or oid in removed:
                continue
            if len(frames) >= cfg.hotstart_unmatch_thresh and young(oid):
                removed.add(oid)
            if state.keep_alive[oid] <= 0 and not cfg.suppress_unmatched_only_within_hotstart:
                state.suppressed.add(oid)
        for ms in matched.values():
            if len(ms) < 2:
                continue
            first = (max if reverse else min)(ms, key=lambda o: state.first_frame[o])
            for oid in ms:
                if oid != first:
                    state.overlaps.setdefault((first, oid), []).append(t)
        for (first, oid), frames in list(state.overlaps.items()):
            if oid not in state.removed and oid not in removed and young(oid) and len(frames) >= cfg.hotstart_dup_thresh:
                removed.add(oid)
        state.removed |= removed
        # bounded: objects past the hot-start window can no longer be removed by these rules
        for oid in [o for o in state.unmatched if o in state.first_frame and not young(o)]:
            del state.unmatched[oid]
        for pair in [p for p in state.overlaps if p[1] in state.first_frame and not young(p[1])]:
            del state.overlaps[pair]
        return removed

    def suppress_occluded(self, state: ConceptState, trk: torch.Tensor, ids: List[int], prompts: torch.Tensor,
                          removed: Set[int], t: int, reverse: bool) -> None:
        """Upstream ``_suppress_overlapping_based_on_recent_occlusion`` (in place on ``trk``)."""
        cfg = self.config
        if cfg.occlusion_iou <= 0:
            return
        binary = trk > 0
        last = torch.tensor([state.last_occluded.get(o, ALWAYS_OCCLUDED if o in removed else NEVER_OCCLUDED)
                             for o in ids], dtype=torch.long)
        suppress = torch.zeros(len(ids), dtype=torch.bool)
        cmp = torch.lt if reverse else torch.gt
        for p in prompts.unique(sorted=True):
            idx = torch.nonzero(prompts == p).flatten()
            if len(idx) <= 1:
                continue
            pairs = torch.triu(mask_iou(binary[idx], binary[idx]) >= cfg.occlusion_iou, diagonal=1)
            li, lj = last[idx][:, None], last[idx][None, :]
            s_i = pairs & cmp(li, lj) & (lj > NEVER_OCCLUDED)
            s_j = pairs & cmp(lj, li) & (li > NEVER_OCCLUDED)
            suppress[idx] = s_i.any(1) | s_j.any(0)
        occluded = ~binary.flatten(1).any(1) | suppress
        for i, oid in enumerate(ids):
            state.last_occluded[oid] = t if occluded[i] else int(last[i])
        trk[suppress] = NO_OBJ_LOGIT

    def update_memories(self, session: TrackingSession, feats: FrameFeatures, t: int, ids: List[int],
                        trk: torch.Tensor, prompts: torch.Tensor, recond: Set[int]) -> None:
        """Upstream ``_tracker_update_memories``: per-text non-overlap (shrink suppression),
        scores +-10 from emptiness, memory re-encoded for every track's entry on ``t``."""
        masks = trk.clone()[:, None]
        for oid in recond:  # a confident track becomes a conditioning frame
            track = session.objects[oid]
            if t in track.non_cond:
                track.cond[t] = track.non_cond.pop(t)
        for p in prompts.unique(sorted=True):
            idx = torch.nonzero(prompts == p).flatten()
            if len(idx) > 1:
                masks[idx] = suppress_shrunk(masks[idx])
        scores = torch.where((masks > 0).flatten(1).any(1, keepdim=True), 10.0, -10.0)
        mem = self.encode(session, feats, masks, scores)
        for i, oid in enumerate(ids):
            e = session.objects[oid].entry(t)
            if e is not None:
                e.maskmem = mem[i:i + 1]

    def add_object(self, session: TrackingSession, feats: FrameFeatures, t: int, reverse: bool, oid: int,
                   det_mask: torch.Tensor, prompt: int) -> None:
        """A new object prompted with a detection's mask (logits ``h x w``) as a conditioning
        frame: the mask (logit >= 0.5) resized to the model frame (bilinear, antialiased, kept
        soft), used as output, its memory encoded from that mask."""
        size = self.engine.cfg.image_size
        m = (det_mask >= 0.5).float()[None, None]
        m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        track = ObjectTrack(oid)
        entry = self.engine.step(session, track, feats, t, True, reverse, mask=m, encode=False)
        entry.maskmem = self.encode(session, feats, m * 20.0 - 10.0, entry.object_score)
        track.cond[t] = entry
        track.tracked.add(t, reverse)
        track.prompt_frames.append(t)
        session.objects[oid] = track
        state = session.concept
        state.obj_prompt[oid] = prompt
        session.labels[oid] = state.texts[prompt]


def suppress_shrunk(masks: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """``B x 1 x h x w`` logits: a mask that keeps less than ``threshold`` of its area when
    every pixel goes to its highest-scoring object is suppressed (logits clamped to -10)."""
    if masks.shape[0] <= 1:
        return masks
    keep_pixel = masks.argmax(0, keepdim=True) == torch.arange(masks.shape[0])[:, None, None, None]
    after = torch.where(keep_pixel, masks, masks.clamp(max=NO_OBJ_LOGIT))
    ratio = (after > 0).flatten(1).sum(1) / (masks > 0).flatten(1).sum(1).clamp(min=1)
    return torch.where((ratio >= threshold)[:, None, None, None], masks, masks.clamp(max=NO_OBJ_LOGIT))


def check_concept_session(session: TrackingSession, texts: Sequence[str]) -> Optional[str]:
    """An error message when ``texts`` cannot join ``session`` (None when they can)."""
    if session.concept is None and session.objects:
        return ("this session already tracks objects prompted with points, boxes or masks; concept (text) "
                "tracking detects and tracks on its own. Fix: start a new session for the text prompts.")
    if session.concept is not None and session.concept.done is not None:
        return ("text prompts must all be given before tracking starts. Fix: add every text first, then "
                "propagate, or start a new session.")
    return None
