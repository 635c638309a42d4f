"""Weights cache and downloads: resumable (HTTP Range), verified, atomic.

The cache lives in ``$SAMKIT_HOME`` or else ``$XDG_CACHE_HOME/samkit`` (``~/.cache/samkit``).
A file is only ever renamed to its final name after its size and digests were checked, so a
file present under its final name is complete. A transfer in progress lives next to it as
``<name>.part``; the next attempt continues it with an HTTP ``Range`` request.

Offline mode (``SAMKIT_OFFLINE=1``, ``HF_HUB_OFFLINE=1`` or ``offline=True``) never touches
the network: a missing file fails at once with the path to copy it to and the URL to fetch it
from on another machine.

Every official file is pinned by a full digest from a public source (``samkit.specs._PINS``):
a sha256 (Hugging Face LFS pointers, other projects' pins), the git blob id of a file committed
to GitHub, or a full md5; and its size where known. ``digest_kind(spec)`` says which. A model
without any full digest must be listed in ``NO_PUBLIC_DIGEST``; its files are "unverified".

Only the standard library (``urllib``) is used for HTTP.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from .errors import DownloadError
from .specs import ModelSpec, get_spec

ProgressFn = Callable[[int, Optional[int]], None]
"""``progress(bytes_done, total_or_None)``: called after every chunk and once at the start."""

_CHUNK = 1 << 20
_USER_AGENT = "samkit (+https://github.com/samkit)"
_TRUE = {"1", "true", "yes", "on"}
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)


FULL_DIGESTS = ("sha256", "git_blob_sha1", "md5")
"""Digests that identify a file completely (prefixes and sizes only rule files out)."""

NO_PUBLIC_DIGEST: frozenset = frozenset({"ovsam_lvis_rn50x16", "sam3"} | {
    f"sam3_litetext_{v}_{c}" for v in ("s0", "s1", "l") for c in (16, 32)} | {
    f"efficientsam3_{f}" for f in ("efficientvit", "repvit", "tinyvit")} | {
    f"efficientsam3_stage1_{f}_{s}" for f in ("efficientvit", "repvit", "tinyvit") for s in ("s", "m", "l")})
"""Neural models whose official file has no public full digest (sha256, git blob id or md5).

