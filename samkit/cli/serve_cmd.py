"""``samkit serve``: the web annotator and Label Studio ML backend (``samkit.server``).

``COMMAND`` is registered by ``samkit.cli.main`` as the plain command ``samkit serve [OPTIONS]``.
Everything is checked before the model loads: a non-loopback ``--host`` needs ``--token`` (or
``$SAMKIT_TOKEN``), ``--data`` must be a folder, limits must be positive. FastAPI and uvicorn
come with the ``server`` extra (``pip install 'samkit[server]'``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import require
from .common import Command, build_clip, info, is_export_path, resolve_model, typer

EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  samkit serve --data photos/                       (then open http://127.0.0.1:8000/)\n\n"
    "  samkit serve --model mobile_sam-onnx/ --data photos/   (the page decodes clicks itself)\n\n"
    "  SAMKIT_TOKEN=... samkit serve --host 0.0.0.0 --data photos/   (reachable from other machines)\n\n"
    "Label Studio: Settings -> Model -> Connect model, URL http://HOST:8000 (basic auth: any user, the token "
    "as password, when the server has one)."
)


def serve(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model name (`samkit models ls`) or a `samkit "
                                        "export` folder (the page then runs its decoder with onnxruntime-web). "
                                        "Default: first neural model with cached weights, else classic."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Weights file (default: the cache)."),
    data: Path = typer.Option(Path("."), "--data", "-d", help="Folder of images and videos to annotate; "
                              "annotations, uploads and exports are written inside it (nothing outside)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. Anything but loopback needs --token."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
    token: Optional[str] = typer.Option(None, "--token", help="Token every request must carry (default "
                                        "$SAMKIT_TOKEN). Required off loopback."),
    video_model: Optional[str] = typer.Option(None, "--video-model", help="Model for video tracking (a SAM 2-family "
                                              "model or classic). Default: --model when it tracks, else classic."),
    clip: Optional[str] = typer.Option(None, "--clip", help="CLIP for text prompts (e.g. clip_vit_b16); off by "
                                       "default."),
    max_upload: int = typer.Option(50, "--max-upload", help="Largest upload / request body, in MB."),
    queue: int = typer.Option(8, "--queue", help="Inference jobs that may wait; more get HTTP 429."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds a request waits for the model (then 504)."),
    cache_mb: int = typer.Option(1024, "--cache-mb", help="Embedding cache cap, in MB."),
    max_sessions: int = typer.Option(4, "--max-sessions", help="Open video sessions at most (LRU beyond)."),
    browser_decoder: bool = typer.Option(True, "--browser-decoder/--no-browser-decoder", help="Let the page run "
                                         "the exported decoder itself (onnxruntime-web); off: every click decodes on "
                                         "the server."),
    labelstudio_url: Optional[str] = typer.Option(None, "--labelstudio-url", help="Label Studio's address (e.g. "
                                                  "http://127.0.0.1:8080): task images under /data/upload/ are "
                                                  "fetched only from there. Default: the hostname Label Studio "
                                                  "sends in /setup."),
    fast_decoder: bool = typer.Option(True, "--fast-decoder/--no-fast-decoder", help="With an export folder: "
                                      "decode clicks with its fast decoder pair (same masks, about half the work), "
                                      "on the server and in the page; off: the reference decoder."),
    device: str = typer.Option("cpu", "--device", help="torch device: cpu, cuda, mps."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
) -> None:
    """Serve the browser annotator (images and videos) and a Label Studio ML backend."""
    from ..server.config import ENV_TOKEN, ServerConfig

    token = token or os.environ.get(ENV_TOKEN) or None
    config = ServerConfig(data=data.expanduser(), host=host, port=port, token=token,
                          max_upload_bytes=max_upload * 1024 * 1024, queue_size=queue, timeout_s=timeout,
                          cache_bytes=cache_mb * 1024 * 1024, max_sessions=max_sessions,
                          browser_decoder=browser_decoder, labelstudio_url=labelstudio_url,
                          fast_decoder=fast_decoder).check()
    require("fastapi", "server", "samkit serve")
    uvicorn = require("uvicorn", "server", "samkit serve")
    app = build_server(config, model, checkpoint, video_model, clip, device, offline)
    info(f"samkit serve: http://{host}:{port}/  (data: {config.data.resolve()})")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=5)


def build_server(config, model: Optional[str], checkpoint, video_model: Optional[str], clip: Optional[str],
                 device: str = "cpu", offline: bool = False):
    """Load the models and return the ASGI app (``samkit.server.create_app``)."""
    from ..server import create_app

    export = Path(model).expanduser() if is_export_path(model) else None
    if export is not None:
        from ..runtime import OnnxImagePredictor

        predictor = OnnxImagePredictor(export, fast=getattr(config, "fast_decoder", True))
        name, folder, net = predictor.model_name, predictor.export, None
    else:
        from ..predict.image import ImagePredictor
        from ..registry import load_model

        name = resolve_model(model, checkpoint)
        net = load_model(name, checkpoint=checkpoint, device=device, download=not offline)
        dense = build_clip(clip, None, device, offline) if clip else None
        predictor, folder = ImagePredictor(net, clip=dense), None
    tracker, vname = _tracker(video_model, net, name, device, offline)
    return create_app(config, predictor, name, export_folder=folder, tracker=tracker, video_model_name=vname)


def _tracker(video_model: Optional[str], net, name: str, device: str, offline: bool):
    from ..registry import load_model
    from ..video import VideoTracker

    if video_model is None and net is not None and getattr(net, "memory_config", None) is not None:
        return VideoTracker(net), name
    vname = video_model or "classic"
    return VideoTracker(load_model(vname, device=device, download=not offline)), vname


COMMAND = serve
COMMAND_CLS = Command
NO_ARGS_IS_HELP = False  # `samkit serve` alone serves the current folder on loopback
