"""The FastAPI application of ``samkit serve``: ``create_app(config, predictor, ...)``.

Routes (JSON in and out unless said; every error is ``{"error": MESSAGE, "status": CODE}``):

* ``GET /`` the annotator page, ``/static/*`` its files, ``/vendor/ort/*`` onnxruntime-web;
* ``GET /api/health``, ``GET /api/files?path=DIR``, ``PUT /api/upload?name=NAME`` (raw bytes);
* images (``routes_image``): ``/api/image/*``, ``/api/annotations``, ``/api/export``;
* videos (``routes_video``): ``/api/video/sessions/*``;
* Label Studio ML backend (``labelstudio``): ``/health``, ``/setup``, ``/predict``, ``/webhook``.

Paths named by clients are relative to ``--data`` (``paths.DataRoot``); ``@example/truck.png``
names the example image shipped with samkit (read-only; its annotations live in ``--data``).
"""

import contextlib
import hashlib
import logging
import re
import uuid
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError, SamkitError, require
from ..io.atomic import atomic_write_bytes
from ..io.image import load_image
from .annotations import AnnotationStore
from .config import ServerConfig, ServerState
from .engine import ImageEngine
from .errors import HTTPProblem, message_of, status_of
from .middleware import Guard
from .paths import IMAGE_EXTS, DataRoot, check_relative
from .queue import InferenceQueue
from .requests import EXAMPLE_PREFIX, EXAMPLES, resolve_image
from .video import SessionStore

log = logging.getLogger("samkit.server")
STATIC = Path(__file__).resolve().parent / "static"
UPLOAD_DIR = "uploads"
EXPORT_PREFIX = "exports/"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def json_error(status: int, message: str, headers: Optional[dict] = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers or {})


def _install_errors(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(HTTPProblem)
    async def _problem(_request, exc: HTTPProblem):
        return json_error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, exc):
        text = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            text = "no such route. Fix: see the routes listed in samkit/server/app.py (GET /api/health works)."
        elif exc.status_code == 405:
            text = "this route does not take that HTTP method. Fix: check GET / POST / PUT."
        return json_error(exc.status_code, text)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return json_error(400, f"invalid request: {where}: {first.get('msg', 'bad value')}. Fix: send the "
                               "documented JSON fields.")

    async def _known(_request, exc: Exception):
        return json_error(status_of(exc) or 500, message_of(exc))

    for kind in (SamkitError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        app.add_exception_handler(kind, _known)

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):  # starlette re-raises it afterwards; the Guard then stays silent
        error_id = uuid.uuid4().hex[:8]
        log.error("internal error %s on %s %s", error_id, request.method, request.url.path,
                  exc_info=(type(exc), exc, exc.__traceback__))
        return json_error(500, f"internal error {error_id} (the server log has the details). Fix: report it with "
                               "the log lines of that id.")


def _base_routes(app, state: ServerState) -> None:
    from fastapi import Request
    from fastapi.responses import FileResponse, HTMLResponse

    @app.get("/", include_in_schema=False)
    async def index():
        page = STATIC / "index.html"
        if not page.is_file():
            raise HTTPProblem(404, "the annotator page is not installed. Fix: reinstall samkit[server].")
        return HTMLResponse(page.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})

    @app.get("/static/{name:path}", include_in_schema=False)
    async def static(name: str):
        return FileResponse(_asset(STATIC, name))

    @app.get("/vendor/ort/{name:path}", include_in_schema=False)
    async def vendor(name: str):
        folder = state.config.assets_dir()
        if folder is None:
            raise HTTPProblem(404, "onnxruntime-web is not installed with this server, so the page decodes on the "
                                   "server. Fix: run `make web` in a samkit checkout (copies it from npm).")
        return FileResponse(_asset(folder, name))

    @app.get("/api/health")
    async def health():
        eng = state.engine
        return {"status": "ok", "model": eng.name, "kind": eng.kind, "browser_decoder": state.config.browser_decoder
                and eng.browser_decoder() is not None and state.config.assets_dir() is not None,
                "text_prompts": eng.supports_text(), "everything": eng.neural and eng.export is None,
                "video_model": state.video_model_name, "queue": state.queue.snapshot(), "cache": eng.stats(),
                "sessions": state.sessions.snapshot(), "examples": [EXAMPLE_PREFIX + n for n in EXAMPLES]}

    @app.get("/api/files")
    async def files(path: str = ""):
        out = state.data.listing(path)
        if not path:
            out["examples"] = [{"path": EXAMPLE_PREFIX + n, "name": n} for n in EXAMPLES]
        return out

    @app.get("/api/download")
    async def download(path: str):
        if not path.startswith(EXPORT_PREFIX):
            raise HTTPProblem(403, "only exported files can be downloaded. Fix: export first (POST /api/export) and "
                                   "download the paths it answers.")
        real = state.data.resolve(path, kind="file")
        return FileResponse(real, filename=real.name)

    @app.put("/api/upload")
    async def upload(request: Request, name: str):
        data = await request.body()
        return await state.queue.run(_store_upload, state, name, data)


