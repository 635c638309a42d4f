"""A command's output files, published as one set.

A run writes every file into a staging folder inside the output folder,
``OUT/.samkit/tmp-<host>-<pid>-<random>/`` (same file system, so moves are renames). Only when
every file was written are they moved into ``OUT`` (one ``os.replace`` per file, keeping the
relative layout, e.g. ``masks/00003_obj1.png``) and the run's manifest
``OUT/.samkit/<key>.json`` (the relative paths of the files of the run) replaced atomically.
Then, and only then, the files that the previous run under the same key wrote and this run did
not are deleted (``segment --single`` after a multimask run drops ``_001`` and ``_002``).

A failed run (an exception, Ctrl-C) removes its staging folder: the previous files and manifest
stay exactly as they were, and folders the run created stay only if something else is in them.
Files that no manifest lists (the user's own files, files of another key) are never touched.
A staging folder left behind by a killed process (``kill -9``, power loss) is removed by the
next run on the same host once that process is gone.

``OutputSet.keep_partial`` is for commands whose partial results are worth keeping (``samkit
track``: the finished frames of a video that failed mid-way): instead of being deleted, the
staged files move to the visible folder ``OUT/<key>-partial/`` with ``partial.json`` (the
reason and the list of files); the previous complete output in ``OUT`` stays untouched. The
next successful run of that key removes that folder's listed files again.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Union

from ..errors import InputError, SamkitError
from .atomic import atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]

STATE_DIR = ".samkit"  # manifests and staging folders, inside the output folder
PARTIAL_MANIFEST = "partial.json"
_UNSAFE = re.compile(r"[/\\\x00:*?\"<>|]")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def safe_key(key: str) -> str:
    """``key`` as a file name: unchanged when it is one, else its unsafe characters replaced and
    a short hash of the original appended (so two different keys never share a manifest)."""
    if key and not key.startswith(".") and not _UNSAFE.search(key) and len(key) <= 200:
        return key
    import hashlib

    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{_UNSAFE.sub('_', key).lstrip('.')[:180]}-{digest}"


def _read_manifest(path: Path) -> List[str]:
    """The relative file names a manifest lists ([] when absent or unreadable)."""
    try:
        doc = json.loads(path.read_text())
        files = doc.get("files", []) if isinstance(doc, dict) else []
    except (OSError, ValueError):
        return []
    return [f for f in files if isinstance(f, str) and _safe_relative(f)]


def _safe_relative(name: str) -> bool:
    """Only plain relative paths below the folder (a hand-edited manifest cannot reach out)."""
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and p.parts[0] != STATE_DIR


def _files_below(folder: Path) -> List[str]:
    """Relative POSIX paths of every file below ``folder`` (sorted)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _remove_listed(folder: Path, names: List[str], keep: frozenset = frozenset()) -> None:
    """Delete ``folder/name`` for each name not in ``keep``, then the folders this emptied."""
    parents = set()
    for name in names:
        if name in keep:
            continue
        try:
            (folder / name).unlink()
        except OSError:  # gone already, or replaced by a folder of the user's: leave it
            pass
        parents.update(p for p in (folder / name).parents if folder in p.parents)
    for d in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


def _move_files(src: Path, dest: Path, names: List[str]) -> None:
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src / name, target)


def check_out_dir(out: Path, option: str = "--out") -> Path:
    """Refuse an output folder that cannot be created or written to, before any work is done:
    an existing file, a path below a file (``file/sub``), a broken link, or a folder without
    write permission. Creates nothing. Returns ``out``."""
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise InputError(f"{option} {out} is a broken symbolic link. Fix: remove the link or pass another folder.")
    if out.exists():
        if not out.is_dir():
            raise InputError(f"{option} {out} is a file, not a folder. Fix: pass a folder path (it is created "
                             "when missing), or move the file away.")
        target = out
    else:
        target = next((p for p in out.absolute().parents if p.exists()), None)
        if target is None or not target.is_dir():
            raise InputError(f"{option} {out} cannot be created: {target} is a file, not a folder. "
                             "Fix: pass a folder path that is not below a file.")
    if not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"{option} {out}: no permission to write in {target}. "
                         "Fix: pass a folder you can write to.")
    return out


