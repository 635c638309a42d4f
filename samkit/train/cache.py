"""Teacher image embeddings, computed once and memory-mapped from disk.

Layout: ``<cache root>/<teacher label>-<fingerprint>/`` holds ``layout.json`` (the tensors of one
entry: ``embed`` and, for SAM 2-family teachers, ``high_res.0`` / ``high_res.1``, with shapes) and
one ``<image sha256>.npy`` per image: a flat float32 array of those tensors, written atomically
(a reader never sees half a file; an interrupted fill resumes where it stopped). The fingerprint
hashes the teacher's name, input size and every weight, so another teacher (or other weights)
never reads these entries; the image is keyed by the sha256 of its file, not its name.

Each rank fills the entries of the images ``i`` with ``i % world == rank`` that are missing, then
all ranks wait for each other; training reads entries with ``numpy.load(mmap_mode="r")``.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..checkpoint import weights_digest
from ..errors import InputError
from ..io.atomic import atomic_write_bytes, atomic_write_text
from ..models.base import ImageFeatures

Layout = List[Tuple[str, Tuple[int, ...]]]


def weights_fingerprint(model: torch.nn.Module, label: str) -> str:
    """sha256 of ``label``, the model's input size and the digest of its weights."""
    ident = f"{label}|{getattr(model, 'image_size', '')}|{weights_digest(model)}"
    return hashlib.sha256(ident.encode()).hexdigest()


def _flatten(features: ImageFeatures) -> Tuple[np.ndarray, Layout]:
    tensors = [("embed", features.embed[0])]
    for i, t in enumerate(features.high_res or ()):
        tensors.append((f"high_res.{i}", t[0]))
    flat = np.concatenate([t.detach().float().cpu().numpy().reshape(-1) for _, t in tensors])
    return flat, [(name, tuple(int(s) for s in t.shape)) for name, t in tensors]


class TeacherCache:
    """Embeddings of one teacher (see the module docstring). ``label`` names the teacher."""

    def __init__(self, root, teacher: torch.nn.Module, label: str) -> None:
        self.teacher = teacher
        safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", label)[:40]
        self.fingerprint = weights_fingerprint(teacher, label)
        self.dir = Path(root).expanduser() / f"{safe}-{self.fingerprint[:16]}"
        self._layout: Optional[Layout] = None

    def path(self, digest: str) -> Path:
        return self.dir / f"{digest}.npy"

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            f = self.dir / "layout.json"
            if not f.is_file():
                raise InputError(f"the teacher cache {self.dir} has no layout.json. Fix: delete the folder; it is "
                                 "rebuilt on the next run.")
            self._layout = [(n, tuple(s)) for n, s in json.loads(f.read_text())["tensors"]]
        return self._layout

    @torch.no_grad()
    def compute(self, x: torch.Tensor) -> ImageFeatures:
        """The teacher's features of one preprocessed image ``1 x 3 x S x S``."""
        with torch.inference_mode():
            return self.teacher.encode(x.to(self.teacher.device))

    def put(self, digest: str, features: ImageFeatures) -> None:
        flat, layout = _flatten(features)
        lay = self.dir / "layout.json"
        if not lay.is_file():
            atomic_write_text(lay, json.dumps({"tensors": layout}))
        elif [(n, tuple(s)) for n, s in json.loads(lay.read_text())["tensors"]] != layout:
            raise InputError(f"the teacher cache {self.dir} holds embeddings of another shape. Fix: delete the "
                             "folder; it is rebuilt on the next run.")
        buf = io.BytesIO()
        np.save(buf, flat.astype(np.float32, copy=False), allow_pickle=False)
        atomic_write_bytes(self.path(digest), buf.getvalue())

    def get(self, digest: str) -> ImageFeatures:
        """The cached features of one image (batch 1), read through a memory map."""
        try:
            arr = np.load(self.path(digest), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"teacher embedding {self.path(digest)} is missing or unreadable ({exc}). Fix: rerun "
                             "the same command; missing entries are recomputed.") from None
        out, start = [], 0
        for _, shape in self.layout:
            n = int(np.prod(shape))
            out.append(torch.from_numpy(np.array(arr[start:start + n])).view(1, *shape))
            start += n
        return ImageFeatures(out[0], tuple(out[1:]) or None)

    def missing(self, digest: str) -> bool:
        p = self.path(digest)
        if not p.is_file():
            return True
        try:
            np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return True
        return False

    def fill(self, read: Callable[[int], Tuple[str, torch.Tensor]], indices: Sequence[int], rank: int,
             world: int, progress: Optional[Callable[[int, int], None]] = None) -> int:
        """Compute this rank's missing entries. ``read(i) -> (digest, 1 x 3 x S x S teacher input)``
        (``digest`` may be read first and the input built lazily: pass a callable as the second
        item). Returns how many entries this rank wrote."""
        self.dir.mkdir(parents=True, exist_ok=True)
        mine = [i for k, i in enumerate(indices) if k % world == rank]
        written = 0
        for n, i in enumerate(mine):
            digest, x = read(i)
            if self.missing(digest):
                self.put(digest, self.compute(x() if callable(x) else x))
                written += 1
            if progress is not None:
                progress(n + 1, len(mine))
        return written