def _asset(folder: Path, name: str) -> Path:
    clean = check_relative(name)
    real = (folder / clean).resolve()
    if folder.resolve() not in real.parents or not real.is_file():
        raise HTTPProblem(404, f"no file {name!r}. Fix: reload the page.")
    return real


def _store_upload(state: ServerState, name: str, data: bytes) -> dict:
    """Check ``data`` with samkit's image loader (decompression bombs and broken files refused),
    then write it atomically to ``DATA/uploads/<hash>_<name>``; returns ``{"path", "width", "height"}``."""
    if not data:
        raise InputError("the upload is empty. Fix: send the image file's bytes as the request body.")
    stem = _SAFE_NAME.sub("_", Path(name).name).strip("._")[:100] or "image"
    if Path(stem).suffix.lower() not in IMAGE_EXTS:
        raise InputError(f"{name!r} is not an image name ({', '.join(IMAGE_EXTS)}). Fix: upload a .jpg or .png.")
    image = load_image(data, max_pixels=state.config.max_pixels)
    rel = f"{UPLOAD_DIR}/{hashlib.sha256(data).hexdigest()[:12]}_{stem}"
    target = state.data.resolve(rel, kind="new")
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return {"path": rel, "height": int(image.shape[0]), "width": int(image.shape[1])}


def create_app(config: ServerConfig, predictor: Any, model_name: str, export_folder: Any = None,
               tracker: Any = None, video_model_name: Optional[str] = None):
    """The ASGI app (FastAPI wrapped in the ``Guard``). ``predictor``: ``ImagePredictor`` or
    ``OnnxImagePredictor``; ``tracker``: a ``VideoTracker`` or None (no video routes answer then)."""
    fastapi = require("fastapi", "server", "samkit serve")
    from . import labelstudio, routes_image, routes_video

    config.check()
    data = DataRoot(config.data)
    queue = InferenceQueue(config.queue_size, config.timeout_s)
    engine = ImageEngine(predictor, model_name, config.cache_bytes, config.max_pixels, export_folder)
    state = ServerState(config=config, data=data, engine=engine, queue=queue, annotations=None,
                        sessions=SessionStore(config.max_sessions, config.session_ttl_s, config.max_video_frames,
                                              config.frames_in_memory),
                        tracker=tracker, video_model_name=video_model_name)
    state.annotations = AnnotationStore(data, lambda rel: resolve_image(state, rel))
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        state.sessions.close_all()
        queue.shutdown()

    app = fastapi.FastAPI(title="samkit serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.samkit = state
    _install_errors(app)
    _base_routes(app, state)
    routes_image.install(app, state)
    routes_video.install(app, state)
    labelstudio.install(app, state)

    guarded = Guard(app, config.token, config.max_upload_bytes, loopback_only=True)
    guarded.state = state  # tests and the CLI reach the state through the wrapper
    return guarded
