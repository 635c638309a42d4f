"""Video routes of ``samkit serve`` (bounded sessions: ``video.SessionStore``).

* ``POST   /api/video/sessions {path}``                      open a video file or frame folder of ``--data``
  -> ``{id, path, num_frames, width, height, objects, frames_with_results}``;
* ``GET    /api/video/sessions``                             the open sessions;
* ``GET    /api/video/sessions/{id}/frames/{t}``             frame ``t`` as JPEG;
* ``GET    /api/video/sessions/{id}/results/{t}``            the objects on frame ``t``;
* ``POST   /api/video/sessions/{id}/prompt {frame, obj_id, points, labels, box, label}``
  -> ``{frame, objects: [{id, label, rle, score}]}`` (the masks on that frame; the video's
  annotation document, with the prompts, is saved at once; a session opened later on the same
  video gives the saved prompts to its tracker again, so the objects are tracked on after a reload);
* ``POST   /api/video/sessions/{id}/propagate {start, reverse, max_frames}``: NDJSON, one line
  ``{"frame": t, "objects": [...], "done": k, "total": n}`` per frame, then ``{"end": true,
  "frames": k, "saved": path}`` (or ``{"error": ...}``); the results are saved atomically as the
  video's annotation document when the propagation ends;
* ``DELETE /api/video/sessions/{id}``.

Every tracker call runs on the inference queue (one frame per job, so image requests are
served between frames).
"""

import json

from ..errors import InputError
from .requests import read_json
from .errors import HTTPProblem
from .paths import IMAGE_EXTS, VIDEO_EXTS


def _need_tracker(state):
    if state.tracker is None:
        raise HTTPProblem(501, "this server has no video model. Fix: start `samkit serve --video-model NAME` "
                               "(a SAM 2-family model, or classic).")
    return state.tracker


def _open(state, rel: str):
    real = state.data.resolve(rel, kind="new")
    if not real.exists():
        raise HTTPProblem(404, f"no video or frame folder {rel!r} in the data folder. Fix: pick one listed by "
                               "/api/files.")
    if real.is_dir():
        if not any(f.suffix.lower() in IMAGE_EXTS for f in real.iterdir()):
            raise InputError(f"the folder {rel!r} holds no image frames. Fix: pick a folder of JPEG/PNG frames.")
    elif real.suffix.lower() not in VIDEO_EXTS:
        raise InputError(f"{rel!r} is not a video ({', '.join(VIDEO_EXTS)}) or frame folder. Fix: pick one.")
    return state.tracker.start(real)


def install(app, state) -> None:
    from fastapi import Request
    from fastapi.responses import Response, StreamingResponse

    store, queue = state.sessions, state.queue

    @app.post("/api/video/sessions")
    async def open_session(request: Request):
        _need_tracker(state)
        body = await read_json(request)
        rel = body.get("path")
        if not isinstance(rel, str) or not rel:
            raise InputError("'path' is missing. Fix: send a video or frame folder relative to the data folder.")
        tracking = await queue.run(_open, state, rel)
        session = store.add(rel, tracking)
        saved = state.annotations.load_video(rel)
        if saved and (saved.get("width"), saved.get("height")) == (session.width, session.height):
            session.restore(saved)  # a new session starts from what was saved (nothing is lost on a reload)
            await queue.run(session.replay, state.tracker)  # and its tracker from the saved prompts
        return session.info()

    @app.get("/api/video/sessions")
    async def sessions():
        return {"sessions": store.list(), **store.snapshot()}

    @app.get("/api/video/sessions/{sid}/frames/{t}")
    async def frame(sid: str, t: int):
        session = store.get(sid)
        data = await queue.run(store.frame_jpeg, session, t)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=600"})

    @app.get("/api/video/sessions/{sid}/results/{t}")
    async def results(sid: str, t: int):
        return {"frame": t, "objects": store.get(sid).frame_objects(t)}

    @app.post("/api/video/sessions/{sid}/prompt")
    async def prompt(sid: str, request: Request):
        tracker = _need_tracker(state)
        session = store.get(sid)
        body = await read_json(request)
        frame_t, oid = body.get("frame", 0), body.get("obj_id", 1)
        label = body.get("label")
        if label is not None and (not isinstance(label, str) or len(label) > 200):
            raise InputError("'label' must be a string of at most 200 characters. Fix: name the object.")
        points = body.get("points") or None
        labels = body.get("labels") if points else None
        if points and labels is None:
            labels = [1] * len(points)

        def work():
            res = tracker.add_prompt(session.tracking, frame_t, oid, points=points, labels=labels,
                                     box=body.get("box"))
            session.keep_prompt(frame_t, oid, points, labels, body.get("box"))
            if label:
                session.labels[int(oid)] = label
            session.labels.setdefault(int(oid), f"object {int(oid)}")
            objects = session.store_result(frame_t, res)
            state.annotations.save_video(session.path, session.width, session.height, session.num_frames,
                                         session.document_frames(), session.document_prompts())  # as the user works
            return objects

        return {"frame": frame_t, "objects": await queue.run(work)}

    @app.post("/api/video/sessions/{sid}/propagate")
    async def propagate(sid: str, request: Request):
        tracker = _need_tracker(state)
        session = store.get(sid)
        body = await read_json(request)
        reverse = bool(body.get("reverse", False))
        start, limit = body.get("start"), body.get("max_frames")
        for name, v in (("start", start), ("max_frames", limit)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise InputError(f"'{name}' must be a non-negative integer. Fix: e.g. 0.")
        if session.busy:
            raise HTTPProblem(409, "this session is already propagating. Fix: wait for it to finish.")
        gen = await queue.run(tracker.propagate, session.tracking, start, reverse, limit)
        session.busy = True
        return StreamingResponse(_stream(state, session, gen), media_type="application/x-ndjson")

    @app.delete("/api/video/sessions/{sid}")
    async def close(sid: str):
        store.close(sid)
        return {"closed": sid}


async def _stream(state, session, gen):
    """NDJSON lines of a propagation; each frame is one job of the queue (``wait=True``)."""
    done, total = 0, session.num_frames

    def step():
        try:
            t, res = next(gen)
        except StopIteration:
            return None
        return t, session.store_result(t, res)

    try:
        while True:
            item = await state.queue.run(step, wait=True)
            if item is None:
                break
            done += 1
            yield json.dumps({"frame": item[0], "objects": item[1], "done": done, "total": total}) + "\n"
        doc = state.annotations.save_video(session.path, session.width, session.height, session.num_frames,
                                           session.document_frames(), session.document_prompts())
        yield json.dumps({"end": True, "frames": done, "revision": doc["revision"]}) + "\n"
    except Exception as exc:  # noqa: BLE001 - the stream has started: report the error as its last line
        from .errors import message_of, status_of

        yield json.dumps({"error": message_of(exc), "status": status_of(exc) or 500}) + "\n"
    finally:
        session.busy = False
