"""Labels in the export formats (used by ``samkit segment --text`` / ``everything --vocabulary``).

* COCO: ``categories`` are the vocabulary's ``{"id", "name"}`` (official ids for the built-in
  COCO / LVIS / ADE20K vocabularies, 1..K for a list or a file without ids) and every
  annotation's ``category_id`` is its label's id; ``label_score`` is added next to ``score``.
  Unlabelled masks keep the single category ``{"id": 1, "name": "object"}``.
* YOLO: the class index of a mask is its label's position in the vocabulary (0-based), and the
  class names go to ``classes.txt`` in the output folder, one per line, line i = class i: the
  names file that labelImg and Label Studio write and read next to YOLO label files (Ultralytics
  ``data.yaml`` ``names:`` takes the same list). All YOLO files in a folder share it, so a run
  whose vocabulary differs from an existing ``classes.txt`` there is refused before any work.
  ``classes.txt`` is not part of a run's output set: it is written (atomically, same content
  or new) after the run's files are published, and never removed by a later run.
* LabelMe: each shape's ``label`` is its mask's label (``Masks.to_labelme``).
* JSON: ``label`` and ``label_score`` per mask (``Masks.to_json``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import InputError
from .vocabularies import Vocabulary

CLASS_NAMES_FILE = "classes.txt"
OBJECT_CATEGORY = {"id": 1, "name": "object"}


def coco_categories(masks, vocab: Optional[Vocabulary]) -> Tuple[List[dict], List[int]]:
    """(COCO ``categories``, one ``category_id`` per mask) for ``masks`` named from ``vocab``."""
    if vocab is None or masks.labels is None:
        return [dict(OBJECT_CATEGORY)], [1] * len(masks)
    return vocab.categories(), [vocab.id_of(label) for label in masks.labels]


def class_names_text(vocab: Vocabulary) -> str:
    """The ``classes.txt`` text: one name per line, in class-index order."""
    return "".join(f"{n}\n" for n in vocab.names)


def check_class_names(out_dir: Path, vocab: Optional[Vocabulary]) -> None:
    """Refuse to write YOLO files for ``vocab`` into a folder whose ``classes.txt`` lists other names."""
    if vocab is None:
        return
    path = Path(out_dir) / CLASS_NAMES_FILE
    if not path.is_file():
        return
    try:
        current = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current != class_names_text(vocab):
        raise InputError(f"{path} lists other class names than this run's vocabulary ({len(vocab)} names); the "
                         "YOLO files of one folder share one classes.txt. Fix: write into another --out folder, "
                         "or remove that classes.txt if its YOLO files are no longer needed.")


def write_class_names(out_dir: Path, vocab: Vocabulary) -> Path:
    """Write ``out_dir/classes.txt`` atomically (after ``check_class_names``)."""
    from ..io.atomic import atomic_write_text

    path = Path(out_dir) / CLASS_NAMES_FILE
    text = class_names_text(vocab)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    return atomic_write_text(path, text)
