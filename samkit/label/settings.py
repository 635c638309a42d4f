"""What a labelling job computes: ``LabelSettings`` and its key.

The key (16 hex digits of a sha256) covers everything that changes a result: the model (its name
and the identity of its weights file), the mode, the classes, the CLIP and the segment-everything
options. Each image's result is then keyed by the sha256 of its bytes (and of its boxes in
``boxes`` mode) under the settings key, so a rerun with the same settings finds every finished
image again, and a rerun with other settings starts a separate set of results.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import InputError

MODES = ("everything", "boxes", "text")
RECORD_VERSION = 1

#: segment-everything options (``samkit.auto.AutoMaskGenerator`` keywords) and their defaults
EVERYTHING_DEFAULTS: Dict[str, Any] = {
    "points_per_side": 32, "points_per_batch": 64, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0, "crop_n_layers": 0, "min_mask_region_area": 0, "nms": "greedy",
    "nms_thresh": 0.7, "use_m2m": False,
}


def callable_name(fn: Callable) -> str:
    """``module.qualname`` of a factory (what the settings key records for it)."""
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def file_identity(path: Optional[str]) -> Optional[str]:
    """A weights file's identity for the key: its name, size and modification time (hashing a
    multi-GB checkpoint on every run would cost more than the key saves)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return Path(path).name
    return f"{Path(path).name}:{st.st_size}:{st.st_mtime_ns}"


@dataclass(frozen=True)
class LabelSettings:
    """One labelling job's model and options (picklable: it travels to every worker / actor).

    ``model``: a registry name; ``model_factory``: instead, a zero-argument function returning a
    model (importable at module level, so that worker processes and Ray actors can find it).
    ``checkpoint``: the resolved weights file (None: the cache, or no file for ``classic``).
    ``class_names`` / ``class_ids``: the classes (text prompts in ``text`` mode, names of the
    masks in ``everything`` mode); empty: none. ``clip_factory`` like ``model_factory`` for the
    CLIP (default: ``samkit.vocab.load_clip(clip, clip_checkpoint)``).
    """

    model: str
    mode: str = "everything"
    checkpoint: Optional[str] = None
    class_names: Tuple[str, ...] = ()
    class_ids: Tuple[int, ...] = ()
    clip: Optional[str] = None
    clip_checkpoint: Optional[str] = None
    device: str = "cpu"
    everything: Tuple[Tuple[str, Any], ...] = tuple(sorted(EVERYTHING_DEFAULTS.items()))
    model_factory: Optional[Callable[[], Any]] = field(default=None, compare=False)
    clip_factory: Optional[Callable[[], Any]] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown --mode {self.mode!r}. Fix: use one of {', '.join(MODES)}.")
        if self.mode == "text" and not self.class_names:
            raise InputError("--mode text needs the classes to look for. Fix: add --classes 'car,person' (names, "
                             "comma-separated or repeated, a file with one name per line, or coco / lvis / ade20k).")
        unknown = set(dict(self.everything)) - set(EVERYTHING_DEFAULTS)
        if unknown:
            raise InputError(f"unknown segment-everything option(s) {sorted(unknown)}. Fix: use "
                             f"{', '.join(EVERYTHING_DEFAULTS)}.")

    @property
    def named(self) -> bool:
        """Whether masks get class names (text mode, or everything mode with classes)."""
        return bool(self.class_names) and self.mode in ("text", "everything")

    @property
    def needs_clip(self) -> bool:
        return self.named

    def generator_options(self) -> Dict[str, Any]:
        opts = dict(EVERYTHING_DEFAULTS)
        opts.update(dict(self.everything))
        return opts

    def describe(self) -> Dict[str, Any]:
        """The fields that decide the results (the key is their hash); JSON-serialisable."""
        doc: Dict[str, Any] = {
            "version": RECORD_VERSION,
            "model": callable_name(self.model_factory) if self.model_factory else self.model,
            "weights": file_identity(self.checkpoint),
            "mode": self.mode,
        }
        if self.class_names:
            doc["classes"] = [[i, n] for i, n in zip(self.class_ids, self.class_names)]
        if self.needs_clip:
            doc["clip"] = callable_name(self.clip_factory) if self.clip_factory else self.clip
            doc["clip_weights"] = file_identity(self.clip_checkpoint)
        if self.mode == "everything":
            doc["everything"] = self.generator_options()
        return doc

    def key(self) -> str:
        text = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_settings(model: Any, mode: str = "everything", checkpoint: Optional[str] = None, classes: Any = None,
                  clip: Optional[Any] = None, clip_checkpoint: Optional[str] = None, device: str = "cpu",
                  **everything: Any) -> LabelSettings:
    """``LabelSettings`` from user-level arguments: ``model`` a name or a factory function,
    ``classes`` anything ``samkit.vocab.load_vocabulary`` reads (plus one plain name),
    ``clip`` a CLIP name or a factory function, ``everything`` generator options."""
    names: Tuple[str, ...] = ()
    ids: Tuple[int, ...] = ()
    if classes is not None:
        vocab = load_classes(classes)
        names, ids = tuple(vocab.names), tuple(vocab.ids)
    opts = dict(EVERYTHING_DEFAULTS)
    opts.update(everything)
    factory = model if callable(model) else None
    clip_factory = clip if callable(clip) else None
    clip_name = None if clip is None or callable(clip) else str(clip)
    if names and mode in ("text", "everything") and clip is None:
        clip_name = "clip_vit_b16"
    return LabelSettings(model=callable_name(model) if factory else str(model), mode=mode,
                         checkpoint=None if checkpoint is None else os.fspath(checkpoint), class_names=names,
                         class_ids=ids, clip=clip_name, clip_checkpoint=None if clip_checkpoint is None else
                         os.fspath(clip_checkpoint), device=device, everything=tuple(sorted(opts.items())),
                         model_factory=factory, clip_factory=clip_factory)


def load_classes(classes: Any):
    """``--classes`` values -> ``Vocabulary``: one value is a built-in vocabulary, a file, a
    comma-separated list or ONE class name; several values are the names (each may hold commas)."""
    from ..vocab.vocabularies import BUILTIN, load_vocabulary

    if isinstance(classes, (list, tuple)):
        if len(classes) == 1:
            return load_classes(classes[0])
        names = [n.strip() for c in classes for n in str(c).split(",") if n.strip()]
        return load_vocabulary(names)
    text = os.fspath(classes) if isinstance(classes, os.PathLike) else classes
    if isinstance(text, str) and "," not in text and text.strip().lower() not in BUILTIN \
            and not os.path.isfile(text) and text.strip():
        return load_vocabulary([text])
    return load_vocabulary(text)
