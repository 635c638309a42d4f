"""Atomic file writes: a reader never sees a half-written file.

The data goes to a temporary file in the destination's folder (same file system), is flushed
and fsynced, then moved over the destination with ``os.replace`` (atomic on POSIX and Windows).
If anything fails the temporary file is removed and the destination is left untouched.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def _umask() -> int:
    # os.umask can only be read by setting it; do it once at import time.
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _umask()


def atomic_write_bytes(path: PathLike, data: bytes, *, make_dirs: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically and return the path.

    The new file keeps the permission bits of the file it replaces, or gets the usual
    ``0o666 & ~umask`` for a new file. ``make_dirs`` creates missing parent folders.
    """
    dest = Path(os.fspath(path))
    parent = dest.parent
    if make_dirs:
        parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", make_dirs: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`); newlines kept as given."""
    return atomic_write_bytes(path, text.encode(encoding), make_dirs=make_dirs)
