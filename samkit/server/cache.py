"""Bounded caches of the server.

* ``LRUBytes``: least-recently-used mapping with a byte cap (image embeddings: key = (sha256 of
  the file's bytes, model id); low-resolution logits kept for mask refinement). An item larger
  than the cap is not kept; inserting evicts the oldest items until the total fits.
* ``FileDigests``: sha256 of a file's content, remembered per (path, size, mtime, inode) so
  that a file is read and hashed once until it changes.

Both are thread-safe (the inference worker and the event loop use them).
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Hashable, Optional, Tuple


class LRUBytes:
    """LRU with a byte cap. ``put(key, value, nbytes)``; ``get(key)`` -> value or None."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = int(capacity_bytes)
        self._items: "OrderedDict[Hashable, Tuple[Any, int]]" = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def get(self, key: Hashable) -> Optional[Any]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> bool:
        """Keep ``value``; False when it is larger than the whole cache (then it is not kept)."""
        nbytes = int(nbytes)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if nbytes > self.capacity:
                return False
            self._items[key] = (value, nbytes)
            self.bytes += nbytes
            while self.bytes > self.capacity:
                _, (_, size) = self._items.popitem(last=False)
                self.bytes -= size
                self.evictions += 1
            return True

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        with self._lock:
            return {"items": len(self._items), "bytes": self.bytes, "capacity_bytes": self.capacity,
                    "hits": self.hits, "misses": self.misses, "evictions": self.evictions}


class FileDigests:
    """sha256 hex digest of a file's content, recomputed only when the file changes."""

    def __init__(self, max_items: int = 4096) -> None:
        self.max_items = max_items
        self._memo: "OrderedDict[Tuple, str]" = OrderedDict()
        self._lock = threading.Lock()

    def digest(self, path: Path) -> str:
        st = os.stat(path)
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                return hit
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        value = h.hexdigest()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > self.max_items:
                self._memo.popitem(last=False)
        return value
