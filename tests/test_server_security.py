"""``samkit serve`` security: path traversal (``../``, percent-encoded, absolute, symbolic links),
the token off loopback, the Host check on loopback, body and pixel caps, and nothing written
outside ``--data``."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _server import client, data_folder, files_under, make_app  # noqa: E402

from samkit.errors import InputError  # noqa: E402
from samkit.server.config import ServerConfig  # noqa: E402
from samkit.server.paths import DataRoot, check_relative  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_security")
    data = data_folder(root)
    (root / "secret.png").write_bytes((data / "sub" / "square.png").read_bytes())
    (root / "outside").mkdir()
    os.symlink(root / "secret.png", data / "link_out.png")
    os.symlink(root / "outside", data / "dir_out")
    os.symlink(data / "truck.png", data / "link_in.png")
    app, state = make_app(data, max_upload_bytes=200_000, max_pixels=1_000_000)
    with client(app) as c:
        yield c, root, data


TRAVERSALS = ["../secret.png", "sub/../../secret.png", "%2e%2e/secret.png", "%252e%252e%252fsecret.png",
              "..%2fsecret.png", "/etc/passwd", "C:/Windows/win.ini", "sub\\..\\..\\secret.png", "link_out.png",
              "dir_out/x.png", ".samkit/annotations/truck.png.json", "sub/\x00.png"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(served, path):
    c, _, _ = served
    r = c.get("/api/image/file", params={"path": path})
    assert r.status_code in (403, 404), (path, r.status_code)
    assert "Fix:" in r.json()["error"]
    r = c.post("/api/image/decode", json={"path": path, "box": [0, 0, 4, 4]})
    assert r.status_code in (403, 404), path
    r = c.put("/api/annotations", json={"path": path, "revision": 0, "objects": []})
    assert r.status_code in (403, 404), path


def test_raw_encoded_traversal_in_the_url(served):
    c, _, _ = served
    for raw in ("/api/image/file?path=..%2Fsecret.png", "/api/image/file?path=%252e%252e%252fsecret.png",
                "/static/..%2f..%2fapp.py", "/static/%2e%2e/app.py"):
        r = c.get(raw)
        assert r.status_code in (403, 404), raw


def test_links_inside_are_followed_and_listing_hides_links_out(served):
    c, _, _ = served
    assert c.get("/api/image/file", params={"path": "link_in.png"}).status_code == 200
    listing = c.get("/api/files").json()
    names = {i["name"] for i in listing["images"]} | {d["name"] for d in listing["dirs"]}
    assert "link_in.png" in names and "link_out.png" not in names and "dir_out" not in names


def test_check_relative_unit():
    assert str(check_relative("a/./b.png")) == "a/b.png"
    for bad in ("..", "a/..", "%2E%2E", "/x", "a\\b", ".hidden/x", "x" * 2000):
        with pytest.raises(Exception, match="Fix"):
            check_relative(bad)


def test_spellings_of_one_image_share_one_annotation_file(served):
    c, _, data = served
    doc = c.get("/api/annotations", params={"path": "sub//./square.png/"})
    assert doc.status_code == 200
    store_file = data / ".samkit" / "annotations" / "sub" / "square.png.json"
    assert (store_file.is_file() and doc.json()["revision"] > 0) or not store_file.exists()
    from samkit.server.annotations import AnnotationStore

    assert AnnotationStore(DataRoot(data)).file_for("sub//./square.png/") == store_file


def test_new_paths_cannot_leave_the_folder(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    os.symlink(tmp_path, data / "up")
    root = DataRoot(data)
    assert root.resolve("new/deeper/file.json", kind="new") == data.resolve() / "new/deeper/file.json"
    with pytest.raises(Exception, match="out of the data folder"):
        root.resolve("up/evil.json", kind="new")


def test_token_required_off_loopback(tmp_path):
    data = data_folder(tmp_path)
    with pytest.raises(InputError, match="--token"):
        ServerConfig(data=data, host="0.0.0.0").check()
    with pytest.raises(InputError, match="8 characters"):
        ServerConfig(data=data, host="0.0.0.0", token="short").check()
    app, _ = make_app(data, host="0.0.0.0", token="s3cret-token")
    with client(app, base_url="http://192.168.1.20:8000") as c:
        r = c.get("/api/health")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert c.get("/api/health", headers={"Authorization": "Bearer wrong-token!"}).status_code == 401
        assert c.get("/api/health", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert c.get("/api/health", headers={"Authorization": "Token s3cret-token"}).status_code == 200
        assert c.get("/health", auth=("label-studio", "s3cret-token")).status_code == 200
        page = c.get("/", params={"token": "s3cret-token"})
        assert page.status_code == 200 and "samkit_token=s3cret-token" in page.headers["set-cookie"]
        assert "HttpOnly" in page.headers["set-cookie"]
        c.cookies.set("samkit_token", "s3cret-token")
        assert c.get("/api/health").status_code == 200


def test_loopback_server_refuses_foreign_host_header(served):
    c, _, _ = served
    r = c.get("/api/health", headers={"Host": "evil.example:8000"})  # DNS rebinding
    assert r.status_code == 403 and "loopback" in r.json()["error"]
    assert c.get("/api/health", headers={"Host": "localhost:8000"}).status_code == 200


def test_oversized_upload_and_bomb_are_refused(served):
    c, _, data = served
    r = c.put("/api/upload", params={"name": "big.png"}, content=b"\0" * 300_000)
    assert r.status_code == 413 and "--max-upload" in r.json()["error"]

    def chunks():
        for _ in range(30):
            yield b"\0" * 10_000

    r = c.put("/api/upload", params={"name": "big.png"}, content=chunks())  # chunked: no Content-Length
    assert r.status_code == 413
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1200, 1200), np.uint8)).save(buf, format="PNG")  # 1.44 Mpx, 5 kB: over max_pixels
    assert len(buf.getvalue()) < 200_000
    r = c.put("/api/upload", params={"name": "bomb.png"}, content=buf.getvalue())
    assert r.status_code == 413 and "decompression-bomb" in r.json()["error"]
    assert not (data / "uploads").exists() or not any("bomb" in p.name for p in (data / "uploads").iterdir())


def test_nothing_is_written_outside_data(served):
    c, root, data = served
    before = files_under(root)
    c.put("/api/upload", params={"name": "../../escape.png"}, content=(data / "sub" / "square.png").read_bytes())
    c.put("/api/upload", params={"name": "/tmp/abs.png"}, content=(data / "sub" / "square.png").read_bytes())
    r = c.post("/api/image/decode", json={"path": "sub/square.png", "box": [18, 8, 46, 32], "multimask": False})
    rle = r.json()["masks"][0]["rle"]
    for path in ("sub/square.png", "link_in.png", "../secret.png", "link_out.png"):
        c.put("/api/annotations", json={"path": path, "revision": 0, "objects": [{"label": "a", "rle": rle}]})
    for fmt in ("coco", "labelme", "yolo", "png"):
        c.post("/api/export", json={"path": "sub/square.png", "format": fmt})
        c.post("/api/export", json={"folder": "../outside", "format": fmt})
    new = files_under(root) - before
    assert new and all(p.startswith("data/") for p in new), sorted(new)
    assert not any(p.startswith("outside/") or "escape" in p.split("/")[-1] and "uploads" not in p for p in new)


def test_cli_refuses_unsafe_settings_before_loading_a_model(tmp_path, capsys, monkeypatch):
    from samkit.cli.main import main

    monkeypatch.delenv("SAMKIT_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--token" in err and "Fix:" in err
    assert main(["serve", "--data", str(tmp_path / "missing")]) == 2
    assert main(["serve", "--queue", "0", "--data", str(tmp_path)]) == 2
    monkeypatch.setenv("SAMKIT_TOKEN", "x")
    assert main(["serve", "--host", "10.0.0.5", "--data", str(tmp_path)]) == 2  # a token of 1 character
    assert "8 characters" in capsys.readouterr().err


def test_embedding_cache_byte_cap():
    from samkit.server.cache import LRUBytes

    cache = LRUBytes(100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3, 40)  # over the cap: b (least recent) goes
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.put("huge", 4, 101) is False and "huge" not in cache
    assert cache.stats()["bytes"] == 80 and cache.stats()["evictions"] == 1


def test_labelstudio_url_must_be_http(tmp_path, capsys):
    """``--labelstudio-url`` (the only host /predict fetches task images from) is checked before the
    model loads: an address that is not http(s) is refused with the fix."""
    data = data_folder(tmp_path)
    with pytest.raises(InputError, match="not an http"):
        ServerConfig(data=data, labelstudio_url="file:///etc").check()
    assert ServerConfig(data=data, labelstudio_url="http://127.0.0.1:8080").check().labelstudio_url
    pytest.importorskip("typer")
    from samkit.cli.main import main

    assert main(["serve", "--data", str(data), "--labelstudio-url", "ftp://host/"]) == 2
    err = capsys.readouterr().err
    assert "--labelstudio-url" in err and "Fix:" in err and "Traceback" not in err
