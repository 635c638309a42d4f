"""samkit.hub against a real HTTP server on 127.0.0.1 (Range, interruptions, hashes, offline)."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

import _tiny_models as tiny
from samkit import hub, specs
from samkit.cli.main import main as cli_main
from samkit.errors import DownloadError


# ----------------------------------------------------------------------------- test server
class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, payload: bytes):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = payload
        self.requests = []  # (path, Range header or None)
        self.cut_first = None  # close the connection after this many bytes, first request only
        self.ignore_range = False
        self.no_length = False  # send no Content-Length; the body ends when the connection closes
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/weights.pt"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            first = not srv.requests
            srv.requests.append((self.path, rng))
        if self.path == "/login":  # what a moved or private link often answers
            body = b"<!DOCTYPE html><html><body>Sign in</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path != "/weights.pt":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, start = srv.payload, 0
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if srv.no_length:
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if first and srv.cut_first is not None:
            self.wfile.write(body[: srv.cut_first])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


def _payload() -> bytes:
    """A real torch.save of a few tensors (about 80 kB)."""
    buf = io.BytesIO()
    gen = torch.Generator().manual_seed(0)
    torch.save({"model": {"a": torch.randn(100, 100, generator=gen), "b": torch.arange(1000)}}, buf)
    return buf.getvalue()


@pytest.fixture()
def server():
    srv = _Server(_payload())
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "SAMKIT_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fast(**kw):
    return dict(timeout=5.0, retries=kw.pop("retries", 2), backoff=0.01, **kw)


# ----------------------------------------------------------------------------- cache layout
def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("SAMKIT_HOME")
    assert hub.cache_dir() == tmp_path / "xdg" / "samkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hub.cache_dir() == Path.home() / ".cache" / "samkit"


def test_cached_path_requires_a_complete_file(monkeypatch, tmp_path):
    monkeypatch.setitem(specs.MODELS, "tiny_hub", tiny.spec("tiny_hub"))
    assert hub.cached_path("tiny_hub") is None
    dest = hub.cache_dir() / "tiny_hub.pt"
    dest.parent.mkdir(parents=True)
    dest.with_name("tiny_hub.pt.part").write_bytes(b"x" * 10)  # an unfinished transfer
    assert hub.cached_path("tiny_hub") is None
    dest.write_bytes(b"")  # empty: a failed copy
    assert hub.cached_path("tiny_hub") is None
    dest.write_bytes(b"data")
    assert hub.cached_path("tiny_hub") == dest


# ----------------------------------------------------------------------------- download
def test_full_download_with_hash(server, tmp_path):
    dest = tmp_path / "d" / "w.pt"
    seen = []
    out = hub.download(server.url, dest, sha256=_sha(server.payload),
                       progress=lambda done, total: seen.append((done, total)), **_fast())
    assert out == dest and dest.read_bytes() == server.payload
    assert not dest.with_name("w.pt.part").exists()
    assert seen[-1] == (len(server.payload), len(server.payload))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert server.requests == [("/weights.pt", None)]
    state = torch.load(dest, weights_only=True)
    assert state["model"]["b"].tolist() == list(range(1000))


def test_interrupted_then_resumed_with_range(server, tmp_path):
    server.cut_first = 30_000
    dest = tmp_path / "w.pt"
    hub.download(server.url, dest, sha256=_sha(server.payload), **_fast())
    assert dest.read_bytes() == server.payload
    assert len(server.requests) == 2
    assert server.requests[0][1] is None
    assert server.requests[1][1] == "bytes=30000-"


def test_failed_transfer_keeps_part_and_next_call_resumes(server, tmp_path):
    server.cut_first = 12_345
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError) as err:
        hub.download(server.url, dest, sha256=_sha(server.payload), **_fast(retries=0))
    part = dest.with_name("w.pt.part")
    assert "resumes" in str(err.value) and str(part) in str(err.value)
    assert part.stat().st_size == 12_345 and not dest.exists()
    hub.download(server.url, dest, sha256=_sha(server.payload), **_fast(retries=0))
    assert dest.read_bytes() == server.payload
    assert server.requests[1][1] == "bytes=12345-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.cut_first = 20_000
    server.ignore_range = True
    dest = tmp_path / "w.pt"
    hub.download(server.url, dest, sha256=_sha(server.payload), **_fast())
    assert dest.read_bytes() == server.payload  # not the first 20 kB twice
    assert server.requests[1][1] == "bytes=20000-"  # it asked, the server sent 200


def test_stale_part_is_replaced_when_server_ignores_range(server, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "w.pt"
    dest.with_name("w.pt.part").write_bytes(b"garbage" * 1000)
    hub.download(server.url, dest, sha256=_sha(server.payload), **_fast())
    assert dest.read_bytes() == server.payload


def test_complete_part_is_verified_without_refetching(server, tmp_path):
    dest = tmp_path / "w.pt"
    dest.with_name("w.pt.part").write_bytes(server.payload)
    hub.download(server.url, dest, sha256=_sha(server.payload), **_fast())
    assert dest.read_bytes() == server.payload
    assert server.requests == [("/weights.pt", f"bytes={len(server.payload)}-")]


def test_overlong_part_restarts(server, tmp_path):
    dest = tmp_path / "w.pt"
    dest.with_name("w.pt.part").write_bytes(server.payload + b"tail")  # 416 with another size
    hub.download(server.url, dest, sha256=_sha(server.payload), **_fast())
    assert dest.read_bytes() == server.payload
    assert [r for _, r in server.requests] == [f"bytes={len(server.payload) + 4}-", None]


def test_wrong_hash_deletes_everything(server, tmp_path):
    dest = tmp_path / "w.pt"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as err:
        hub.download(server.url, dest, sha256=wrong, **_fast())
    msg = str(err.value)
    assert wrong in msg and _sha(server.payload) in msg and "Fix" in msg
    assert not dest.exists() and not dest.with_name("w.pt.part").exists()


def test_prefix_digests(server, tmp_path):
    md5 = hashlib.md5(server.payload).hexdigest()
    git = hashlib.sha1(b"blob %d\0" % len(server.payload) + server.payload).hexdigest()
    dest = tmp_path / "ok.pt"
    hub.download(server.url, dest, sha256_prefix=_sha(server.payload)[:6], md5_prefix=md5[:6],
                 git_blob_sha1=git, **_fast())
    assert dest.read_bytes() == server.payload
    bad = "000000" if not md5.startswith("000000") else "ffffff"
    with pytest.raises(DownloadError, match=f"md5 prefix: expected {bad}, got {md5[:6]}"):
        hub.download(server.url, tmp_path / "bad.pt", md5_prefix=bad, **_fast())
    assert not (tmp_path / "bad.pt").exists()


def test_404_names_url_and_fix(server, tmp_path):
    url = server.url.replace("weights.pt", "missing.pt")
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError) as err:
        hub.download(url, dest, **_fast())
    assert url in str(err.value) and "404" in str(err.value) and str(dest) in str(err.value)
    assert len(server.requests) == 1  # a 404 is not retried
    assert not dest.exists()


def test_html_page_is_not_saved(server, tmp_path):
    url = server.url.replace("weights.pt", "login")
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError, match="web page"):
        hub.download(url, dest, **_fast())
    assert not dest.exists() and not dest.with_name("w.pt.part").exists()
    assert len(server.requests) == 1


def test_connection_refused_is_clear(tmp_path):
    srv = _Server(b"")
    port = srv.server_address[1]
    srv.server_close()  # nothing listens on this port any more
    dest = tmp_path / "w.pt"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as err:
        hub.download(f"http://127.0.0.1:{port}/x.pt", dest, timeout=2.0, retries=1, backoff=0.01)
    assert time.monotonic() - t0 < 30
    msg = str(err.value)
    assert "cannot connect" in msg and "2 attempt" in msg and "network" in msg
    assert not dest.exists()


def test_no_partial_file_at_final_path(server, tmp_path):
    server.cut_first = 10_000
    dest = tmp_path / "w.pt"
    states = []
    hub.download(server.url, dest, sha256=_sha(server.payload),
                 progress=lambda done, total: states.append(dest.exists()), **_fast())
    assert len(states) > 2 and not any(states)
    assert dest.read_bytes() == server.payload


# ----------------------------------------------------------------------------- resolve / offline
def _register(monkeypatch, server, **kw):
    spec = tiny.spec("tiny_hub", url=server.url, filename="tiny_hub.pt", **kw)
    monkeypatch.setitem(specs.MODELS, "tiny_hub", spec)
    return spec


@pytest.mark.parametrize("env", ["SAMKIT_OFFLINE", "HF_HUB_OFFLINE", None])
def test_offline_missing_fails_fast_with_path_and_url(server, monkeypatch, env):
    spec = _register(monkeypatch, server)
    if env:
        monkeypatch.setenv(env, "1")
    with pytest.raises(DownloadError) as err:
        hub.resolve("tiny_hub", offline=True if env is None else None)
    msg = str(err.value)
    assert str(hub.cache_dir() / "tiny_hub.pt") in msg and spec.url in msg
    assert server.requests == []  # never touched the network


def test_offline_returns_cached_file(server, monkeypatch):
    _register(monkeypatch, server)
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    dest = hub.cache_dir() / "tiny_hub.pt"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(server.payload)
    assert hub.resolve("tiny_hub") == dest
    assert server.requests == []


def test_resolve_downloads_verifies_then_uses_cache(server, monkeypatch):
    _register(monkeypatch, server, sha256=_sha(server.payload))
    path = hub.resolve("tiny_hub")
    assert path == hub.cache_dir() / "tiny_hub.pt" and path.read_bytes() == server.payload
    assert hub.resolve("tiny_hub") == path
    assert len(server.requests) == 1
    assert hub.verify(path, "tiny_hub") is True


def test_verify(tmp_path, monkeypatch):
    data = b"weights"
    path = tmp_path / "f.pt"
    path.write_bytes(data)
    monkeypatch.setitem(specs.MODELS, "t_none", tiny.spec("t_none"))
    monkeypatch.setitem(specs.MODELS, "t_ok", tiny.spec("t_ok", sha256=_sha(data)))
    monkeypatch.setitem(specs.MODELS, "t_bad", tiny.spec("t_bad", extra={"md5_prefix": "abcdef"}))
    assert hub.sha256_file(path) == _sha(data)
    assert hub.verify(path, "t_none") is False
    assert hub.verify(path, "t_ok") is True
    with pytest.raises(DownloadError, match="md5 prefix: expected abcdef"):
        hub.verify(path, "t_bad")


def test_verify_checks_full_md5_and_size(tmp_path, monkeypatch):
    data = b"weights"
    path = tmp_path / "f.pt"
    path.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    monkeypatch.setitem(specs.MODELS, "t_md5", tiny.spec("t_md5", extra={"md5": md5, "md5_prefix": md5[:6]}))
    monkeypatch.setitem(specs.MODELS, "t_size", tiny.spec("t_size", extra={"size": len(data)}))
    monkeypatch.setitem(specs.MODELS, "t_long", tiny.spec("t_long", sha256=_sha(data), extra={"size": 99}))
    assert hub.verify(path, "t_md5") is True
    assert hub.verify(path, "t_size") is False  # size alone rules files out, it does not verify
    with pytest.raises(DownloadError, match="size: expected 99 bytes, got 7"):
        hub.verify(path, "t_long")


def test_random_bytes_fail_every_pinned_official_digest(tmp_path):
    """Random bytes under an official name never pass `verify` (before: 18 of 24 files passed)."""
    path = tmp_path / "random.bin"
    path.write_bytes(os.urandom(4096))
    for name, spec in specs.MODELS.items():
        if spec.neural and name not in hub.NO_PUBLIC_DIGEST:
            with pytest.raises(DownloadError, match="not the official"):
                hub.verify(path, spec)


def _cli(capsys, *args):
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_passes_a_file_matching_the_pinned_digest(capsys, tmp_path, monkeypatch):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    path.write_bytes(b"pretend official weights")
    pinned = dataclasses.replace(specs.MODELS["sam2.1_hiera_t"], sha256=_sha(path.read_bytes()),
                                 extra={"size": path.stat().st_size})
    monkeypatch.setitem(specs.MODELS, "sam2.1_hiera_t", pinned)
    rc, out, err = _cli(capsys, "models", "verify", "sam2.1_hiera_t", "--path", path, "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["verified"] is True and doc["status"] == "verified" and doc["digest"] == "sha256"


def test_cli_verify_fails_random_bytes_with_a_pinned_digest(capsys, tmp_path, monkeypatch):
    path = tmp_path / "edgetam.pt"
    path.write_bytes(os.urandom(1000))
    rc, _, err = _cli(capsys, "models", "verify", "edgetam", "--path", path)  # the real pins: size first
    assert rc == 4 and "size: expected 56116523 bytes" in err and "Fix" in err
    no_size = dataclasses.replace(specs.MODELS["edgetam"], extra={})  # sha256 only: hashes are compared
    monkeypatch.setitem(specs.MODELS, "edgetam", no_size)
    rc, _, err = _cli(capsys, "models", "verify", "edgetam", "--path", path)
    assert rc == 4 and f"sha256: expected {no_size.sha256}, got {_sha(path.read_bytes())}" in err


def test_cli_verify_says_unverified_without_a_full_digest(capsys, tmp_path, monkeypatch):
    path = tmp_path / "efficient_sam_vits.pt.zip"
    path.write_bytes(b"some zip")
    weak = dataclasses.replace(specs.MODELS["efficient_sam_vits"], sha256=None,
                               extra={"size": path.stat().st_size})
    monkeypatch.setitem(specs.MODELS, "efficient_sam_vits", weak)
    assert hub.digest_kind("efficient_sam_vits") == "size-only"
    rc, out, err = _cli(capsys, "models", "verify", "efficient_sam_vits", "--path", path)
    assert rc == 4 and "unverified" in err and "--allow-unverified" in err and "Fix" in err
    rc, out, err = _cli(capsys, "models", "verify", "efficient_sam_vits", "--path", path,
                        "--allow-unverified", "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["verified"] is False and doc["status"] == "unverified" and "unverified" in doc["message"]
    monkeypatch.setitem(specs.MODELS, "efficient_sam_vits", dataclasses.replace(weak, extra={}))
    assert hub.digest_kind("efficient_sam_vits") == "none"
    rc, _, err = _cli(capsys, "models", "verify", "efficient_sam_vits", "--path", path)
    assert rc == 4 and "unverified" in err and "checked: nothing" in err


def test_cli_download_says_when_the_file_could_not_be_verified(capsys, server, monkeypatch):
    weak = tiny.spec("tiny_weak", url=server.url, filename="tiny_weak.pt", extra={"size": len(server.payload)})
    monkeypatch.setitem(specs.MODELS, "tiny_weak", weak)
    rc, out, err = _cli(capsys, "models", "download", "tiny_weak", "--format", "json")
    assert rc == 0, err
    assert "could not be verified" in err and json.loads(out)["verified"] is False
    pinned = tiny.spec("tiny_pinned", url=server.url, filename="tiny_pinned.pt", sha256=_sha(server.payload))
    monkeypatch.setitem(specs.MODELS, "tiny_pinned", pinned)
    rc, out, err = _cli(capsys, "models", "download", "tiny_pinned", "--format", "json")
    assert rc == 0 and "sha256 verified" in err and json.loads(out)["verified"] is True


def test_cli_download_fetches_the_files_a_model_is_made_of(capsys, server, monkeypatch):
    """A model made of several files (extra["requires"], e.g. Open-Vocabulary SAM) downloads
    them all; a companion already in the cache is not fetched again."""
    part = tiny.spec("tiny_part", url=server.url, filename="tiny_part.pt", sha256=_sha(server.payload))
    whole = tiny.spec("tiny_whole", url=server.url, filename="tiny_whole.pt", sha256=_sha(server.payload),
                      extra={"requires": [("tiny_part", "", "part.")]})
    monkeypatch.setitem(specs.MODELS, "tiny_part", part)
    monkeypatch.setitem(specs.MODELS, "tiny_whole", whole)
    rc, out, err = _cli(capsys, "models", "download", "tiny_whole", "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["verified"] is True and [r["name"] for r in doc["requires"]] == ["tiny_part"]
    assert doc["requires"][0]["verified"] is True and hub.cached_path(part) is not None
    n = len(server.requests)
    rc, out, err = _cli(capsys, "models", "download", "tiny_whole", "--format", "json")
    assert rc == 0 and len(server.requests) == n and "already in the cache" in err


def test_cli_ls_and_info_show_the_verification_status(capsys):
    rc, out, _ = _cli(capsys, "models", "ls", "--format", "json")
    by = {m["name"]: m for m in json.loads(out)["models"]}
    assert by["sam_vit_h"]["digest"] == "sha256" and by["sam_vit_h"]["size"] == 2564550879
    assert by["efficient_sam_vits"]["digest"] == "git-blob" and by["classic"]["digest"] == "-"
    rc, out, _ = _cli(capsys, "models", "ls")
    assert rc == 0 and "digest" in out and "git-blob" in out
    rc, out, _ = _cli(capsys, "models", "info", "sam2.1_hiera_t")
    text = " ".join(out.split())
    assert rc == 0 and "full digest pinned" in text and "156008466 bytes" in text and "micro-sam" in text


def test_download_refuses_a_file_of_another_size(server, tmp_path):
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError, match=f"announces {len(server.payload)} bytes.*official file has 1000"):
        hub.download(server.url, dest, size=1000, **_fast())
    assert not dest.exists() and not dest.with_name("w.pt.part").exists()
    assert len(server.requests) == 1  # refused on the announced size, not retried
    hub.download(server.url, dest, size=len(server.payload), sha256=_sha(server.payload), **_fast())
    assert dest.read_bytes() == server.payload


def test_download_stops_a_stream_longer_than_the_official_size(server, tmp_path):
    server.no_length = True
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError, match="sent more than 1000 bytes"):
        hub.download(server.url, dest, size=1000, **_fast())
    assert not dest.exists() and not dest.with_name("w.pt.part").exists()


def test_every_neural_model_has_a_full_public_digest_or_is_listed():
    """Adding a model without a digest is a conscious act: list it in hub.NO_PUBLIC_DIGEST."""
    missing = [name for name, spec in specs.MODELS.items()
               if spec.neural and not (spec.sha256 or spec.extra.get("git_blob_sha1"))
               and name not in hub.NO_PUBLIC_DIGEST]
    assert missing == []
    assert set(hub.NO_PUBLIC_DIGEST) <= set(specs.MODELS)
    for name, spec in specs.MODELS.items():
        if spec.neural:
            assert spec.digest_source, name  # every pin names its public source
            assert hub.digest_kind(spec) in ("sha256", "git-blob") or name in hub.NO_PUBLIC_DIGEST


def test_registered_digests_are_well_formed():
    hexchars = set("0123456789abcdef")
    for spec in specs.MODELS.values():
        for value, length in ((spec.sha256, 64), (spec.extra.get("git_blob_sha1"), 40),
                              (spec.extra.get("md5"), 32)):
            assert value is None or (len(value) == length and set(value) <= hexchars), spec.name
        size = spec.extra.get("size")
        assert size is None or (isinstance(size, int) and size > 1_000_000), spec.name
        prefix = spec.extra.get("md5_prefix")
        if prefix:  # SAM encodes the md5 prefix in the file name (sam_vit_b_01ec64.pth)
            assert spec.filename.endswith(f"_{prefix}.pth"), spec.name
            assert spec.extra["md5"].startswith(prefix), spec.name  # the public md5 agrees
        if spec.neural:
            assert spec.url and spec.url.startswith("https://") and spec.url.endswith(spec.filename)
    assert len({s.sha256 for s in specs.MODELS.values() if s.sha256}) == sum(
        1 for s in specs.MODELS.values() if s.sha256)  # no digest pasted twice
