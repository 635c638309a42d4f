"""Helpers of the ``samkit serve`` tests: an app on a temporary data folder, reached through
FastAPI's TestClient as http://127.0.0.1 (the server answers loopback hosts only without a token)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

LOOPBACK = "http://127.0.0.1:8000"


def data_folder(root: Path) -> Path:
    """DATA with the truck photo, a small PNG in a sub-folder and a folder of 4 video frames."""
    from samkit.io.image import example_image_path

    data = root / "data"
    (data / "sub").mkdir(parents=True)
    shutil.copy(example_image_path(), data / "truck.png")
    img = np.full((48, 64, 3), 90, np.uint8)
    img[10:30, 20:44] = (230, 40, 40)
    Image.fromarray(img).save(data / "sub" / "square.png")
    frames = data / "clip"
    frames.mkdir()
    for t in range(4):
        f = np.full((48, 64, 3), 60, np.uint8)
        f[12:32, 10 + 4 * t:30 + 4 * t] = (240, 240, 40)
        Image.fromarray(f).save(frames / f"{t:05d}.png")
    return data


def make_app(data: Path, predictor=None, name: str = "classic", tracker=None, **limits):
    """(app, state) with ``predictor`` (default classic) and a classic tracker."""
    from samkit import load_model
    from samkit.predict.image import ImagePredictor
    from samkit.server import create_app
    from samkit.server.config import ServerConfig
    from samkit.video import VideoTracker

    classic = load_model("classic")
    predictor = predictor or ImagePredictor(classic)
    tracker = tracker or VideoTracker(classic)
    app = create_app(ServerConfig(data=data, **limits), predictor, name, tracker=tracker,
                     video_model_name="classic")
    return app, app.state


def client(app, **kw):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=kw.pop("base_url", LOOPBACK), raise_server_exceptions=False, **kw)


def files_under(root: Path) -> set:
    return {p.relative_to(root).as_posix() for p in Path(root).rglob("*")}
