"""Video tracking sessions of the server, bounded in number, age and memory.

A session is a ``samkit.VideoTracker`` session on a video file or frame folder of the data
folder. Its results are kept as COCO RLE per object per frame (a few kB each; the decoded
frames themselves are not kept: the tracker's frame source holds one or two and the JPEG
frame cache at most ``frames_in_memory`` across all sessions).

Bounds: at most ``max_sessions`` sessions (opening one more closes the least recently used
idle session; when every session is busy propagating, 429), sessions idle longer than
``ttl_s`` are closed, and a video longer than ``max_frames`` frames is refused when opened.
"""
from __future__ import annotations

import io
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List

import numpy as np

from ..errors import InputError
from . import rle as rle_codec
from .cache import LRUBytes
from .errors import busy, not_found


@dataclass
class VideoSession:
    """One tracking session: ``tracking`` is the tracker's ``TrackingSession``."""

    id: str
    path: str
    tracking: Any
    num_frames: int
    width: int
    height: int
    labels: Dict[int, str] = field(default_factory=dict)
    results: Dict[int, Dict[int, dict]] = field(default_factory=dict)  # frame -> obj -> {rle, score}
    prompts: Dict[tuple, dict] = field(default_factory=dict)  # (frame, obj) -> the tracker's prompt there
    last_used: float = field(default_factory=time.monotonic)
    busy: bool = False

    def info(self) -> dict:
        return {"id": self.id, "path": self.path, "num_frames": self.num_frames, "width": self.width,
                "height": self.height, "objects": [{"id": k, "label": v} for k, v in sorted(self.labels.items())],
                "frames_with_results": len(self.results)}

    def store_result(self, frame: int, result: Any) -> List[dict]:
        """Keep a tracker ``FrameResult`` as RLE per object; returns the objects of that frame.
        Objects the result does not mention keep their earlier mask on that frame (a propagation
        from a frame without their prompt, e.g. backward with the flow tracker, yields none)."""
        objs = dict(self.results.get(int(frame), {}))
        for oid, mask in result.masks.items():
            objs[int(oid)] = {"rle": rle_codec.encode(np.asarray(mask, bool)),
                              "score": float(result.scores.get(oid, 0.0))}
        self.results[int(frame)] = objs
        return self.frame_objects(frame)

    def keep_prompt(self, frame: int, obj_id: int, points, labels, box) -> None:
        """Remember the prompt of ``obj_id`` on ``frame`` (it replaces an earlier one there, as in
        the tracker), so a reopened session can give it to its tracker again."""
        self.prompts.pop((int(frame), int(obj_id)), None)
        self.prompts[(int(frame), int(obj_id))] = {"frame": int(frame), "obj_id": int(obj_id), "points": points,
                                                   "labels": labels, "box": box}

    def document_prompts(self) -> List[dict]:
        return list(self.prompts.values())

    def restore(self, doc: dict) -> None:
        """Take the frames of a saved video document (``annotations.save_video``) as results and
        its prompts as this session's (:meth:`replay` gives them to the tracker)."""
        for p in doc.get("prompts") or []:
            if isinstance(p, dict) and 0 <= int(p.get("frame", -1)) < self.num_frames:
                self.keep_prompt(p["frame"], p["obj_id"], p.get("points"), p.get("labels"), p.get("box"))
        for t, objs in doc.get("frames", {}).items():
            if 0 <= int(t) < self.num_frames:
                self.results[int(t)] = {int(o["id"]): {"rle": o["rle"], "score": o.get("score")} for o in objs}
                for o in objs:
                    self.labels.setdefault(int(o["id"]), o.get("label") or f"object {o['id']}")

    def replay(self, tracker) -> int:
        """Give the kept prompts to ``tracker`` again (a reopened page tracks its objects on; the
        saved masks stay as they are). Prompts the tracker refuses are dropped. Returns how many
        were replayed."""
        done = 0
        for key, p in list(self.prompts.items()):
            try:
                tracker.add_prompt(self.tracking, p["frame"], p["obj_id"], points=p["points"], labels=p["labels"],
                                   box=p["box"])
                done += 1
            except InputError:
                del self.prompts[key]
        return done

    def frame_objects(self, frame: int) -> List[dict]:
        return [{"id": oid, "label": self.labels.get(oid, f"object {oid}"), **v}
                for oid, v in sorted(self.results.get(int(frame), {}).items())]

    def document_frames(self) -> Dict[int, List[dict]]:
        return {t: [{"id": o["id"], "label": o["label"], "rle": o["rle"], "score": o["score"]}
                    for o in self.frame_objects(t)] for t in sorted(self.results)}


