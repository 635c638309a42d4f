"""``ServerConfig`` (every limit of ``samkit serve`` in one place) and ``ServerState`` (what the
routes share: the data folder, the engines, the queue, the stores)."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import InputError

ENV_TOKEN = "SAMKIT_TOKEN"
ENV_WEB_ASSETS = "SAMKIT_WEB_ASSETS"
LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    """Limits and switches. Sizes in bytes, times in seconds."""

    data: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: Optional[str] = None
    max_upload_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000  # the image loader's limit on this server (decompression bombs beyond)
    queue_size: int = 8
    timeout_s: float = 60.0
    cache_bytes: int = 1 << 30
    max_sessions: int = 4
    session_ttl_s: float = 1800.0
    max_video_frames: int = 10000
    frames_in_memory: int = 64
    web_assets: Optional[Path] = None
    browser_decoder: bool = True  # let the page decode with onnxruntime-web when it can
    fast_decoder: bool = True  # an export folder's fast decoder pair, on the server and in the page
    labelstudio_url: Optional[str] = None  # where /predict may fetch task images from (else /setup's hostname)

    def check(self) -> "ServerConfig":
        """Refuse unsafe or impossible settings (``InputError`` with the fix)."""
        if not is_loopback(self.host) and not self.token:
            raise InputError(f"--host {self.host} is not a loopback address, and a server reachable from other "
                             f"machines needs a token. Fix: pass --token SECRET (or set {ENV_TOKEN}), or keep "
                             "--host 127.0.0.1.")
        if self.token is not None and len(self.token) < 8:
            raise InputError("the token is shorter than 8 characters. Fix: use a long random token, e.g. "
                             "`python -c 'import secrets; print(secrets.token_urlsafe())'`.")
        for name in ("max_upload_bytes", "max_pixels", "queue_size", "cache_bytes", "max_sessions",
                     "max_video_frames", "frames_in_memory"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be at least 1. Fix: pass a positive value.")
        if self.timeout_s <= 0 or self.session_ttl_s <= 0:
            raise InputError("timeouts must be positive. Fix: pass e.g. --timeout 60.")
        if not Path(self.data).is_dir():
            raise InputError(f"the data folder {self.data} does not exist. Fix: create it, or pass --data DIR.")
        if self.labelstudio_url is not None and not str(self.labelstudio_url).startswith(("http://", "https://")):
            raise InputError(f"--labelstudio-url {self.labelstudio_url!r} is not an http(s) address. Fix: pass it "
                             "like http://127.0.0.1:8080 (the address Label Studio's page is served from).")
        return self

    def assets_dir(self) -> Optional[Path]:
        """Where onnxruntime-web's files are: ``web_assets``, ``$SAMKIT_WEB_ASSETS``, or the
        package's ``server/static/vendor/ort`` (filled by ``make web``); None when absent."""
        for cand in (self.web_assets, os.environ.get(ENV_WEB_ASSETS),
                     Path(__file__).resolve().parent / "static" / "vendor" / "ort"):
            if cand and (Path(cand) / "ort.wasm.min.mjs").is_file():
                return Path(cand)
        return None


@dataclass
class ServerState:
    """Everything a route needs (``request.app.state.samkit``)."""

    config: ServerConfig
    data: Any  # paths.DataRoot
    engine: Any  # engine.ImageEngine
    queue: Any  # queue.InferenceQueue
    annotations: Any  # annotations.AnnotationStore
    sessions: Any  # video.SessionStore
    tracker: Any = None  # samkit.VideoTracker, or None when no video model
    video_model_name: Optional[str] = None
    labelstudio: dict = field(default_factory=dict)  # what /setup told us: hostname, access_token
