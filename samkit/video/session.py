"""Typed tracking state: ``TrackingSession``, per-object ``ObjectTrack`` and ``FrameResult``.

Memory is bounded by construction. Per object the session keeps
* conditioning frames (prompted frames): at most ``max_cond_frames`` (the ones farthest
  from the current frame are evicted first),
* non-conditioning frames: spatial memory (``maskmem``) for the last ``num_maskmem - 1``
  frames and object pointers for the last ``max_obj_ptrs_in_encoder - 1`` frames in the
  direction of tracking; everything older is dropped,
* the frames it has tracked as a short list of intervals (not one entry per frame).
Decoded frames and backbone features live in a cache of ``feature_cache`` entries.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..io.video import FrameSource
from .sam2_engine import FrameEntry, FrameFeatures


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

    def discard(self, t: int) -> None:
        out = []
        for lo, hi, r in self.spans:
            if lo <= t <= hi:
                if lo < t:
                    out.append([lo, t - 1, r])
                if t < hi:
                    out.append([t + 1, hi, r])
            else:
                out.append([lo, hi, r])
        self.spans = out


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
    them); ``scores``: obj_id -> object-score logit (> 0 means the object is visible)."""

    frame: int
    masks: Dict[int, np.ndarray]
    scores: Dict[int, float]
    logits: Optional[Dict[int, np.ndarray]] = None

    @property
    def obj_ids(self) -> List[int]:
        return list(self.masks)


@dataclass
class SessionStats:
    """Counters for tests and benchmarks."""

    frames_processed: int = 0
    max_entries: int = 0
    max_tensors: int = 0
    max_cached_features: int = 0
    feature_computations: int = 0


@dataclass
class TrackingSession:
    """State of tracking one video. Create with ``VideoTracker.start``."""

    source: FrameSource
    height: int
    width: int
    objects: Dict[int, ObjectTrack] = field(default_factory=dict)
    features: "collections.OrderedDict[int, FrameFeatures]" = field(default_factory=collections.OrderedDict)
    feature_cache: int = 2
    max_cond_frames: int = 16
    last_frame: Optional[int] = None
    reverse: bool = False
    stats: SessionStats = field(default_factory=SessionStats)
    classic_state: Optional[dict] = None

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
        s.max_cached_features = max(s.max_cached_features, len(self.features))

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


def frame_window(session: TrackingSession) -> Tuple[int, Optional[int]]:
    """(first readable frame, frame count or None)."""
    return session.source.first_available(), session.num_frames