class SessionStore:
    """Open sessions (see module docstring). Thread-safe."""

    def __init__(self, max_sessions: int = 4, ttl_s: float = 1800.0, max_frames: int = 10000,
                 frames_in_memory: int = 64) -> None:
        self.max_sessions = int(max_sessions)
        self.ttl_s = float(ttl_s)
        self.max_frames = int(max_frames)
        self.frames = LRUBytes(int(frames_in_memory))  # JPEG frames, counted as 1 "byte" each
        self._sessions: "OrderedDict[str, VideoSession]" = OrderedDict()
        self._lock = threading.Lock()
        self.closed = 0

    def sweep(self) -> None:
        """Close sessions idle for longer than the TTL."""
        now = time.monotonic()
        with self._lock:
            for sid in [s.id for s in self._sessions.values() if not s.busy and now - s.last_used > self.ttl_s]:
                self._close(sid)

    def _close(self, sid: str) -> None:
        session = self._sessions.pop(sid, None)
        if session is not None:
            self.closed += 1
            try:
                session.tracking.source.close()
            except Exception:  # noqa: BLE001 - closing a reader must never fail a request
                pass

    def add(self, path: str, tracking: Any) -> VideoSession:
        """Register a started tracker session (the caller opened it); enforces the bounds."""
        n = tracking.num_frames
        if n is None or n > self.max_frames:
            tracking.source.close()
            raise InputError(f"{path!r} has {n if n is not None else 'an unknown number of'} frames; this server "
                             f"holds videos of at most {self.max_frames}. Fix: cut the video, or start the server "
                             "with a larger --max-video-frames.")
        self.sweep()
        with self._lock:
            while len(self._sessions) >= self.max_sessions:
                idle = [s for s in self._sessions.values() if not s.busy]
                if not idle:
                    tracking.source.close()
                    raise busy(f"all {self.max_sessions} video sessions are propagating. Fix: wait for one to end, "
                               "or start the server with a larger --max-sessions.", retry_after=5)
                self._close(idle[0].id)  # the least recently used idle session
            session = VideoSession(uuid.uuid4().hex[:16], path, tracking, int(n), int(tracking.width),
                                   int(tracking.height))
            self._sessions[session.id] = session
            return session

    def get(self, sid: str) -> VideoSession:
        self.sweep()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                raise not_found(f"no video session {sid!r} (closed, expired after {self.ttl_s:g} s idle, or "
                                "evicted). Fix: start a new session with POST /api/video/sessions.")
            session.last_used = time.monotonic()
            self._sessions.move_to_end(sid)
            return session

    def close(self, sid: str) -> None:
        with self._lock:
            if sid not in self._sessions:
                raise not_found(f"no video session {sid!r}. Fix: list sessions with GET /api/video/sessions.")
            self._close(sid)

    def list(self) -> List[dict]:
        self.sweep()
        with self._lock:
            return [s.info() for s in self._sessions.values()]

    def close_all(self) -> None:
        with self._lock:
            for sid in list(self._sessions):
                self._close(sid)

    def frame_jpeg(self, session: VideoSession, index: int) -> bytes:
        """Frame ``index`` as JPEG (worker thread: the frame source is not thread-safe)."""
        if not 0 <= index < session.num_frames:
            raise InputError(f"frame {index} is outside the video (0..{session.num_frames - 1}). Fix: pick a frame "
                             "of the timeline.")
        key = (session.id, index)
        hit = self.frames.get(key)
        if hit is not None:
            return hit
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(session.tracking.source.get(index)).save(buf, format="JPEG", quality=90)
        data = buf.getvalue()
        self.frames.put(key, data, 1)
        return data

    def snapshot(self) -> dict:
        return {"open": len(self._sessions), "max_sessions": self.max_sessions, "ttl_s": self.ttl_s,
                "max_frames": self.max_frames, "frames_cached": len(self.frames), "closed": self.closed}
