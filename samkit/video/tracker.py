"""``VideoTracker``: promptable, bounded-memory video object tracking.

```python
from samkit import load_model, VideoTracker
tracker = VideoTracker(load_model("sam2.1_hiera_t"))
session = tracker.start("clip.mp4")          # folder, video file, array or iterator
tracker.add_prompt(session, frame=0, obj_id=1, points=[[x, y]], labels=[1])
for frame, result in tracker.propagate(session):
    result.masks[1]                           # H x W bool
```

Semantics follow the official SAM 2 video predictor (``propagate`` starts at the earliest
prompted frame, objects are tracked independently, prompts on tracked frames reuse the
previous logits as mask input). Differences, all for bounded memory or usability:
* prompted frames always become conditioning frames (upstream's
  ``add_all_frames_to_correct_as_cond``; set ``corrections_as_conditioning=False`` for the
  upstream default, where a correction on a tracked frame is recomputed by the next pass),
* at most ``max_cond_frames`` conditioning frames per object are kept,
* non-conditioning memory older than what the model reads (``num_maskmem`` frames of
  spatial memory, ``max_obj_ptrs_in_encoder`` frames of object pointers) is dropped, so a
  pass that changes direction cannot read memory of an old pass in the other direction.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, VideoError
from ..io.video import open_frames
from ..prompts import check_video_prompt
from .memory_plan import memory_keep, propagate_frames
from .memory_tracker import MemoryTracker, preprocess_video_frame
from .session import FlowState, FrameFeatures, FrameResult, ObjectTrack, TrackingSession, cap_cond_frames, evict

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _is_classic(model: Any) -> bool:
    spec = getattr(model, "spec", None)
    return (spec is not None and getattr(spec, "neural", True) is False) or hasattr(model, "predict_image") \
        and not isinstance(model, torch.nn.Module)


class VideoTracker:
    """Track prompted objects through a video with a SAM 2-family model (``engine``, a
    ``MemoryTracker``) or ``classic`` (``flow``, a ``FlowTracker``).

    ``keep_logits``: also return video-resolution logits per object in ``FrameResult``.
    ``max_cond_frames``: conditioning frames kept per object. ``feature_cache``: frames whose
    backbone features are kept (1-2 is enough). ``stream_keep``: frames a live stream keeps.
    ``object_batch``: objects tracked together on a frame (``MemoryTracker.step_many``: shared
    per-frame work, the memory attention batched, bit-identical masks); 1 tracks them one at a time.
    """

    def __init__(self, model: Any, *, keep_logits: bool = False, max_cond_frames: int = 16,
                 feature_cache: int = 2, stream_keep: int = 2, corrections_as_conditioning: bool = True,
                 concept_config: Any = None, object_batch: int = 8) -> None:
        if isinstance(object_batch, bool) or not isinstance(object_batch, (int, np.integer)) or object_batch < 1:
            raise InputError(f"object_batch must be a positive integer, got {object_batch!r}. "
                             "Fix: pass e.g. object_batch=8 (1 tracks objects one at a time).")
        self.object_batch = int(object_batch)
        self.model = model
        self.keep_logits = keep_logits
        self.max_cond_frames = int(max_cond_frames)
        self.feature_cache = max(1, int(feature_cache))
        self.stream_keep = max(1, int(stream_keep))
        self.corrections_as_conditioning = corrections_as_conditioning
        if _is_classic(model):
            from .flow_tracker import FlowTracker

            self.flow = FlowTracker(model)
            self.engine = None
        else:
            if getattr(model, "memory_config", None) is None:
                name = getattr(getattr(model, "spec", None), "name", type(model).__name__)
                raise InputError(f"model {name!r} has no video memory. Fix: use a video model "
                                 "(sam2.1_hiera_*, efficienttam_*, edgetam) or 'classic'.")
            self.flow = None
            self.engine = MemoryTracker(model)
            if callable(getattr(model, "detect", None)):  # SAM 3: text prompts detect and track
                from .concept import ConceptConfig, ConceptEngine

                self.concepts = ConceptEngine(model, self.engine, concept_config or ConceptConfig())
            spec = getattr(model, "spec", None)
            self.mean = tuple(getattr(spec, "pixel_mean", _IMAGENET_MEAN)) if spec is not None else _IMAGENET_MEAN
            self.std = tuple(getattr(spec, "pixel_std", _IMAGENET_STD)) if spec is not None else _IMAGENET_STD
            if max(self.mean) > 1.0:  # the video loader works in 0..1 units
                self.mean, self.std = _IMAGENET_MEAN, _IMAGENET_STD

    # ------------------------------------------------------------------ session
    def start(self, source: Any) -> TrackingSession:
        """Open ``source`` lazily (a folder, a video file, a T x H x W x 3 array or an
        iterator of frames) and return an empty ``TrackingSession``. ``VideoError`` when the
        first frame cannot be read, or (folders, frame lists) when frames differ in size."""
        src = open_frames(source, keep=self.stream_keep)
        first = src.get(src.first_available())
        h, w = first.shape[:2]
        return TrackingSession(source=src, height=int(h), width=int(w), feature_cache=self.feature_cache,
                               max_cond_frames=self.max_cond_frames)

    concepts = None  # a ConceptEngine for models that read text (SAM 3)

    def reset(self, session: TrackingSession) -> None:
        """Forget every object and prompt (frames stay readable)."""
        session.concept = None
        session.objects.clear()
        session.features.clear()
        session.maskmem_pos = None
        session.flow = FlowState()
        session.labels.clear()

    def remove_object(self, session: TrackingSession, obj_id: int) -> None:
        """Stop tracking ``obj_id`` and free its memory."""
        if obj_id not in session.objects:
            raise InputError(f"object id {obj_id!r} was never prompted in this session (known ids: "
                             f"{session.obj_ids}). Fix: pass one of the known ids.")
        del session.objects[obj_id]
        session.flow.remove(obj_id)
        session.labels.pop(obj_id, None)
        if session.concept is not None:
            session.concept.forget(obj_id)
            session.concept.removed.add(obj_id)

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

    def add_prompt(self, session: TrackingSession, frame: int, obj_id: Optional[int] = None,
                   points: Optional[Sequence] = None, labels: Optional[Sequence] = None,
                   box: Optional[Sequence] = None, mask: Optional[np.ndarray] = None,
                   text: Any = None) -> FrameResult:
        """Prompt object ``obj_id`` on ``frame`` with points (video pixels, x y) and labels
        (1 foreground, 0 background), and/or a box ``[x0, y0, x1, y1]``, or a ``mask``
        (H x W bool). Replaces earlier prompts of that object on that frame. New objects may
        be added at any time. Returns the masks on that frame.

        ``text="dog"`` (or a list) instead: every instance of the text, found from ``frame`` on
        (``add_text_prompt``; no ``obj_id``)."""
        if text is not None:
            if obj_id is not None or any(v is not None for v in (points, labels, box, mask)):
                raise InputError("text= takes no obj_id, points, box or mask: every instance gets an id of its "
                                 "own. Fix: add_prompt(session, frame, text='dog') alone.")
            if self.concepts is None:
                self.add_text_prompt(session, frame, text)
                return self._result(session, frame, {oid: o.entry(frame) for oid, o in session.objects.items()})
            return self._concept_first(session, frame, text)
        if obj_id is None:
            raise InputError("add_prompt needs obj_id for points, boxes and masks. Fix: pass obj_id=1.")
        if session.concept is not None:
            raise InputError("this session tracks text concepts, which detect and track on their own; points, "
                             "boxes and masks cannot be added to it. Fix: start another session for them.")
        frame = self._check_frame(session, frame)
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise InputError(f"obj_id must be an integer, got {obj_id!r}. Fix: pass e.g. obj_id=1.")
        obj_id = int(obj_id)
        coords, labs, mask_t = self._prompt_tensors(session, points, labels, box, mask)
        if self.flow is not None:
            session.objects.setdefault(obj_id, ObjectTrack(obj_id))
            return _labelled(session, self.flow.add_prompt(session, frame, obj_id, points, labels, box, mask))
        feats = self._features(session, frame)
        track = session.objects.get(obj_id) or ObjectTrack(obj_id)
        prev_dir = track.tracked.get(frame)
        is_init = prev_dir is None
        reverse = bool(prev_dir) if prev_dir is not None else False
        prev_logits = None
        old = track.entry(frame)
        if mask_t is None and old is not None and old.low_res is not None:
            prev_logits = torch.clamp(old.low_res, -32.0, 32.0)
        entry = self.engine.step(session, track, feats, frame, is_init, reverse, coords=coords, labels=labs,
                                 mask=mask_t, prev_logits=prev_logits)
        session.objects[obj_id] = track
        if is_init or self.corrections_as_conditioning:
            track.cond[frame] = entry
            track.non_cond.pop(frame, None)
            cap_cond_frames(track, frame, session.max_cond_frames)
        else:
            track.non_cond[frame] = entry
        if frame not in track.prompt_frames:
            track.prompt_frames.append(frame)
            del track.prompt_frames[: -session.max_cond_frames]  # bounded, like the cond frames
        if self.engine.cfg.prompted_frames_condition_all:
            self._condition_all(session, frame, obj_id)
        session.note_stats()
        return self._result(session, frame, {oid: o.entry(frame) for oid, o in session.objects.items()})

    def add_text_prompt(self, session: TrackingSession, frame: int, text: Any, clip: Any = None,
                        first_obj_id: Optional[int] = None, **text_options: Any) -> Dict[int, str]:
        """Find the objects named by ``text`` (a string or a list of strings) on ``frame`` and
        add one object per instance, prompted with its mask; each keeps its text as label
        (``FrameResult.labels``). ``clip``: a ``samkit.vocab.DenseClip`` unless the model reads
        text itself; ``text_options`` as ``ImagePredictor.predict(text=...)``. New object ids
        count up from ``first_obj_id`` (default: one above the largest id in the session).
        Returns {obj_id: label} of the added objects ({} when the text is not found)."""
        from ..vocab.video import add_text_objects

        if self.concepts is not None:  # SAM 3: detect on every frame, new instances as they appear
            if clip is not None or first_obj_id is not None or text_options:
                raise InputError("SAM 3 reads text itself and numbers its objects: clip, first_obj_id and text "
                                 "options do not apply. Fix: add_text_prompt(session, frame, text) alone.")
            result = self._concept_first(session, frame, text)
            return {oid: result.labels[oid] for oid in result.masks}
        return add_text_objects(self, session, frame, text, clip, first_obj_id, **text_options)

    def _condition_all(self, session: TrackingSession, frame: int, obj_id: int) -> None:
        """EdgeTAM (SAM 2.0-style predictor): a prompted frame is a conditioning frame of every
        object; an object without a prompt there gets an empty mask (logits -1024, object
        score 10, the pointer of an empty mask prompt) and the memory of that empty mask."""
        wanted = {(oid, frame) for oid in session.objects if oid != obj_id}
        for oid, o in session.objects.items():
            if oid != obj_id:
                wanted |= {(obj_id, t) for t in o.prompt_frames}
        for oid, t in sorted(wanted, key=lambda x: x[1]):
            track = session.objects[oid]
            if t in track.cond or not session.source.can_read(t) and t not in session.features:
                continue
            track.cond[t] = self.engine.empty_entry(session, self._features(session, t))
            track.non_cond.pop(t, None)

    def _prompt_tensors(self, session: TrackingSession, points, labels, box, mask):
        """Check a prompt against the video's frame size (``samkit.prompts`` rules, as for images)
        and convert it for the SAM 2 engine: ``(coords 1 x N x 2, labels 1 x N, None)`` in the
        model's frame, a box first as two corner points (labels 2, 3), or ``(None, None, mask
        1 x 1 x S x S)``. The classic engine takes the prompts as given: ``(None, None, None)``."""
        prompt, m = check_video_prompt(points, labels, box, mask, (session.height, session.width))
        if self.engine is None:
            return None, None, None
        size = self.engine.cfg.image_size
        if m is not None:
            t = torch.from_numpy(m.astype(np.float32))[None, None]
            if tuple(t.shape[-2:]) != (size, size):
                t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
                t = (t >= 0.5).float()
            return None, None, t.to(self.engine.device)
        pts = np.zeros((0, 2), np.float32) if prompt.points is None else prompt.points
        lab = np.zeros((0,), np.int32) if prompt.labels is None else prompt.labels
        if prompt.box is not None:
            pts = np.concatenate([prompt.box.reshape(2, 2), pts], 0)
            lab = np.concatenate([np.array([2, 3], np.int32), lab], 0)
        coords = torch.from_numpy(pts)[None] / torch.tensor([session.width, session.height], dtype=torch.float32) * size
        return coords.to(self.engine.device), torch.from_numpy(lab)[None].to(self.engine.device), None

    # ------------------------------------------------------------------ tracking
    def _features(self, session: TrackingSession, t: int) -> FrameFeatures:
        cache = session.features
        if t in cache:
            cache.move_to_end(t)
            return cache[t]
        frame = session.source.get(t)  # VideoError for a frame of another size than the video's
        x = preprocess_video_frame(frame, self.engine.cfg.image_size, self.mean, self.std, self.engine.device)
        feats = self.engine.features(x, t)
        cache[t] = feats
        while len(cache) > session.feature_cache:
            cache.popitem(last=False)
        return feats

    def propagate(self, session: TrackingSession, start: Optional[int] = None, reverse: bool = False,
                  max_frames: Optional[int] = None) -> Iterator[Tuple[int, FrameResult]]:
        """Yield ``(frame, FrameResult)`` from ``start`` (default: the earliest prompted frame;
        a live stream resumes after the last frame it tracked) to the end (or frame 0 when
        ``reverse``), at most ``max_frames`` frames. A source that fails mid-way raises
        ``VideoError`` after every earlier frame was yielded; a live stream that ends just
        stops."""
        if session.concept is not None:
            yield from self._propagate_concepts(session, reverse, max_frames)
            return
        if not session.objects:
            raise InputError("no object has a prompt in this session. Fix: call add_prompt first.")
        empty = [oid for oid, o in session.objects.items() if not o.cond and self.flow is None]
        if empty:
            raise InputError(f"object ids {empty} have no prompt (their prompted frames were released). "
                             "Fix: prompt them again or remove_object.")
        if self.flow is not None:
            for t, res in self.flow.propagate(session, start, reverse, max_frames):
                yield t, _labelled(session, res)
            return
        step_many = None
        if self.object_batch > 1:
            def step_many(sess, tracks, feats, t, rev):
                return self.engine.step_many(sess, tracks, feats, t, rev, max_batch=self.object_batch)
        yield from propagate_frames(session, self.engine.cfg, start, reverse, max_frames, self._features,
                                    self.engine.step, self._result, step_many)

    # ------------------------------------------------------------------ concepts (SAM 3)
    def _concept_first(self, session: TrackingSession, frame: int, text: Any) -> FrameResult:
        """Register the texts of a concept session and process its first frame."""
        from ..vocab.vocabularies import check_texts
        from .concept import check_concept_session
        from .session import ConceptState

        frame = self._check_frame(session, frame)
        texts = check_texts([text] if isinstance(text, str) else text, "text")
        problem = check_concept_session(session, texts)
        if problem:
            raise InputError(problem)
        with torch.inference_mode():
            tokens = self.model.encode_text(texts)  # a text too long for SAM 3: InputError here
        session.concept = ConceptState(texts=list(texts), start=frame, tokens=tokens,
                                       next_id=max(session.objects, default=0) + 1)
        return self._concept_frame(session, frame)

    def _concept_frame(self, session: TrackingSession, t: int) -> FrameResult:
        state = session.concept
        feats = self._features(session, t)
        streaming = not session.source.random_access
        shown, scores = self.concepts.frame(session, t, feats, False, streaming)
        state.done = session.last_frame = t
        keep_mem, keep_ptr = memory_keep(self.engine.cfg)
        for track in session.objects.values():
            evict(track, t, False, keep_mem, keep_ptr, session.max_cond_frames)
        session.note_stats()
        result = self._low_res_result(session, t, shown, scores)
        state.first = result if t == state.start else None
        return result

    def _propagate_concepts(self, session: TrackingSession, reverse: bool,
                            max_frames: Optional[int]) -> Iterator[Tuple[int, FrameResult]]:
        """The concept pass: frame by frame from the prompted frame; outputs are held back
        ``hotstart_delay`` frames (objects removed meanwhile are hidden), except on streams."""
        state, cfg = session.concept, self.concepts.config
        if reverse:
            raise InputError("text concepts are tracked forward only. Fix: propagate(session) without reverse.")
        streaming = not session.source.random_access
        delay = 0 if streaming else cfg.hotstart_delay
        held: list = []
        n, count = session.num_frames, 0
        t = state.start if state.first is not None else state.done + 1
        while (n is None or t < n) and (max_frames is None or count < max_frames):
            if t == state.start and state.first is not None:
                result = state.first
            else:
                try:
                    result = self._concept_frame(session, t)
                except VideoError:
                    if session.source.ended:
                        break
                    raise
            n, count = session.num_frames, count + 1
            held.append((t, result))
            while len(held) > delay:
                yield _hide(held.pop(0), state.removed)
            t += 1
        for item in held:
            yield _hide(item, state.removed)

    def _low_res_result(self, session: TrackingSession, t: int, shown: dict, scores: dict) -> FrameResult:
        """``FrameResult`` from low-res logits (obj_id -> h x w): video size, > 0, empty masks left out."""
        masks, out_scores, logits = {}, {}, {}
        for oid, low in shown.items():
            up = F.interpolate(low[None, None].float(), size=(session.height, session.width), mode="bilinear",
                               align_corners=False)[0, 0]
            arr = up.cpu().numpy()
            if not (arr > 0).any():
                continue
            masks[oid], out_scores[oid] = arr > 0, float(scores[oid])
            if self.keep_logits:
                logits[oid] = arr
        return _labelled(session, FrameResult(frame=t, masks=masks, scores=out_scores,
                                              logits=logits if self.keep_logits else None))

    def _result(self, session: TrackingSession, t: int, entries: dict) -> FrameResult:
        masks, scores, logits = {}, {}, {}
        for oid, e in entries.items():
            if e is None or e.low_res is None:
                continue
            up = F.interpolate(e.low_res, size=(session.height, session.width), mode="bilinear",
                               align_corners=False)[0, 0]
            arr = up.float().cpu().numpy()
            masks[oid] = arr > 0
            scores[oid] = float(e.object_score.reshape(-1)[0])
            if self.keep_logits:
                logits[oid] = arr
        return _labelled(session, FrameResult(frame=t, masks=masks, scores=scores,
                                              logits=logits if self.keep_logits else None))


def _hide(item: Tuple[int, FrameResult], removed: set) -> Tuple[int, FrameResult]:
    """Leave the objects in ``removed`` out of a held-back result."""
    t, res = item
    for oid in [o for o in res.masks if o in removed]:
        res.masks.pop(oid)
        res.scores.pop(oid, None)
        if res.logits is not None:
            res.logits.pop(oid, None)
        if res.labels is not None:
            res.labels.pop(oid, None)
    return t, res


def _labelled(session: TrackingSession, result: FrameResult) -> FrameResult:
    """``result`` with the labels of its labelled objects (None when the session has none)."""
    if session.labels:
        result.labels = {oid: session.labels[oid] for oid in result.masks if oid in session.labels}
    return result