OVSAM's LVIS head (its Hugging Face LFS pointer was not seen); SAM 3's ``sam3.pt`` (a gated
repository: no public page shows its LFS pointer); the six SAM3-LiteText files (their LFS
pointers were not seen). Adding a model without a digest means adding it here
(tests/test_hub.py checks this), and ``samkit models verify`` then reports its file as
"unverified" and exits non-zero unless ``--allow-unverified``."""


class _Retryable(Exception):
    """A transient failure; the ``.part`` file is kept so that the next attempt resumes."""


# ----------------------------------------------------------------------------- cache layout
def cache_dir() -> Path:
    """The weights cache: ``$SAMKIT_HOME``, else ``$XDG_CACHE_HOME/samkit``, else ``~/.cache/samkit``.

    The folder is not created here (``download`` creates it when it writes)."""
    home = os.environ.get("SAMKIT_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "samkit"


def _spec(name_or_spec: Union[str, ModelSpec]) -> ModelSpec:
    return name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)


def target_path(name_or_spec: Union[str, ModelSpec]) -> Path:
    """Where the weights of a model live in the cache (whether or not they are there yet)."""
    spec = _spec(name_or_spec)
    if not spec.filename:
        raise DownloadError(
            f"model {spec.name!r} has no weights file to download (it is not a neural model). "
            f"Fix: call load_model({spec.name!r}) directly; it needs no checkpoint."
        )
    return cache_dir() / spec.filename


def cached_path(name_or_spec: Union[str, ModelSpec]) -> Optional[Path]:
    """The cached weights of a model, or None when they are not (completely) there.

    Files only reach their final name after verification, so presence means complete; an
    empty file (e.g. a failed manual copy) is not accepted."""
    spec = _spec(name_or_spec)
    if not spec.filename:
        return None
    path = cache_dir() / spec.filename
    try:
        if path.is_file() and path.stat().st_size > 0:
            return path
    except OSError:
        return None
    return None


def is_offline(offline: Optional[bool] = None) -> bool:
    """``offline`` if given, else whether ``SAMKIT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1."""
    if offline is not None:
        return bool(offline)
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("SAMKIT_OFFLINE", "HF_HUB_OFFLINE"))


def resolve(name: Union[str, ModelSpec], *, offline: Optional[bool] = None,
            progress: Optional[ProgressFn] = None) -> Path:
    """The local path of a model's official weights: from the cache, else downloaded into it.

    Raises ``DownloadError`` at once, without network access, when offline and not cached;
    the message names the full destination path and the URL to fetch the file from."""
    spec = _spec(name)
    dest = target_path(spec)
    found = cached_path(spec)
    if found is not None:
        return found
    if spec.url is None:
        raise DownloadError(
            f"model {spec.name!r} has no download URL and {dest} does not exist. "
            f"Fix: copy its weights file to {dest} or pass checkpoint=PATH to load_model."
        )
    if is_offline(offline):
        why = "offline=True was passed" if offline else "SAMKIT_OFFLINE/HF_HUB_OFFLINE is set"
        raise DownloadError(
            f"weights of {spec.name!r} are not in the cache and downloads are disabled ({why}). "
            f"Fix: on a machine with internet access fetch {spec.url} and copy the file to "
            f"{dest} (or set SAMKIT_HOME to a folder that holds {spec.filename}); or go online "
            f"and run `samkit models download {spec.name}`."
        )
    return download(spec.url, dest, progress=progress, **_spec_digests(spec))


# ----------------------------------------------------------------------------- digests
def _digests(path: Path, kinds: tuple) -> Dict[str, str]:
    """Hex digests of one file in one pass; ``kinds`` from ``sha256``, ``md5``, ``git_blob_sha1``."""
    size = path.stat().st_size
    hashers = {}
    if "sha256" in kinds:
        hashers["sha256"] = hashlib.sha256()
    if "md5" in kinds:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    if "git_blob_sha1" in kinds:  # what ``git hash-object`` prints for the file
        h = hashlib.sha1(usedforsecurity=False)
        h.update(b"blob %d\0" % size)
        hashers["git_blob_sha1"] = h
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            if not chunk:
                break
            for h in hashers.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashers.items()}


def sha256_file(path: Union[str, Path]) -> str:
    """Full hex sha256 of a file, read in 1 MiB chunks."""
    return _digests(Path(path), ("sha256",))["sha256"]


def _spec_digests(spec: ModelSpec) -> dict:
    """The digest keyword arguments of ``download`` that a spec records."""
    return {"sha256": spec.sha256, "sha256_prefix": spec.sha256_prefix, "md5": spec.extra.get("md5"),
            "md5_prefix": spec.extra.get("md5_prefix"), "git_blob_sha1": spec.extra.get("git_blob_sha1"),
            "size": spec.extra.get("size")}


def _expected(sha256=None, sha256_prefix=None, md5_prefix=None, git_blob_sha1=None,
              md5=None) -> Dict[str, tuple]:
    """``kind -> (expected hex, is_prefix)`` for the digests that are known (a full digest wins
    over a prefix of the same kind)."""
    out = {}
    if sha256:
        out["sha256"] = (sha256.lower(), False)
    elif sha256_prefix:
        out["sha256"] = (sha256_prefix.lower(), True)
    if md5:
        out["md5"] = (md5.lower(), False)
    elif md5_prefix:
        out["md5"] = (md5_prefix.lower(), True)
    if git_blob_sha1:
        out["git_blob_sha1"] = (git_blob_sha1.lower(), False)
    return out


def _mismatches(path: Path, expected: Dict[str, tuple], size: Optional[int] = None) -> list:
    """What does not match; a wrong size is reported without hashing the file."""
    if size is not None:
        have = path.stat().st_size
        if have != int(size):
            return [f"size: expected {int(size)} bytes, got {have}"]
    if not expected:
        return []
    actual = _digests(path, tuple(expected))
    bad = []
    for kind, (want, prefix) in expected.items():
        got = actual[kind]
        if (got.startswith(want) if prefix else got == want):
            continue
        label = f"{kind} prefix" if prefix else kind
        bad.append(f"{label}: expected {want}, got {got[: len(want)] if prefix else got}")
    return bad


def digest_kind(spec: Union[str, ModelSpec]) -> str:
    """How a model's file is verified: ``sha256``, ``git-blob`` or ``md5`` (a full digest),
    ``size-only`` (size and/or digest prefixes), ``none``; ``-`` for a model without weights."""
    spec = _spec(spec)
    if not spec.filename:
        return "-"
    if spec.sha256:
        return "sha256"
    if spec.extra.get("git_blob_sha1"):
        return "git-blob"
    if spec.extra.get("md5"):
        return "md5"
    if spec.extra.get("size") or spec.sha256_prefix or spec.extra.get("md5_prefix"):
        return "size-only"
    return "none"


def verify(path: Union[str, Path], spec: Union[str, ModelSpec]) -> bool:
    """Check a weights file against the size and every digest its spec records.

    Returns True when a full digest (sha256, git blob id or md5) was checked and everything
    matched; False when the spec records no full digest, so the file is unverified (whatever
    weaker facts it records, size or prefixes, did match). Raises ``DownloadError`` on any
    mismatch."""
    spec = _spec(spec)
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"{path} does not exist. Fix: run `samkit models download {spec.name}`.")
    digests = _spec_digests(spec)
    size = digests.pop("size")
    expected = _expected(**digests)
    bad = _mismatches(path, expected, size)
    if bad:
        raise DownloadError(
            f"{path} is not the official {spec.name} weights file ({'; '.join(bad)}). "
            f"Fix: delete it and run `samkit models download {spec.name}` (or fetch {spec.url})."
        )
    return any(not is_prefix for _, is_prefix in expected.values())


# ----------------------------------------------------------------------------- download
def _manual_fix(url: str, dest: Path) -> str:
    return f"Fix: check the URL, or fetch {url} by hand and copy it to {dest}."


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    req = urllib.request.Request(url, headers=headers)
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (any scheme the caller chose)


def _wrong_size(url: str, dest: Path, part: Path, what: str, size: int) -> DownloadError:
    part.unlink(missing_ok=True)
    return DownloadError(
        f"{url} {what}, but the official file has {size} bytes; nothing was kept. "
        f"Fix: check the URL; if the file upstream changed, report it, or fetch it by hand and "
        f"pass checkpoint=PATH (it is not copied to {dest}).")


def _attempt(url: str, dest: Path, part: Path, progress: Optional[ProgressFn], timeout: float,
             size: Optional[int] = None) -> None:
    """One request: continue ``part`` (or restart it) until the server's end of the file.

    ``size`` (the official file's size, when known) stops a transfer that announces or sends
    another size. Raises ``_Retryable`` for failures worth another try and ``DownloadError``
    otherwise."""
    have = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, have, timeout)
    except urllib.error.HTTPError as exc:
        total_hdr = exc.headers.get("Content-Range", "") if exc.headers else ""
        exc.close()
        if exc.code == 416 and have and total_hdr.strip().endswith(f"/{have}"):
            return  # the .part already holds the whole file (an earlier run stopped before verifying)
        if exc.code == 416 and have:  # our .part is not a prefix the server can continue
            part.unlink(missing_ok=True)
            raise _Retryable(f"server refused to resume at byte {have} (HTTP 416); restarting") from exc
        if exc.code == 404:
            raise DownloadError(f"{url} was not found (HTTP 404). {_manual_fix(url, dest)}") from exc
        if exc.code in (401, 403):
            raise DownloadError(
                f"{url} refused access (HTTP {exc.code}). {_manual_fix(url, dest)}") from exc
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}. {_manual_fix(url, dest)}") from exc
    except urllib.error.URLError as exc:
        raise _Retryable(f"cannot connect ({exc.reason})") from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, bad status lines
        raise _Retryable(f"connection failed ({exc!r})") from exc

    with resp:
        status = getattr(resp, "status", 200)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if "text/html" in (resp.headers.get("Content-Type") or "").lower():
            raise DownloadError(
                f"{url} answered with a web page, not a weights file (the link may need a login "
                f"or have moved). {_manual_fix(url, dest)}")
        if status == 206 and have:
            match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != have:
                part.unlink(missing_ok=True)
                raise _Retryable("server resumed at the wrong offset; restarting from 0")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:  # 200: the server ignored Range (or there was none) and sends the whole file
            have = 0
            total = length
            mode = "wb"
        if total is None and length is not None:
            total = have + length
        if size is not None and total is not None and total != size:
            raise _wrong_size(url, dest, part, f"announces {total} bytes", size)
        done = have
        if progress is not None:
            progress(done, total)
        try:
            with open(part, mode) as fh:
                while size is None or done <= size:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as exc:
            raise _Retryable(f"transfer interrupted after {done} bytes ({exc!r})") from exc
        except OSError as exc:  # local disk problems are not retried
            raise DownloadError(
                f"cannot write {part}: {exc}. Fix: free disk space or point SAMKIT_HOME at a "
                "writable folder with room for the file.") from exc
    if size is not None and done > size:  # a server without Content-Length that sends too much
        raise _wrong_size(url, dest, part, f"sent more than {size} bytes", size)
    if total is not None and done < total:
        raise _Retryable(f"connection closed after {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url} sent {done} bytes but announced {total}; the partial file was deleted. "
            f"{_manual_fix(url, dest)}")


def download(url: str, dest: Union[str, Path], *, sha256: Optional[str] = None,
             sha256_prefix: Optional[str] = None, md5_prefix: Optional[str] = None,
             git_blob_sha1: Optional[str] = None, md5: Optional[str] = None,
             size: Optional[int] = None, progress: Optional[ProgressFn] = None,
             timeout: float = 30.0, retries: int = 3, backoff: float = 0.5) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.part``; return ``dest``.

    Resumes an existing ``.part`` with ``Range: bytes=N-`` (206 appends; a 200 restarts from
    0); retries transient failures ``retries`` times (sleeping ``backoff * 2**i`` s, at most
    8 s); checks the announced size (and ``size``, the official one, before and while bytes
    arrive), then every given digest (``sha256``/``md5`` full, or ``sha256_prefix``/``md5_prefix``
    as prefixes of the hex digest, ``git_blob_sha1`` as git hashes a file), and only then renames
    ``.part`` to ``dest`` (atomic on one filesystem).
    On a digest mismatch the ``.part`` is deleted and ``DownloadError`` names expected vs
    actual. ``progress(bytes_done, total_or_None)`` is called as bytes arrive."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(
            f"cannot create the cache folder {dest.parent}: {exc}. Fix: set SAMKIT_HOME to a "
            "writable folder.") from exc
    last: Optional[BaseException] = None
    for attempt in range(max(0, int(retries)) + 1):
        if attempt:
            time.sleep(min(backoff * 2 ** (attempt - 1), 8.0))
        try:
            _attempt(url, dest, part, progress, timeout, size=None if size is None else int(size))
            break
        except _Retryable as exc:
            last = exc
    else:
        kept = f" {part.stat().st_size} bytes are kept in {part}; running again resumes." if part.exists() else ""
        raise DownloadError(
            f"could not download {url} after {max(0, int(retries)) + 1} attempt(s): {last}.{kept} "
            f"Fix: check the network connection (and proxy settings), then retry; or fetch the "
            f"file on another machine and copy it to {dest}.") from last

    bad = _mismatches(part, _expected(sha256, sha256_prefix, md5_prefix, git_blob_sha1, md5), size)
    if bad:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"downloaded file from {url} failed verification ({'; '.join(bad)}); it was deleted. "
            f"Fix: retry (the transfer may have been corrupted); if it fails again the file "
            f"upstream changed: report it, or fetch it by hand and pass checkpoint=PATH.")
    os.replace(part, dest)
    return dest
