"""Which memory one tracking step reads, and the propagation loop that steps every object and
bounds its memory (torch-free; shared by ``VideoTracker`` / ``MemoryTracker`` and
``samkit.runtime.OnnxVideoTracker``).

The rules of the official ``_prepare_memory_conditioned_features``: the conditioning frames
(all, or the ``max_cond_frames_in_attn`` closest), the last ``num_maskmem - 1`` tracked frames
in the direction of tracking (every ``memory_temporal_stride_for_eval``-th frame beyond the
previous one) as spatial memory, and object pointers of the conditioning frames (only those in
the past, when ``only_obj_ptrs_in_the_past_for_eval``) and of the last ``max_obj_ptrs - 1``
frames. ``cfg`` is any object with the fields of ``samkit.memory.config.MemoryConfig``.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Tuple

from ..errors import VideoError
from .session import FrameEntry, ObjectTrack, TrackingSession, evict


def select_cond_frames(frame_idx: int, cond: Dict[int, FrameEntry], max_num: int):
    """Upstream ``select_closest_cond_frames``: all when ``max_num`` is -1, else the closest
    before, the closest at/after and the temporally nearest others. Returns (selected,
    unselected) dicts."""
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


def _spatial(cfg, track: ObjectTrack, frame_idx: int, reverse: bool, selected: dict,
             unselected: dict) -> List[Tuple[int, FrameEntry]]:
    """``[(t_pos, entry)]``: t_pos 0 for the conditioning frames, 1..num_maskmem-1 for the
    previous frames (num_maskmem - t_pos frames back); entries without memory left out."""
    frames: List[Tuple[int, Optional[FrameEntry]]] = [(0, e) for e in selected.values()]
    stride = cfg.memory_temporal_stride_for_eval
    for t_pos in range(1, cfg.num_maskmem):
        t_rel = cfg.num_maskmem - t_pos
        if t_rel == 1:
            prev = frame_idx + t_rel if reverse else frame_idx - t_rel
        elif not reverse:
            prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
        else:
            prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
        e = track.non_cond.get(prev)
        if e is None:
            e = unselected.get(prev)
        frames.append((t_pos, e))
    return [(t, e) for t, e in frames if e is not None and e.maskmem is not None]


def memory_plan(cfg, track: ObjectTrack, frame_idx: int, reverse: bool, num_frames: Optional[int]):
    """The memory ``track`` reads on ``frame_idx``: ``(frames, pointers, max_ptrs)`` with
    ``frames`` = ``[(t_pos, entry)]`` (spatial memory; its temporal encoding is row
    ``num_maskmem - t_pos - 1`` of ``maskmem_tpos_enc``), ``pointers`` = ``[(rel, entry)]``
    (object pointers and their signed or absolute temporal distance) and ``max_ptrs``
    (the pointer window: distances are divided by ``max_ptrs - 1`` for their encoding)."""
    selected, unselected = select_cond_frames(frame_idx, track.cond, cfg.max_cond_frames_in_attn)
    frames = _spatial(cfg, track, frame_idx, reverse, selected, unselected)
    pointers: List[Tuple[int, FrameEntry]] = []
    max_ptrs = cfg.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, cfg.max_obj_ptrs_in_encoder)
    if not cfg.use_obj_ptrs_in_encoder:
        return frames, pointers, max_ptrs
    if cfg.only_obj_ptrs_in_the_past_for_eval:
        ptr_cond = {t: e for t, e in selected.items() if (t >= frame_idx if reverse else t <= frame_idx)}
    else:
        ptr_cond = selected
    sign = -1 if reverse else 1
    pointers = [((frame_idx - t) * sign if cfg.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), e)
                for t, e in ptr_cond.items()]
    for t_diff in range(1, max_ptrs):
        t = frame_idx + t_diff if reverse else frame_idx - t_diff
        if t < 0 or (num_frames is not None and t >= num_frames):
            break
        e = track.non_cond.get(t, unselected.get(t))
        if e is not None:
            pointers.append((t_diff, e))
    return frames, pointers, max_ptrs


def memory_keep(cfg) -> Tuple[int, int]:
    """How many tracked frames behind the current one keep their memory features and their object
    pointers (``evict`` drops the rest): ``(keep_mem, keep_ptr)``."""
    keep_mem = cfg.num_maskmem * cfg.memory_temporal_stride_for_eval
    return keep_mem, max(cfg.max_obj_ptrs_in_encoder - 1, keep_mem)


def propagate_frames(session: TrackingSession, cfg, start: Optional[int], reverse: bool, max_frames: Optional[int],
                     features: Callable, step: Callable, result: Callable,
                     step_many: Optional[Callable] = None) -> Iterator[Tuple[int, object]]:
    """The propagation loop of both memory trackers (torch's ``VideoTracker`` and the runtime's
    ``OnnxVideoTracker``): from ``start`` (default: the earliest prompted frame; a live stream
    resumes after its last frame) forward, or backward with ``reverse``, every object is stepped on
    each frame it has no prompt on, its memory bounded by ``evict``. ``features(session, t)``,
    ``step(session, track, feats, t, False, reverse) -> FrameEntry`` and ``result(session, t,
    entries)`` are the tracker's own; yields ``(t, result)``. ``step_many(session, tracks, feats, t,
    reverse) -> [FrameEntry]`` (optional): steps every object of a frame at once (the same entries
    as ``step`` one at a time; used when more than one object needs a step)."""
    src = session.source
    if start is None:
        start = min(t for o in session.objects.values() for t in o.cond)
        if not src.random_access and session.last_frame is not None and not reverse:
            start = max(start, session.last_frame + 1)  # a live stream resumes where it stopped
    t, count = max(int(start), src.first_available()), 0
    n = session.num_frames
    keep_mem, keep_ptr = memory_keep(cfg)
    while (t >= 0 if reverse else (n is None or t < n)) and (max_frames is None or count < max_frames):
        try:
            feats = features(session, t)
        except VideoError:
            if src.ended:  # a live stream that ends just stops
                return
            raise
        n = session.num_frames
        entries = {}
        todo = [track for track in session.objects.values() if t not in track.cond]
        stepped = {}
        if step_many is not None and len(todo) > 1:
            stepped = {id(track): e for track, e in zip(todo, step_many(session, todo, feats, t, reverse))}
        for oid, track in session.objects.items():
            e = track.cond.get(t)
            if e is None:
                e = stepped.get(id(track))
                if e is None:
                    e = step(session, track, feats, t, False, reverse)
                track.non_cond[t] = e
            track.tracked.add(t, reverse)
            entries[oid] = e
            evict(track, t, reverse, keep_mem, keep_ptr, session.max_cond_frames)
        session.last_frame = t
        session.note_stats()
        out = result(session, t, entries)
        count += 1
        yield t, out
        t = t - 1 if reverse else t + 1
