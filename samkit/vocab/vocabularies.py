"""Vocabularies: the class names masks are named with.

Built in (data files in ``samkit/vocab/vocabularies/``, each naming its public source in its
header): ``"coco"`` (80 COCO 2017 instance classes, official category ids 1..90 with gaps),
``"lvis"`` (1203 LVIS v1 classes, ids 1..1203, official names such as ``aerosol_can``) and
``"ade20k"`` (150 SceneParse150 classes, ids 1..150). A vocabulary can also be a list of names,
a text file with one name per line (``#`` starts a comment line; ``ID<TAB>name`` lines give
explicit category ids), or a comma-separated string such as ``"red car,blue car"``.

Names are kept as given (they label the masks and the exported categories); CLIP is prompted
with :func:`samkit.vocab.embeddings.prompt_name` (underscores read as spaces).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from ..errors import InputError

BUILTIN = ("coco", "lvis", "ade20k")
DATA_DIR = Path(__file__).with_name("vocabularies")
_HOW = ("Fix: pass a built-in vocabulary ({}), a file with one class name per line, or a list of "
        "names such as ['red car', 'dog'].").format(", ".join(BUILTIN))


@dataclass(frozen=True)
class Vocabulary:
    """K class ``names`` with their category ``ids`` (COCO / LVIS / ADE20K official ids for the
    built-ins, 1..K otherwise) and where they came from (``source``)."""

    names: Tuple[str, ...]
    ids: Tuple[int, ...]
    source: str = "list"

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def index(self, name: str) -> int:
        """Position of ``name`` (the YOLO class index); InputError when absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise InputError(f"label {name!r} is not in the vocabulary ({self.source}, {len(self)} names). "
                             "Fix: name the masks with this vocabulary, or pass the one they were named with."
                             ) from None

    def id_of(self, name: str) -> int:
        """The category id of ``name`` (COCO ``category_id``)."""
        return self.ids[self.index(name)]

    def categories(self) -> List[Dict[str, Any]]:
        """COCO ``categories``: ``[{"id": id, "name": name}, ...]`` in vocabulary order."""
        return [{"id": i, "name": n} for i, n in zip(self.ids, self.names)]


def _check_names(names: Sequence[Any], source: str) -> Tuple[str, ...]:
    if len(names) == 0:
        raise InputError(f"the vocabulary {source} is empty. {_HOW}")
    out: List[str] = []
    seen: Dict[str, int] = {}
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise InputError(f"vocabulary item {i} is a {type(n).__name__} ({n!r:.40}), not a class name. "
                             "Fix: pass class names as strings.")
        name = " ".join(n.split())
        if not name:
            raise InputError(f"vocabulary item {i} is an empty name. Fix: remove it or write the class name.")
        key = name.lower()
        if key in seen:
            raise InputError(f"the vocabulary {source} names {name!r} twice (items {seen[key]} and {i}). "
                             "Fix: give every class once.")
        seen[key] = i
        out.append(name)
    return tuple(out)


def _read_file(path: Path, source: str) -> Vocabulary:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"vocabulary file {path} is not UTF-8 text. Fix: save it as UTF-8, one name per "
                         "line.") from None
    except OSError as exc:
        raise InputError(f"cannot read the vocabulary file {path} ({exc.strerror or exc}). "
                         "Fix: check the path and its permissions.") from None
    rows = [line.strip() for line in text.splitlines()]
    rows = [r for r in rows if r and not r.startswith("#")]
    has_id = ["\t" in r and r.split("\t", 1)[0].strip().isdigit() for r in rows]
    if any(has_id) and not all(has_id):
        n = has_id.index(not has_id[0]) + 1
        raise InputError(f"vocabulary file {path}: some lines have an ID<TAB>name and others only a name "
                         f"(class {n}). Fix: give an id on every line or on none.")
    if rows and all(has_id):
        ids = tuple(int(r.split("\t", 1)[0]) for r in rows)
        names = _check_names([r.split("\t", 1)[1] for r in rows], source)
        if len(set(ids)) != len(ids) or min(ids) < 1:
            raise InputError(f"vocabulary file {path} has repeated or non-positive ids. Fix: give every class "
                             "its own id >= 1.")
        return Vocabulary(names, ids, source)
    names = _check_names(rows, source)
    return Vocabulary(names, tuple(range(1, len(names) + 1)), source)


def load_vocabulary(spec: Any) -> Vocabulary:
    """A :class:`Vocabulary` from a built-in name (``"coco"``, ``"lvis"``, ``"ade20k"``; any
    case), a file path, a comma-separated string, a list of names, or a ``Vocabulary``.

    Refused with ``InputError`` (and the fix): an empty vocabulary, an unknown name, names that
    are not strings or are empty, a name given twice (case-insensitive)."""
    if isinstance(spec, Vocabulary):
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in BUILTIN:
            return _read_file(DATA_DIR / f"{key}.txt", key)
        if os.path.isfile(spec):
            return _read_file(Path(spec), spec)
        if "," in spec:
            names = [p for p in spec.split(",") if p.strip()]
            return Vocabulary(_check_names(names, "(from the comma-separated list)"), tuple(range(1, len(names) + 1)))
        if not key:
            raise InputError(f"the vocabulary is an empty string. {_HOW}")
        raise InputError(f"unknown vocabulary {spec!r}: not a built-in one and no such file. {_HOW}")
    if isinstance(spec, (list, tuple)):
        names = _check_names(list(spec), "(the list)")
        return Vocabulary(names, tuple(range(1, len(names) + 1)))
    raise InputError(f"a vocabulary must be a name, a file or a list of names, got {type(spec).__name__}. {_HOW}")


def vocabulary(spec: Any) -> List[str]:
    """The class names of ``spec`` (see :func:`load_vocabulary`) as a list of str."""
    return list(load_vocabulary(spec).names)


def check_texts(texts: Any, what: str = "texts") -> List[str]:
    """A non-empty list of distinct, non-empty strings (stripped), or ``InputError``."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(f"{what} must be a list of strings, got {type(texts).__name__}. Fix: pass "
                         f"{what}=['dog', 'red car'] (for one text: predict(text='dog')).")
    if not texts:
        raise InputError(f"{what} is empty. Fix: pass at least one text, e.g. ['dog'].")
    out, seen = [], set()
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__} ({t!r:.40}), not a string. Fix: pass text as str.")
        s = " ".join(t.split())
        if not s:
            raise InputError("a text prompt is empty. Fix: say what to find, e.g. text='dog'.")
        if s.lower() in seen:
            raise InputError(f"the text {s!r} is given twice. Fix: give every text once.")
        seen.add(s.lower())
        out.append(s)
    return out
