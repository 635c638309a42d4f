"""Typed tracking state: ``TrackingSession``, per-object ``ObjectTrack`` and its
``FrameEntry`` records, cached ``FrameFeatures``, the flow tracker's ``FlowState`` and
``FrameResult``.

Memory is bounded by construction. Per object the session keeps
* conditioning frames (prompted frames): at most ``max_cond_frames`` (the ones farthest
  from the current frame are evicted first),
* non-conditioning frames: spatial memory (``maskmem``) for the last ``num_maskmem - 1``
  frames and object pointers for the last ``max_obj_ptrs_in_encoder - 1`` frames in the
  direction of tracking; everything older is dropped,
* the frames it has tracked as a short list of intervals (not one entry per frame).
Decoded frames and backbone features live in a cache of ``feature_cache`` entries.

Shapes (SAM 2.1 at 1024 px): image features ``1 x 256 x 64 x 64``; high-res features
``1 x 32 x 256 x 256`` and ``1 x 64 x 128 x 128``; low-res mask logits ``1 x 1 x 256 x 256``;
object pointer ``1 x 256``; object score ``1 x 1``; memory features as tokens
``1 x 4096 x 64`` (EdgeTAM: ``1 x 512 x 64`` after its perceiver), stored bfloat16; memory
position ``1 x 4096 x 64`` (one per session: it is the same for every frame).

This module imports no torch: ``samkit.runtime.OnnxVideoTracker`` keeps the same state with
numpy arrays in place of the tensors (memory features as bfloat16 bit patterns, uint16).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional

import numpy as np

from ..io.video import FrameSource

if TYPE_CHECKING:  # torch-free at run time: samkit.runtime.OnnxVideoTracker keeps numpy arrays here
    import torch


@dataclass
class FrameFeatures:
    """Backbone output of one frame: ``feats`` finest first (high-res levels already
    projected by ``conv_s0``/``conv_s1``), ``pos`` of the top level ``1 x C x h x w``."""

    index: int
    feats: List[torch.Tensor]
    pos: torch.Tensor
    #: concept models (SAM 3): the detector neck's levels (finest first) and their positions
    detector: Optional[List[torch.Tensor]] = None
    detector_pos: Optional[List[torch.Tensor]] = None

    @property
    def top(self) -> torch.Tensor:
        return self.feats[-1]

    @property
    def high_res(self) -> Optional[List[torch.Tensor]]:
        return self.feats[:-1] if len(self.feats) > 1 else None


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


@dataclass
class TrackedFrames:
    """Frames an object has been tracked on, as disjoint ``[lo, hi, reverse]`` intervals."""

    spans: List[List[int]] = field(default_factory=list)

    def add(self, t: int, reverse: bool) -> None:
        r = int(reverse)
        for s in self.spans:
            if s[2] == r and s[0] - 1 <= t <= s[1] + 1:
                s[0], s[1] = min(s[0], t), max(s[1], t)
                return
        for s in self.spans:  # inside a span of the other direction: split is not needed, relabel
            if s[0] <= t <= s[1]:
                return
        self.spans.append([t, t, r])
        if len(self.spans) > 64:  # merge the oldest spans (only the reverse flag is lost)
            a, b = self.spans.pop(0), self.spans.pop(0)
            self.spans.insert(0, [min(a[0], b[0]), max(a[1], b[1]), b[2]])

    def get(self, t: int) -> Optional[bool]:
        for s in self.spans:
            if s[0] <= t <= s[1]:
                return bool(s[2])
        return None


@dataclass
class ObjectTrack:
    """Memory of one object. ``cond``: prompted (conditioning) frames; ``non_cond``:
    recently tracked frames, ordered by insertion."""

    obj_id: int
    cond: Dict[int, FrameEntry] = field(default_factory=dict)
    non_cond: Dict[int, FrameEntry] = field(default_factory=dict)
    tracked: TrackedFrames = field(default_factory=TrackedFrames)
    prompt_frames: List[int] = field(default_factory=list)

    def entry(self, t: int) -> Optional[FrameEntry]:
        return self.cond.get(t) or self.non_cond.get(t)

    def num_entries(self) -> int:
        return len(self.cond) + len(self.non_cond)

    def num_tensors(self) -> int:
        return sum(e.tensors() for e in self.cond.values()) + sum(e.tensors() for e in self.non_cond.values())


@dataclass
class FrameResult:
    """Output on one frame. ``masks``: obj_id -> ``H x W`` bool; ``logits``: obj_id ->
    ``H x W`` float32 (video-resolution logits; None when the tracker is asked not to keep
    them); ``scores``: obj_id -> object-score logit (> 0 means the object is visible);
    ``labels``: obj_id -> label of the objects that have one (found by text,
    ``VideoTracker.add_text_prompt``), None when no object of the session has a label."""

    frame: int
    masks: Dict[int, np.ndarray]
    scores: Dict[int, float]
    logits: Optional[Dict[int, np.ndarray]] = None
    labels: Optional[Dict[int, str]] = None

    @property
    def obj_ids(self) -> List[int]:
        return list(self.masks)


@dataclass
class FlowState:
    """State of the flow tracker (``classic``): per object its prompt masks
    (frame -> ``H x W`` bool), the mask on the last frame tracked and that frame's grey image
    (``h x w`` uint8, at most ``flow_side`` px on its longer side)."""

    prompts: Dict[int, Dict[int, np.ndarray]] = field(default_factory=dict)
    masks: Dict[int, np.ndarray] = field(default_factory=dict)
    prev_gray: Optional[np.ndarray] = None

    def remove(self, obj_id: int) -> None:
        self.prompts.pop(obj_id, None)
        self.masks.pop(obj_id, None)


@dataclass
class ConceptState:
    """Concept tracking (SAM 3, ``VideoTracker.add_text_prompt``): the texts (prompt id = index)
    and the detector-tracker association's bookkeeping, bounded: per live object its prompt,
    first frame, keep-alive count, last occluded frame, and, only while the object is young
    enough to be removed by the hot-start rules (``hotstart_delay`` frames), its unmatched frames
    and the frames it duplicated an older object. ``removed``: ids taken out by those rules
    (never reused). ``start``: the first frame of the concept pass; ``done``: the last frame
    it processed; ``first``: the result of the prompted frame until the pass yields it."""

    texts: List[str] = field(default_factory=list)
    start: int = 0
    done: Optional[int] = None
    reverse: bool = False
    tokens: Optional[tuple] = None
    obj_prompt: Dict[int, int] = field(default_factory=dict)
    first_frame: Dict[int, int] = field(default_factory=dict)
    keep_alive: Dict[int, int] = field(default_factory=dict)
    last_occluded: Dict[int, int] = field(default_factory=dict)
    unmatched: Dict[int, List[int]] = field(default_factory=dict)
    overlaps: Dict[tuple, List[int]] = field(default_factory=dict)
    removed: set = field(default_factory=set)
    suppressed: set = field(default_factory=set)
    next_id: int = 1
    first: Optional["FrameResult"] = None

    def forget(self, obj_id: int) -> None:
        for table in (self.obj_prompt, self.first_frame, self.keep_alive, self.last_occluded, self.unmatched):
            table.pop(obj_id, None)
        for pair in [p for p in self.overlaps if obj_id in p]:
            del self.overlaps[pair]


@dataclass
class SessionStats:
    """Peak memory-bank size, for tests and benchmarks."""

    max_entries: int = 0
    max_tensors: int = 0


@dataclass
class TrackingSession:
    """State of tracking one video. Create with ``VideoTracker.start``.

    ``features``: backbone features of the last ``feature_cache`` frames; ``maskmem_pos``:
    position of the memory tokens (set by the first memory encoding); ``flow``: the flow
    tracker's state (empty for SAM 2-family models); ``last_frame``: the last frame tracked;
    ``labels``: obj_id -> label of objects found by text (kept for the object's lifetime);
    ``concept``: the state of concept tracking (SAM 3 text prompts), None otherwise."""

    source: FrameSource
    height: int
    width: int
    objects: Dict[int, ObjectTrack] = field(default_factory=dict)
    features: "collections.OrderedDict[int, FrameFeatures]" = field(default_factory=collections.OrderedDict)
    feature_cache: int = 2
    max_cond_frames: int = 16
    maskmem_pos: Optional[torch.Tensor] = None
    flow: FlowState = field(default_factory=FlowState)
    last_frame: Optional[int] = None
    stats: SessionStats = field(default_factory=SessionStats)
    labels: Dict[int, str] = field(default_factory=dict)
    concept: Optional[ConceptState] = None

    @property
    def num_frames(self) -> Optional[int]:
        return self.source.num_frames

    @property
    def obj_ids(self) -> List[int]:
        return list(self.objects)

    def memory_entries(self) -> int:
        """Stored per-object frame entries (conditioning + non-conditioning), all objects."""
        return sum(o.num_entries() for o in self.objects.values())

    def memory_tensors(self) -> int:
        """Stored tensors in the memory bank plus cached feature maps."""
        return sum(o.num_tensors() for o in self.objects.values()) + sum(len(f.feats) + 1
                                                                          for f in self.features.values())

    def note_stats(self) -> None:
        s = self.stats
        s.max_entries = max(s.max_entries, self.memory_entries())
        s.max_tensors = max(s.max_tensors, self.memory_tensors())

    def close(self) -> None:
        self.features.clear()
        self.source.close()

    def __enter__(self) -> "TrackingSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def evict(track: ObjectTrack, t: int, reverse: bool, keep_mem: int, keep_ptr: int, max_cond: int) -> None:
    """Drop what frame ``t`` (and later frames in this direction) can no longer read.

    ``keep_mem`` frames behind ``t`` keep spatial memory, ``keep_ptr`` frames keep their
    object pointer, the rest of the non-conditioning entries go. Conditioning frames are
    capped at ``max_cond`` (farthest from ``t`` first)."""
    sign = -1 if reverse else 1
    for k in list(track.non_cond):
        behind = (t - k) * sign  # > 0: already passed in this direction
        if behind < 0 or behind > keep_ptr:
            del track.non_cond[k]
        elif behind >= keep_mem:
            track.non_cond[k].strip()
    cap_cond_frames(track, t, max_cond)


def cap_cond_frames(track: ObjectTrack, t: int, max_cond: int) -> None:
    """Keep at most ``max_cond`` conditioning frames, dropping those farthest from ``t``."""
    if len(track.cond) > max_cond:
        for k in sorted(track.cond, key=lambda k: -abs(k - t))[: len(track.cond) - max_cond]:
            del track.cond[k]

