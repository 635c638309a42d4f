"""Class prototypes of Open-Vocabulary SAM: the text side of its classifier.

Upstream (``tools/gen_cls.py`` of HarborYuan/ovsam) embeds every class name with the CLIP text
tower of the backbone's CLIP (RN50x16) as follows, and OVSAM compares region embeddings with
these prototypes (cosine, max over a class's prototypes):

* a class name is split into synonyms: ``_or_`` and ``/`` become ``,``, ``_`` becomes a space,
  lower case, split at ``,``, each stripped (``"couch,sofa,sofas"`` gives 3 synonyms);
* each synonym is put in the 14 ViLD templates (:data:`VILD_TEMPLATES`), each text is encoded
  and L2-normalised, the 14 are averaged and the mean L2-normalised: one prototype per synonym;
* a class with fewer synonyms than the most of any class repeats its first prototype.

Prototypes depend only on the CLIP and the names, so they are cached on disk
(``$SAMKIT_HOME/ovsam-prototypes/``) by a digest of both.

The built-in vocabularies are those of the released classifiers (class names are facts): the
COCO classes with the synonyms of upstream's ``CocoOVDataset`` (48 base / 17 novel classes of
the open-vocabulary COCO split, ``ovsam_coco.txt``) and the 1203 LVIS v1 classes as mmdet names
them (866 base = frequent + common, 337 novel = rare, ``ovsam_lvis.txt``).
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..errors import InputError

VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
BUILTIN = ("coco", "lvis")
_DATA = Path(__file__).resolve().parent / "data"
_BATCH = 256


def split_synonyms(name: str) -> List[str]:
    """Upstream's ``split_label``: ``"tv remote,remote control"`` -> ``["tv remote", "remote control"]``."""
    text = name.replace("_or_", ",").replace("/", ",").replace("_", " ").lower()
    return [part.strip() for part in text.split(",")]


@lru_cache(maxsize=None)
def builtin_names(name: str) -> Tuple[str, ...]:
    """The class names of a built-in vocabulary (``coco``: 80, ``lvis``: 1203), upstream's spelling."""
    if name not in BUILTIN:
        raise InputError(f"unknown built-in OVSAM vocabulary {name!r}. Fix: use one of {', '.join(BUILTIN)} "
                         "or pass a list of class names.")
    return tuple(line for line in (_DATA / f"ovsam_{name}.txt").read_text().splitlines() if line)


@lru_cache(maxsize=None)
def builtin_split(name: str) -> Dict[str, Tuple[int, ...]]:
    """``{"base": ids, "novel": ids}`` of a built-in vocabulary (0-based class indices)."""
    data = json.loads((_DATA / "ovsam_splits.json").read_text())[name]
    return {k: tuple(v) for k, v in data.items()}


def check_names(names: Sequence[str]) -> List[str]:
    """A vocabulary as a list of non-empty, distinct strings whose synonyms are all non-empty."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise InputError(f"a vocabulary must be 'coco', 'lvis' or a list of class names, got {names!r:.80}. "
                         "Fix: pass e.g. ['cat', 'dog'].")
    names = list(names)
    if not names:
        raise InputError("the vocabulary is empty. Fix: pass at least one class name.")
    bad = [n for n in names if not isinstance(n, str) or not all(split_synonyms(n))]
    if bad:
        raise InputError(f"vocabulary entries must be non-empty text (synonyms separated by commas), got "
                         f"{bad[0]!r:.80}. Fix: remove empty names and stray commas.")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"the vocabulary names {dup[0]!r} more than once. Fix: list every class once.")
    return names


def check_split(base: Sequence[int], novel: Sequence[int], k: int) -> Dict[str, Tuple[int, ...]]:
    """A base/novel split of ``k`` classes: disjoint lists of indices in ``[0, k)``."""
    ids = [list(base), list(novel)]
    if any(not isinstance(i, (int,)) or isinstance(i, bool) or not 0 <= i < k for part in ids for i in part):
        raise InputError(f"base/novel must list class indices in [0, {k}). Fix: index into the vocabulary.")
    if set(ids[0]) & set(ids[1]):
        raise InputError("a class is both base and novel. Fix: put every class in at most one of them.")
    return {"base": tuple(ids[0]), "novel": tuple(ids[1])}


def compute_prototypes(names: Sequence[str], clip, templates: Sequence[str] = VILD_TEMPLATES) -> torch.Tensor:
    """``K`` class names -> ``K x P x D`` unit prototypes with ``clip`` (a ``ClipModel``:
    ``tokenize`` and ``encode_text``), as upstream's ``gen_cls.py``."""
    synonyms = [split_synonyms(n) for n in names]
    texts = [t.format(s) for syn in synonyms for s in syn for t in templates]
    feats = []
    with torch.inference_mode():
        for i in range(0, len(texts), _BATCH):
            feats.append(clip.encode_text(clip.tokenize(texts[i:i + _BATCH])).float().cpu())
    emb = F.normalize(torch.cat(feats), dim=-1).reshape(-1, len(templates), feats[0].shape[-1])
    emb = F.normalize(emb.mean(dim=1), dim=-1)
    most = max(len(s) for s in synonyms)
    out, pos = [], 0
    for syn in synonyms:
        cur = emb[pos:pos + len(syn)]
        pos += len(syn)
        out.append(torch.cat([cur, cur[:1].expand(most - len(syn), -1)]))
    return torch.stack(out)


def cache_path(clip_name: str, names: Sequence[str]) -> Path:
    """Where the prototypes of ``names`` for the CLIP ``clip_name`` are cached."""
    from ..hub import cache_dir

    key = json.dumps({"clip": clip_name, "names": list(names), "templates": list(VILD_TEMPLATES)})
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir() / "ovsam-prototypes" / f"{clip_name}-{digest}.safetensors"


def cached_prototypes(names: Sequence[str], clip_name: str, load_clip) -> torch.Tensor:
    """Prototypes from the disk cache, else computed with ``load_clip()`` and written atomically."""
    from safetensors.torch import load_file, save

    from ..io.atomic import atomic_write_bytes

    path = cache_path(clip_name, names)
    if path.is_file():
        try:
            return load_file(str(path))["prototypes"]
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed and replaced
            pass
    protos = compute_prototypes(names, load_clip())
    try:
        atomic_write_bytes(path, save({"prototypes": protos.contiguous()}))
    except OSError:
        pass  # a read-only cache only costs the recomputation next time
    return protos


def resolve(vocabulary, trained_on: Optional[str]) -> Tuple[str, List[str], Optional[Dict[str, Tuple[int, ...]]]]:
    """``vocabulary`` ("coco", "lvis" or names) -> (label, names, split or None). The base/novel
    split applies only to the vocabulary the head was trained on (``trained_on``)."""
    if isinstance(vocabulary, str):
        names = list(builtin_names(vocabulary))
        return vocabulary, names, builtin_split(vocabulary) if vocabulary == trained_on else None
    return "custom", check_names(vocabulary), None
