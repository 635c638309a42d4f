"""Safe paths under the server's ``--data`` folder.

Every path a client names is a POSIX path *relative* to the data folder. ``DataRoot.resolve``
refuses, with a 403 naming the rule:

* absolute paths (``/etc/passwd``, ``C:\\...``, ``\\\\server\\share``), backslashes, NUL bytes;
* any part that is ``..`` or starts with a dot (``.samkit`` holds the server's own state, and
  hidden files are not served), also after undoing percent-encoding up to three times
  (``%2e%2e``, ``%252e%252e``), so an encoded traversal cannot reach a later decoder;
* anything whose real path (symbolic links followed) is not inside the data folder: a link
  that points out of ``--data`` is refused, a link inside it is followed.

Write paths are checked the same way before any byte is written (the target's parent must
resolve inside the folder, and an existing target must not be a link out).
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import List
from urllib.parse import unquote

from .errors import HTTPProblem, forbidden, not_found

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
STATE_DIR = ".samkit"  # annotations and bookkeeping, inside --data
MAX_PATH_CHARS = 1024


def _decoded_forms(text: str) -> List[str]:
    """``text`` and its percent-decodings (up to three rounds) until nothing changes."""
    forms = [text]
    for _ in range(3):
        nxt = unquote(forms[-1])
        if nxt == forms[-1]:
            break
        forms.append(nxt)
    return forms


def check_relative(rel: str) -> PurePosixPath:
    """The syntactic rules (no file system access); returns the clean relative path ('' -> '.')."""
    if not isinstance(rel, str):
        raise forbidden("the path must be a string relative to the data folder. Fix: send e.g. 'photos/a.jpg'.")
    if len(rel) > MAX_PATH_CHARS:
        raise forbidden(f"the path is longer than {MAX_PATH_CHARS} characters. Fix: use a shorter path.")
    for form in _decoded_forms(rel):
        if "\x00" in form or "\\" in form:
            raise forbidden(f"the path {rel!r} holds a NUL byte or a backslash. Fix: use '/' between folders.")
        if form.startswith("/") or (len(form) > 1 and form[1] == ":"):
            raise forbidden(f"the path {rel!r} is absolute; only paths inside the data folder are served. "
                            "Fix: give the path relative to the server's --data folder.")
        parts = [p for p in form.split("/") if p not in ("", ".")]
        bad = [p for p in parts if p.startswith(".")]
        if bad:
            raise forbidden(f"the path {rel!r} has the part {bad[0]!r} ('..' and hidden names are refused). "
                            "Fix: give a path inside the data folder without '..' or names starting with '.'.")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


class DataRoot:
    """The ``--data`` folder: resolves client paths (see the module docstring)."""

    def __init__(self, root) -> None:
        root = Path(os.fspath(root)).expanduser()
        if not root.is_dir():
            raise HTTPProblem(500, f"the data folder {root} does not exist. Fix: create it or pass --data DIR.")
        self.root = root.resolve()

    def _inside(self, real: Path) -> bool:
        return real == self.root or self.root in real.parents

    def resolve(self, rel: str, kind: str = "file") -> Path:
        """The real path of ``rel``; ``kind``: ``"file"``, ``"dir"`` (must exist) or ``"new"`` (may
        not exist yet; its parent folders may not exist either, but what exists must be inside)."""
        clean = check_relative(rel)
        target = self.root / clean
        if kind == "new":
            probe = target
            while not probe.exists() and not probe.is_symlink():
                probe = probe.parent
            real = probe.resolve()
            if not self._inside(real) or (target.is_symlink() and not self._inside(target.resolve())):
                raise forbidden(f"the path {rel!r} leads out of the data folder (a symbolic link). "
                                "Fix: write inside the data folder.")
            return real / target.relative_to(probe) if probe != target else real
        real = target.resolve()
        if not self._inside(real):
            raise forbidden(f"the path {rel!r} leads out of the data folder (a symbolic link). Fix: copy the file "
                            "into the data folder.")
        if kind == "file" and not real.is_file():
            raise not_found(f"no file {rel!r} in the data folder. Fix: pick a file listed by /api/files.")
        if kind == "dir" and not real.is_dir():
            raise not_found(f"no folder {rel!r} in the data folder. Fix: pick a folder listed by /api/files.")
        return real

    def relative(self, real: Path) -> str:
        """The client path of a real path inside the folder (POSIX, '' for the root)."""
        rel = Path(real).resolve().relative_to(self.root).as_posix()
        return "" if rel == "." else rel

    def state_file(self, *parts: str) -> Path:
        """A path under ``DATA/.samkit/`` for the server's own files (never a client path)."""
        return self.root.joinpath(STATE_DIR, *parts)

    def listing(self, rel: str = "") -> dict:
        """Folders, images and videos directly in ``rel`` (hidden names and links out skipped)."""
        folder = self.resolve(rel or ".", kind="dir")
        dirs, images, videos = [], [], []
        for entry in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
            if entry.name.startswith("."):
                continue
            real = entry.resolve()
            if not self._inside(real):
                continue
            path = self.relative(entry) if not entry.is_symlink() else (self.relative(folder) + "/" + entry.name
                                                                        ).lstrip("/")
            if real.is_dir():
                frames = sum(1 for f in real.iterdir() if f.suffix.lower() in IMAGE_EXTS)
                dirs.append({"path": path, "name": entry.name, "frames": frames})
            elif real.suffix.lower() in IMAGE_EXTS:
                images.append({"path": path, "name": entry.name, "bytes": real.stat().st_size})
            elif real.suffix.lower() in VIDEO_EXTS:
                videos.append({"path": path, "name": entry.name, "bytes": real.stat().st_size})
        return {"path": self.relative(folder), "dirs": dirs, "images": images, "videos": videos}
