"""Prompt-ensembled text embeddings of a vocabulary, cached on disk.

Templates (facts from the official sources):

* ``IMAGENET_TEMPLATES``: the 80 ImageNet prompt templates of CLIP (Radford et al. 2021;
  openai/CLIP ``notebooks/Prompt_Engineering_for_ImageNet.ipynb``).
* ``MASKCLIP_TEMPLATES`` (the default): those 80 followed by the 5 scene templates MaskCLIP adds
  ("there is a {} in the scene." ...), 85 in all, as in MaskCLIP's
  ``tools/maskclip_utils/prompt_engineering.py`` (chongzhou96/MaskCLIP).

A class embedding is the ensemble of its templates (as in both sources): every filled-in
template is encoded and L2-normalised, the T embeddings are averaged and the mean is
L2-normalised again. Class names are read with underscores as spaces (``prompt_name``), so
LVIS's ``aerosol_can`` is prompted as "a photo of a aerosol can.".

Cache: ``samkit.hub.cache_dir() / "text-embeddings" / <clip name> / <key>.npy`` (K x D float32,
read with ``allow_pickle=False``), written atomically. The key hashes the DenseClip's ``name``,
the templates, the names and a fingerprint of the text tower (the rounded embedding of one fixed
probe text), so other weights under the same name never read a stale file. A cache file that
cannot be read or has the wrong shape is recomputed and replaced; a cache folder that cannot be
written only costs the recomputation next time (a warning says so). Delete the folder at will.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from ..errors import InputError
from .base import DenseClip, check_dense_clip, check_text_output

IMAGENET_TEMPLATES: Tuple[str, ...] = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
SCENE_TEMPLATES: Tuple[str, ...] = (
    "there is a {} in the scene.", "there is the {} in the scene.", "this is a {} in the scene.",
    "this is the {} in the scene.", "this is one {} in the scene.",
)
MASKCLIP_TEMPLATES: Tuple[str, ...] = IMAGENET_TEMPLATES + SCENE_TEMPLATES
DEFAULT_TEMPLATES = MASKCLIP_TEMPLATES

PROBE_TEXT = "a photo of a thing."  # its embedding fingerprints the text tower in the cache key
CHUNK = 256  # texts per encode_text call


def prompt_name(name: str) -> str:
    """The class name as CLIP reads it: underscores as spaces, whitespace collapsed."""
    return " ".join(name.replace("_", " ").split())


def check_templates(templates: Optional[Sequence[str]]) -> Tuple[str, ...]:
    """Default or validated templates: a non-empty sequence of strings with exactly one ``{}``."""
    if templates is None:
        return DEFAULT_TEMPLATES
    if isinstance(templates, str):
        templates = (templates,)
    out = tuple(templates)
    bad = [t for t in out if not isinstance(t, str) or t.count("{}") != 1 or len(re.findall(r"{[^}]*}", t)) != 1]
    if not out or bad:
        raise InputError(f"prompt templates must be strings with exactly one {{}} for the class name, got "
                         f"{(bad or [out])[0]!r}. Fix: e.g. templates=('a photo of a {{}}.',) or ('{{}}',) for "
                         "the text as given.")
    return out


def ensemble(clip: DenseClip, names: Sequence[str], templates: Optional[Sequence[str]] = None) -> torch.Tensor:
    """K names -> K x D float32: mean of the L2-normalised template embeddings, L2-normalised."""
    temps = check_templates(templates)
    texts = [t.format(prompt_name(n)) for n in names for t in temps]
    who = type(clip).__name__
    parts = []
    for s in range(0, len(texts), CHUNK):
        chunk = texts[s : s + CHUNK]
        try:
            with torch.inference_mode():
                out = clip.encode_text(chunk)
        except InputError as exc:
            k = s // len(temps)
            raise InputError(f"class {names[min(k, len(names) - 1)]!r} could not be encoded in the prompt "
                             f"templates: {exc}") from None
        parts.append(torch.nn.functional.normalize(check_text_output(out, len(chunk), who), dim=-1))
    emb = torch.cat(parts).reshape(len(names), len(temps), -1).mean(1)
    return torch.nn.functional.normalize(emb, dim=-1)


def cache_root() -> Path:
    """Folder of the text-embedding cache (inside the weights cache)."""
    from .. import hub

    return hub.cache_dir() / "text-embeddings"


def _fingerprint(clip: DenseClip) -> list:
    with torch.inference_mode():
        probe = check_text_output(clip.encode_text([PROBE_TEXT]), 1, type(clip).__name__)
    return [round(float(v), 3) + 0.0 for v in torch.nn.functional.normalize(probe, dim=-1)[0]]


def cache_path(clip: DenseClip, names: Sequence[str], templates: Sequence[str]) -> Path:
    """Where the embeddings of (clip, templates, names) are cached."""
    key = json.dumps({"clip": clip.name, "templates": list(templates), "names": list(names),
                      "probe": _fingerprint(clip)}, separators=(",", ":"))
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", clip.name).strip("._") or "clip"
    return cache_root() / folder[:80] / f"{digest}.npy"


def _read(path: Path, k: int) -> Optional[torch.Tensor]:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[0] != k or not np.isfinite(arr).all():
        return None
    if not np.allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-3):
        return None
    return torch.from_numpy(arr.copy())


def _write(path: Path, emb: torch.Tensor) -> None:
    from ..io.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, emb.numpy().astype(np.float32), allow_pickle=False)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        warnings.warn(f"could not cache text embeddings in {path.parent} ({exc.strerror or exc}); they will be "
                      "computed again next time. Fix: make the samkit cache writable (SAMKIT_HOME).", stacklevel=3)


def text_embeddings(clip: DenseClip, names: Sequence[str], templates: Optional[Sequence[str]] = None,
                    cache: bool = True) -> torch.Tensor:
    """Prompt-ensembled embeddings of ``names`` (K strings): K x D float32 (CPU), rows
    L2-normalised, row k for ``names[k]``. Read from / written to the disk cache unless
    ``cache=False``."""
    clip = check_dense_clip(clip)
    names = list(names)
    if not names:
        raise InputError("no class names to embed. Fix: pass at least one name.")
    temps = check_templates(templates)
    if not cache:
        return ensemble(clip, names, temps)
    path = cache_path(clip, names, temps)
    emb = _read(path, len(names)) if path.is_file() else None
    if emb is None:
        emb = ensemble(clip, names, temps)
        _write(path, emb)
    return emb
