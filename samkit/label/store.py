"""Results on disk: shards of records under ``OUT/shards/<settings key>/``.

Every finished batch becomes one shard, ``<time>-<host>-<pid>-<seq>.jsonl`` (one record per
line), written atomically (``samkit.io.atomic``): a shard is there whole or not at all, so a
crash or Ctrl-C loses at most the batches in flight. The driver is the only writer (workers and
Ray actors return records), and a lock file keeps two jobs from writing into the same folder.

``ShardStore.scan()`` reads every shard into an ``Index``: per input (URI and ident) where its
result lies (the first one found: a result is a function of the content and the settings, so
copies are equal and never counted twice), and the last failure of inputs without a result.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from ..errors import InputError
from ..io.atomic import atomic_write_bytes

SHARDS = "shards"
LOCK = ".lock"


@dataclass
class Located:
    """Where one result record lies, and what the merge needs without reading it."""

    path: Path
    offset: int
    length: int
    width: int
    height: int
    masks: int
    seconds: float


@dataclass
class Index:
    """``ok[(uri, ident)]`` -> ``Located``; ``failed[uri]`` -> (ident, reason, final) of the latest
    failure (``final``: the file cannot be decoded; a rerun skips it while it is unchanged)."""

    ok: Dict[Tuple[str, str], Located] = field(default_factory=dict)
    failed: Dict[str, Tuple[str, str, bool]] = field(default_factory=dict)
    bad_lines: int = 0

    def done(self, uri: str, ident: str) -> bool:
        return (uri, ident) in self.ok

    def settled(self, uri: str, ident: str) -> bool:
        """Labelled, or failed for good (an undecodable file that has not changed since)."""
        if (uri, ident) in self.ok:
            return True
        f = self.failed.get(uri)
        return f is not None and f[0] == ident and f[2]


class ShardStore:
    """The shard folder of one settings key in ``out``."""

    def __init__(self, out: Path, settings_key: str) -> None:
        self.dir = Path(out) / SHARDS / settings_key
        self._seq = 0
        self._lock_fh = None
        self._host = "".join(c for c in socket.gethostname() if c.isalnum())[:24] or "host"

    # ------------------------------------------------------------------ lock
    def lock(self) -> "ShardStore":
        """Create the folder and take its lock; InputError when another job holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.dir / LOCK, "a+")
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no lock
            pass
        except OSError:
            fh.close()
            raise InputError(f"another `samkit label` job is writing into {self.dir.parent.parent} with the same "
                             "settings. Fix: wait for it to finish (or stop it), or pass another --out.") from None
        self._lock_fh = fh
        self._sweep()
        return self

    def unlock(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _sweep(self) -> None:
        """Remove temporary files of atomic writes that a killed job left (never a whole shard)."""
        for p in self.dir.glob(".*.tmp"):
            try:
                p.unlink()
            except OSError:
                pass

    # ------------------------------------------------------------------ write
    def write(self, records: Iterable[dict]) -> Optional[Path]:
        """One shard with ``records`` (none: nothing written)."""
        lines = [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in records]
        if not lines:
            return None
        self._seq += 1
        name = f"{time.time_ns():020d}-{self._host}-{os.getpid()}-{self._seq:06d}.jsonl"
        return atomic_write_bytes(self.dir / name, ("\n".join(lines) + "\n").encode("utf-8"))

    # ------------------------------------------------------------------ read
    def shards(self) -> List[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.glob("*.jsonl") if not p.name.startswith("."))

    def scan(self) -> Index:
        index = Index()
        for path in self.shards():
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    self._add(index, path, offset, line)
                    offset += len(line)
        return index

    @staticmethod
    def _add(index: Index, path: Path, offset: int, line: bytes) -> None:
        try:
            rec = json.loads(line)
            uri, ident, kind = rec["uri"], rec["ident"], rec["t"]
        except (ValueError, KeyError, TypeError):
            index.bad_lines += 1  # cannot happen with atomic shards; such an input is simply redone
            return
        if kind == "ok":
            if (uri, ident) not in index.ok:
                index.ok[(uri, ident)] = Located(path, offset, len(line), int(rec["width"]), int(rec["height"]),
                                                 len(rec.get("anns", ())), float(rec.get("seconds", 0.0)))
        elif kind == "fail":
            index.failed[uri] = (ident, str(rec.get("reason", "unknown")), bool(rec.get("final", False)))

    @staticmethod
    def read(loc: Located) -> dict:
        with open(loc.path, "rb") as fh:
            fh.seek(loc.offset)
            return json.loads(fh.read(loc.length))