class OutputSet:
    """Stage the files of one run of ``key`` in ``out_dir``, then publish them together.

    >>> with OutputSet("out", "segment-truck") as outs:      # doctest: +SKIP
    ...     write_png(outs.path("truck_000.png"))           # a path in the staging folder
    ... # leaving the block without an error publishes the set; an error discards it

    ``key`` names the run's manifest: one per command and input (e.g. ``segment-truck``).
    """

    def __init__(self, out_dir: PathLike, key: str) -> None:
        self.out = Path(os.fspath(out_dir))
        self.key = safe_key(key)
        self.staging: Optional[Path] = None
        self.published: List[Path] = []
        self._created: List[Path] = []

    # ------------------------------------------------------------------ staging
    def open(self) -> "OutputSet":
        """Create the output folder (and missing parents) and a fresh staging folder."""
        missing = [p for p in [self.out, *self.out.parents] if not p.exists()]
        self.out.mkdir(parents=True, exist_ok=True)
        self._created = missing  # deepest first
        state = self.out / STATE_DIR
        if not state.exists():
            state.mkdir()
            self._created.insert(0, state)
        self._sweep(state)
        self.staging = Path(os.path.abspath(tempfile.mkdtemp(prefix=f"tmp-{_host()}-{os.getpid()}-", dir=state)))
        return self

    def _sweep(self, state: Path) -> None:
        """Remove staging folders of dead processes of this host."""
        pattern = re.compile(rf"^tmp-{re.escape(_host())}-(\d+)-")
        for d in state.iterdir():
            m = pattern.match(d.name)
            if m and d.is_dir() and not _pid_alive(int(m.group(1))):
                shutil.rmtree(d, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` (relative to the output folder) during the run."""
        if self.staging is None:
            raise RuntimeError("OutputSet.path before open()")
        if not _safe_relative(name):
            raise ValueError(f"output name {name!r} must be a relative path below the output folder")
        p = self.staging / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def final(self, path: PathLike) -> Path:
        """The published path of a staged ``path`` (other paths are returned unchanged)."""
        p = Path(os.fspath(path))
        if self.staging is not None and self.staging in p.parents:
            return self.out / p.relative_to(self.staging)
        return p

    def staged_files(self) -> List[str]:
        return [] if self.staging is None else _files_below(self.staging)

    # ------------------------------------------------------------------ endings
    def commit(self) -> List[Path]:
        """Publish the staged files, replace the manifest, then delete the previous run's files
        that this run did not write (and the ``<key>-partial`` folder of a failed run)."""
        names = self.staged_files()
        manifest = self.out / STATE_DIR / f"{self.key}.json"
        old = _read_manifest(manifest)
        _move_files(self.staging, self.out, names)
        atomic_write_text(manifest, json.dumps({"key": self.key, "files": names}, indent=1))
        _remove_listed(self.out, old, keep=frozenset(names))
        self._remove_partial()
        self._drop_staging()
        self.published = [self.out / n for n in names]
        return self.published

    def discard(self) -> None:
        """Forget the run: delete the staging folder and the folders ``open`` created, if empty."""
        self._drop_staging()
        for d in self._created:
            if not d.exists():
                continue
            try:
                d.rmdir()
            except OSError:
                break

    def keep_partial(self, reason: str) -> Optional[Path]:
        """Move the staged files of a failed run to ``OUT/<key>-partial/`` (replacing the files of
        an earlier partial run there) with ``partial.json``; return that folder, or None (and
        discard) when the run wrote nothing."""
        names = self.staged_files()
        if not names:
            self.discard()
            return None
        folder = self.partial_dir
        self._remove_partial()
        _move_files(self.staging, folder, names)
        atomic_write_text(folder / PARTIAL_MANIFEST, json.dumps({"key": self.key, "reason": reason,
                                                                 "files": names}, indent=1))
        self._drop_staging()
        return folder

    @property
    def partial_dir(self) -> Path:
        return self.out / f"{self.key}-partial"

    def _remove_partial(self) -> None:
        folder = self.partial_dir
        listed = folder / PARTIAL_MANIFEST
        if listed.is_file():
            _remove_listed(folder, _read_manifest(listed) + [PARTIAL_MANIFEST])
            try:
                folder.rmdir()
            except OSError:
                pass

    def _drop_staging(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        try:
            (self.out / STATE_DIR).rmdir()  # only when no manifest is left in it
        except OSError:
            pass

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "OutputSet":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                self.commit()
            except OSError as err:
                self._drop_staging()
                raise SamkitError(f"could not move the new files into {self.out} ({err.strerror or err}); some "
                                  "files there may be from this run and others from the previous one. Fix: free "
                                  "disk space or fix the folder's permissions, then run the command again.") from None
            return False
        staged = self.staging
        self.discard()
        if staged is not None and is_write_failure(exc, staged):
            raise write_error(self.out, exc) from None
        return False


_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_write_failure(exc: BaseException, staging: Path) -> bool:
    """An OSError about a staged file, or a full / read-only disk."""
    if not isinstance(exc, OSError) or isinstance(exc, SamkitError):
        return False
    if exc.errno in _WRITE_ERRNOS:
        return True
    names = [Path(os.fsdecode(n)) for n in (exc.filename, getattr(exc, "filename2", None))
             if isinstance(n, (str, bytes, os.PathLike))]
    return any(staging == n or staging in n.parents for n in names)


def write_error(out: Path, exc: OSError) -> SamkitError:
    """A one-line error for a failed write that does not name the staging file."""
    why = exc.strerror or type(exc).__name__
    return SamkitError(f"could not write the output files into {out} ({why}); nothing was changed there. "
                       "Fix: free disk space or fix the folder's permissions, then run the command again.")


def published_names(paths: Dict[str, List[PathLike]], outs: OutputSet) -> Dict[str, List[str]]:
    """{format: [staged paths]} -> {format: [published paths as str]}."""
    return {k: [str(outs.final(p)) for p in v] for k, v in paths.items()}
