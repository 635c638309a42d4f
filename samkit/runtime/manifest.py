"""``samkit-export.json``: the manifest of an export folder, and its integrity check.

Written by :func:`samkit.export.export_onnx`, read by :mod:`samkit.runtime` (numpy only: this
module must never import torch). The schema is described in :mod:`samkit.export`; here it is
read: :func:`read_export` checks the format, then the sha256 of every file the manifest lists,
and returns an :class:`ExportFolder`. Any missing or altered file is one ``CheckpointError``
naming every such file and the fix.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

from ..errors import CheckpointError, InputError

MANIFEST = "samkit-export.json"
FORMAT = "samkit-onnx-export"
#: bumped only by incompatible changes; readers ignore keys, graphs and pipelines they do not know
FORMAT_VERSION = 1
_CHUNK = 1 << 22


def sha256_file(path: Union[str, Path]) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_entries(folder: Path, names: Iterable[str]) -> Dict[str, dict]:
    """``{name: {"sha256": ..., "bytes": ...}}`` for files below ``folder``."""
    return {n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in sorted(names)}


def is_export_folder(path: Union[str, Path, None]) -> bool:
    """True when ``path`` is a folder holding a ``samkit-export.json``."""
    if path is None:
        return False
    p = Path(path).expanduser()
    return p.is_dir() and (p / MANIFEST).is_file()


@dataclass
class ExportFolder:
    """A checked export folder: ``folder``, the parsed ``manifest`` dict."""

    folder: Path
    manifest: dict

    @property
    def model(self) -> str:
        return str(self.manifest.get("model", {}).get("name", "?"))

    def graphs(self, role: Optional[str] = None) -> Dict[str, dict]:
        """The graph entries (``{id: entry}``), all or those of one ``role``."""
        graphs = self.manifest.get("graphs", {})
        return {k: g for k, g in graphs.items() if role is None or g.get("role") == role}

    def graph(self, role: str, precision: Optional[str] = None) -> dict:
        """The one graph of ``role`` (and ``precision``, e.g. ``"fp32"``, ``"int8"``)."""
        found = [g for g in self.graphs(role).values() if precision is None or g.get("precision") == precision]
        if not found:
            have = sorted({g.get("precision", "?") for g in self.graphs(role).values()})
            what = f"{precision} {role}" if precision else role
            extra = f" (it has: {', '.join(have)})" if have else ""
            raise InputError(f"the export folder {self.folder} has no {what} graph{extra}. Fix: choose one it has, "
                             "or export again with the option that writes it (e.g. --quantize int8).")
        return found[0]

    def path(self, entry: dict) -> Path:
        return self.folder / entry["file"]


def _load(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON ({exc}). Fix: copy the export folder again or "
                              "re-export it with `samkit export MODEL --format onnx --out DIR`.") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else None
        raise CheckpointError(f"{path} is not a samkit export manifest (format {got!r}, expected {FORMAT!r}). "
                              "Fix: pass a folder written by `samkit export`.")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(f"{path} has format_version {version!r}; this samkit reads versions up to "
                              f"{FORMAT_VERSION}. Fix: upgrade samkit or re-export the model with this samkit.")
    if not isinstance(doc.get("files"), dict) or not isinstance(doc.get("graphs"), dict):
        raise CheckpointError(f"{path} lacks its 'files' or 'graphs' table. Fix: re-export the model.")
    return doc


def _safe(name: str) -> bool:
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


def verify_files(folder: Path, files: Dict[str, dict]) -> None:
    """Every listed file exists with its size and sha256, else one ``CheckpointError``."""
    missing: List[str] = []
    altered: List[str] = []
    for name, entry in sorted(files.items()):
        path = folder / name
        if not _safe(name) or not isinstance(entry, dict):
            altered.append(name)
            continue
        if not path.is_file():
            missing.append(name)
            continue
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            altered.append(name)
    if missing or altered:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if altered:
            parts.append(f"altered (size or sha256 differs from {MANIFEST}): {', '.join(altered)}")
        raise CheckpointError(f"the export folder {folder} is damaged ({'; '.join(parts)}). Fix: copy the whole "
                              "folder again, or re-export it with `samkit export MODEL --format onnx --out DIR`.")


def read_export(path: Union[str, Path], verify: bool = True) -> ExportFolder:
    """Parse ``PATH/samkit-export.json`` and (``verify``) check every file it lists."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder. Fix: pass the folder written by `samkit export MODEL --format "
                         "onnx --out DIR`.")
    if not (folder / MANIFEST).is_file():
        raise InputError(f"{folder} is not a samkit export folder (no {MANIFEST} in it). Fix: pass the folder "
                         "written by `samkit export MODEL --format onnx --out DIR`.")
    doc = _load(folder)
    listed = set(doc["files"])
    unlisted = [g["file"] for g in doc["graphs"].values() if isinstance(g, dict) and g.get("file") not in listed]
    if unlisted:
        raise CheckpointError(f"{folder / MANIFEST} lists graphs without a checksum ({', '.join(unlisted)}). "
                              "Fix: re-export the model.")
    if verify:
        verify_files(folder, doc["files"])
    return ExportFolder(folder, doc)
