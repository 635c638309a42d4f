"""Reader for the DAVIS layout (2016 and 2017 conventions).

```
ROOT/JPEGImages/<res>/<seq>/00000.jpg ...
ROOT/Annotations/<res>/<seq>/00000.png ...   palette PNG, pixel value = object index
ROOT/ImageSets/<year>/<split>.txt            one sequence name per line
```
Annotation values: 0 background, 1..N objects, 255 void (ignored by J and F, as the
official evaluator does). The objects of a sequence are 1..N with N the largest index of
the first annotation (DAVIS 2017 semi-supervised rule). DAVIS 2016 0/255 grayscale
annotations are read with 255 -> object 1 when ``binary=True`` (year "2016" default).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import InputError

VOID = 255


@dataclass
class DavisSequence:
    """One sequence: its name, the frame image paths and the annotation paths (frame-aligned;
    None where a frame has no annotation file)."""

    name: str
    images: List[Path]
    annotations: List[Optional[Path]]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def frame_ids(self) -> List[str]:
        return [p.stem for p in self.images]


class DavisDataset:
    """DAVIS sequences of one split.

    ``DavisDataset(root, year="2017", split="val", resolution="480p", sequences=None)``;
    ``sequences`` overrides the ImageSets list. ``binary`` (default: year == "2016") maps any
    non-zero annotation value to object 1 (DAVIS 2016 single-object masks).
    """

    def __init__(self, root, year: str = "2017", split: str = "val", resolution: str = "480p",
                 sequences: Optional[Sequence[str]] = None, binary: Optional[bool] = None):
        self.root = Path(root)
        self.year, self.split, self.resolution = str(year), split, resolution
        self.binary = (self.year == "2016") if binary is None else bool(binary)
        if not self.root.is_dir():
            raise InputError(f"DAVIS root {self.root} does not exist. Fix: pass the folder that holds "
                             f"JPEGImages/, Annotations/ and ImageSets/ (e.g. --data /path/to/DAVIS).")
        self.image_dir = self.root / "JPEGImages" / resolution
        self.annotation_dir = self.root / "Annotations" / resolution
        for d in (self.image_dir, self.annotation_dir):
            if not d.is_dir():
                raise InputError(f"{d} is missing: not a DAVIS tree at resolution {resolution!r}. "
                                 f"Fix: point --data at the DAVIS root, or pick the resolution that exists "
                                 f"({', '.join(sorted(p.name for p in (self.root / 'JPEGImages').glob('*'))) or 'none'}).")
        if sequences is None:
            listing = self.root / "ImageSets" / self.year / f"{split}.txt"
            if not listing.is_file():
                raise InputError(f"Sequence list {listing} not found. Fix: pass year/split that exist under "
                                 f"{self.root / 'ImageSets'} or name the sequences explicitly.")
            sequences = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        self.names: List[str] = list(dict.fromkeys(sequences))
        self._cache: Dict[str, DavisSequence] = {}

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return (self.sequence(n) for n in self.names)

    def sequence(self, name: str) -> DavisSequence:
        if name not in self._cache:
            images = sorted((self.image_dir / name).glob("*.jpg"))
            if not images:
                raise InputError(f"No frames found in {self.image_dir / name}. Fix: check the sequence name "
                                 f"in ImageSets/{self.year}/{self.split}.txt and that its JPEG folder is complete.")
            ann_dir = self.annotation_dir / name
            annotations = [(ann_dir / f"{p.stem}.png") for p in images]
            annotations = [a if a.is_file() else None for a in annotations]
            if annotations[0] is None:
                raise InputError(f"Sequence {name!r} has no annotation for its first frame "
                                 f"({ann_dir / (images[0].stem + '.png')}). Fix: the semi-supervised protocol "
                                 f"needs the first-frame mask; restore the Annotations folder.")
            self._cache[name] = DavisSequence(name, images, annotations)
        return self._cache[name]

    def image(self, name: str, index: int) -> np.ndarray:
        """H x W x 3 uint8 RGB frame ``index`` of sequence ``name``."""
        path = self.sequence(name).images[index]
        from ..io.image import load_image

        return load_image(str(path))

    def annotation(self, name: str, index: int) -> Optional[np.ndarray]:
        """H x W uint8 object-index map of frame ``index`` (255 = void), or None if unannotated."""
        path = self.sequence(name).annotations[index]
        if path is None:
            return None
        return read_index_png(path, binary=self.binary)

    def num_objects(self, name: str) -> int:
        """Largest object index in the first annotation (DAVIS 2017 rule)."""
        first = self.annotation(name, 0)
        vals = first[first != VOID]
        return int(vals.max()) if vals.size else 0

    def object_ids(self, name: str) -> List[int]:
        return list(range(1, self.num_objects(name) + 1))


def read_index_png(path, binary: bool = False) -> np.ndarray:
    """H x W uint8 object indices from a DAVIS annotation PNG (palette "P" or grayscale "L").

    ``binary``: 0 stays background, 255 stays void only in palette files; any other non-zero
    value (and 255 in grayscale files, DAVIS 2016) becomes object 1.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            a = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read annotation {path}: {exc}. Fix: replace the file with a palette "
                         f"or grayscale PNG of object indices.") from exc
    if a.ndim == 3:
        raise InputError(f"Annotation {path} is {mode} with {a.shape[2]} channels, not an index map. "
                         f"Fix: save annotations as palette ('P') PNGs where pixel value = object index.")
    a = a.astype(np.uint8)
    if binary:
        void = (a == VOID) if mode == "P" else np.zeros(a.shape, bool)
        out = (a > 0).astype(np.uint8)
        out[void] = VOID
        return out
    return a


def split_objects(index_map: np.ndarray, object_ids: Sequence[int]) -> Dict[int, np.ndarray]:
    """Object index map -> {object id: H x W bool}; absent objects give all-False masks."""
    return {int(i): index_map == i for i in object_ids}


def write_index_png(path, index_map: np.ndarray) -> None:
    """Save an H x W object-index map as a palette PNG with the DAVIS colours (results format)."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    im = Image.fromarray(np.asarray(index_map, dtype=np.uint8), mode="P")
    im.putpalette(davis_palette())
    im.save(path)


def davis_palette() -> List[int]:
    """The 256-entry DAVIS/PASCAL colour map (bit-interleaved label colours), flat RGB list."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal
