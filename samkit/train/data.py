"""Training data: images with instance masks, in three layouts, read lazily.

* **SA-1B**: a folder of images, each with a JSON file of the same stem (``sa_1.jpg`` +
  ``sa_1.json``) holding ``{"image": {...}, "annotations": [{"segmentation": COCO RLE, ...}]}``.
* **COCO instances**: an ``instances_*.json`` file (``--data`` names the file, or a folder holding
  it, directly or in ``annotations/``); images are looked up under ``--images``, else next to the
  file, in its parent, or in an ``images/`` folder there. Crowd regions are skipped; polygons need
  the ``cv`` extra, compressed RLE the ``coco`` extra (as everywhere in samkit).
* **PNG masks**: ``DIR/images/<name>.<ext>`` with ``DIR/masks/<name>.png`` (a label map: every
  value 1..254 is one object; a 0/255 mask is one object; 255 elsewhere is VOC's void border and
  ignored) or ``DIR/masks/<name>/*.png`` (one 0/non-zero file per object). Sub-folders are kept.

:func:`open_dataset` finds the layout; nothing is decoded until :meth:`Dataset.read`. A folder
without any mask annotation is an :class:`~samkit.errors.InputError` naming the three layouts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..errors import ImageError, InputError
from ..io.image import load_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
LAYOUTS_HELP = ("SA-1B (image + same-stem JSON with COCO RLE annotations), a COCO instances JSON "
                "(--data instances.json [--images DIR]), or DIR/images/* with DIR/masks/*.png")


@dataclass
class Item:
    """One image: ``key`` (its path relative to the data root, the identity used everywhere),
    ``image`` path, and where its masks come from (``source``: a JSON path, a list of COCO
    segmentations, a PNG path or a folder of PNGs)."""

    key: str
    image: Path
    source: Any


@dataclass
class RawSample:
    """A decoded image (``H x W x 3`` uint8), the sha256 of its file, and its masks (callables
    that decode one ``H x W`` bool mask each, so unused masks are never decoded)."""

    key: str
    image: np.ndarray
    digest: str
    masks: List[Callable[[], np.ndarray]]


def _images_under(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _check_mask(mask: np.ndarray, image: np.ndarray, what: str) -> np.ndarray:
    if mask.shape != image.shape[:2]:
        raise InputError(f"{what} is {mask.shape[0]} x {mask.shape[1]} but its image is {image.shape[0]} x "
                         f"{image.shape[1]}. Fix: store masks at the size of their image (EXIF-rotated photos "
                         "must be saved upright).")
    return mask


def _decode_segmentation(seg: Any, h: int, w: int) -> np.ndarray:
    """A COCO segmentation (RLE dict or list of polygons) -> ``h x w`` bool."""
    from ..mask_codecs import polygons_to_mask, rle_decode

    if isinstance(seg, dict):
        return rle_decode(seg)
    if isinstance(seg, list):
        rings = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in seg]
        return polygons_to_mask(rings, h, w)
    raise InputError(f"a segmentation is neither COCO RLE nor polygons: {str(seg)[:60]!r}. "
                     "Fix: store each annotation's segmentation as RLE or a list of polygons.")


def _label_objects(arr: np.ndarray) -> List[int]:
    """Object values of a label map: 1..254, or 255 when it is the only value (a 0/255 mask)."""
    values = [int(v) for v in np.unique(arr) if v != 0]
    return values if values == [255] else [v for v in values if v != 255]


def _png_array(path: Path) -> np.ndarray:
    """A mask PNG as an integer map (RGB colours become ids)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
                return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]
            if im.mode == "1":
                return np.asarray(im, dtype=np.uint8) * 255
            return np.asarray(im)
    except OSError as exc:
        raise InputError(f"mask file {path} cannot be read ({exc}). Fix: store masks as PNG files.") from None


class Dataset:
    """Images and their masks; ``layout`` is "sa1b", "coco" or "png". ``items`` in key order."""

    def __init__(self, layout: str, root: Path, items: List[Item]) -> None:
        self.layout = layout
        self.root = root
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def key(self, i: int) -> str:
        return self.items[i].key

    def digest(self, i: int) -> str:
        """sha256 of image ``i``'s file (the teacher cache's key)."""
        try:
            return hashlib.sha256(self.items[i].image.read_bytes()).hexdigest()
        except OSError as exc:
            raise ImageError(f"image {self.items[i].image} cannot be read ({exc}). "
                             "Fix: check the data folder.") from None

    def read(self, i: int) -> RawSample:
        """Decode image ``i``; its masks stay lazy (``RawSample.masks``)."""
        item = self.items[i]
        try:
            data = item.image.read_bytes()
        except OSError as exc:
            raise ImageError(f"image {item.image} cannot be read ({exc}). Fix: check the data folder.") from None
        image = load_image(data)
        return RawSample(item.key, image, hashlib.sha256(data).hexdigest(), self._masks(item, image))

    def _masks(self, item: Item, image: np.ndarray) -> List[Callable[[], np.ndarray]]:
        h, w = image.shape[:2]
        if self.layout == "sa1b":
            try:
                doc = json.loads(Path(item.source).read_text())
            except (OSError, ValueError) as exc:
                raise InputError(f"annotation file {item.source} cannot be read ({exc}). "
                                 "Fix: pass SA-1B JSON files ({'annotations': [...]}).") from None
            segs = [a["segmentation"] for a in doc.get("annotations", []) if not a.get("iscrowd")]
        elif self.layout == "coco":
            segs = item.source
        else:
            return self._png_masks(item, image)
        what = f"a mask of {item.key}"
        return [lambda s=s: _check_mask(_decode_segmentation(s, h, w), image, what) for s in segs]

    def _png_masks(self, item: Item, image: np.ndarray) -> List[Callable[[], np.ndarray]]:
        src = Path(item.source)
        if src.is_dir():
            files = sorted(src.glob("*.png"))
            return [lambda f=f: _check_mask(_png_array(f) != 0, image, f"mask {f}") for f in files]
        arr = _check_mask(_png_array(src), image, f"mask {src}")
        return [lambda v=v: arr == v for v in _label_objects(arr)]


# --------------------------------------------------------------------------- layouts
def _sa1b(root: Path) -> Optional[Dataset]:
    items = [Item(str(p.relative_to(root)), p, p.with_suffix(".json"))
             for p in _images_under(root) if p.with_suffix(".json").is_file()]
    return Dataset("sa1b", root, items) if items else None


def _png(root: Path) -> Optional[Dataset]:
    images, masks = root / "images", root / "masks"
    if not (images.is_dir() and masks.is_dir()):
        return None
    items = []
    for p in _images_under(images):
        rel = p.relative_to(images).with_suffix("")
        for cand in (masks / rel.with_suffix(".png"), masks / rel):
            if cand.is_file() or (cand.is_dir() and any(cand.glob("*.png"))):
                items.append(Item(str(p.relative_to(images)), p, cand))
                break
    return Dataset("png", root, items)


def _coco_images_dir(ann: Path, images: Optional[Path], names: Sequence[str]) -> Path:
    cands = [images] if images is not None else [ann.parent, ann.parent.parent, ann.parent / "images",
                                                 ann.parent.parent / "images"]
    probe = names[0] if names else None
    for c in cands:
        if c is not None and probe is not None and (c / probe).is_file():
            return c
    where = str(images) if images is not None else f"{ann.parent} and its parent (also their images/ folders)"
    raise InputError(f"the images of {ann} (e.g. {probe}) are not in {where}. "
                     "Fix: pass the image folder with --images DIR.")


def _coco(ann: Path, images: Optional[Path]) -> Dataset:
    try:
        doc = json.loads(ann.read_text())
        imgs = {int(i["id"]): i["file_name"] for i in doc["images"]}
        anns = doc.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{ann} is not a COCO instances file ({exc}). Fix: pass an instances_*.json file "
                         "with 'images' and 'annotations'.") from None
    per: Dict[int, list] = {}
    for a in anns:
        if not a.get("iscrowd") and "segmentation" in a:
            per.setdefault(int(a["image_id"]), []).append(a["segmentation"])
    names = [imgs[i] for i in sorted(per) if i in imgs]
    root = _coco_images_dir(ann, images, names)
    items = [Item(imgs[i], root / imgs[i], per[i]) for i in sorted(per) if i in imgs]
    return Dataset("coco", root, sorted(items, key=lambda it: it.key))


def _coco_file(root: Path) -> Optional[Path]:
    found = sorted(root.glob("instances*.json")) + sorted((root / "annotations").glob("instances*.json"))
    if len(found) > 1:
        raise InputError(f"{root} holds several COCO files ({', '.join(p.name for p in found)}). "
                         "Fix: pass the one to train on with --data FILE.")
    return found[0] if found else None


def open_dataset(path, images=None) -> Dataset:
    """The dataset at ``path`` (a folder or a COCO JSON file); ``images`` is the COCO image folder."""
    root = Path(path).expanduser()
    img_dir = Path(images).expanduser() if images is not None else None
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise InputError(f"--data {root} is a file but not a COCO JSON file. Fix: pass a data folder "
                             f"({LAYOUTS_HELP}).")
        ds = _coco(root, img_dir)
    elif not root.is_dir():
        raise InputError(f"data folder {root} does not exist. Fix: pass a folder with images and masks "
                         f"({LAYOUTS_HELP}).")
    else:
        coco = _coco_file(root)
        ds = _png(root) if (root / "images").is_dir() and (root / "masks").is_dir() else None
        ds = ds or (_coco(coco, img_dir) if coco is not None else None) or _sa1b(root)
    if ds is None or not ds.items:
        n = len(_images_under(root)) if root.is_dir() else 0
        raise InputError(f"no masks found in {root} ({n} image(s), none with mask annotations). Fix: give each "
                         f"image its masks in one of the layouts samkit reads: {LAYOUTS_HELP}.")
    return ds


# --------------------------------------------------------------------------- order and split
def holdout_split(ds: Dataset, fraction: float) -> Tuple[List[int], List[int]]:
    """(train indices, held-out indices): an image is held out when the first 8 bytes of the sha1
    of its key, as a fraction of 2^64, fall below ``fraction`` (stable when images are added);
    at least one image is held out when ``fraction > 0`` and the set has two or more."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"--holdout must be in [0, 1), got {fraction}. Fix: pass e.g. --holdout 0.1.")
    score = [int.from_bytes(hashlib.sha1(ds.key(i).encode()).digest()[:8], "big") / 2.0 ** 64
             for i in range(len(ds))]
    held = [i for i in range(len(ds)) if score[i] < fraction]
    if fraction > 0 and not held and len(ds) >= 2:
        held = [min(range(len(ds)), key=score.__getitem__)]
    train = [i for i in range(len(ds)) if i not in set(held)]
    return train, held


class Stream:
    """The endless shuffled order of the training images: position ``p`` -> image index. Epoch
    ``p // n`` is a permutation drawn from (seed, epoch), so any position is found without replay
    (exact resume) and every rank agrees on it (sharding by position)."""

    def __init__(self, indices: Sequence[int], seed: int, shuffle: bool = True) -> None:
        if not indices:
            raise InputError("no training images are left after the held-out split. Fix: lower --holdout or add "
                             "images.")
        self.indices = list(indices)
        self.seed = seed
        self.shuffle = shuffle
        self._perm: Tuple[int, np.ndarray] = (-1, np.arange(0))

    def __getitem__(self, pos: int) -> int:
        n = len(self.indices)
        epoch, off = divmod(int(pos), n)
        if not self.shuffle:
            return self.indices[off]
        if self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch, 7]).permutation(n))
        return self.indices[int(self._perm[1][off])]


def rank_positions(micro_step: int, rank: int, world: int, batch: int) -> List[int]:
    """Stream positions of one rank's micro-batch: global micro-batch ``micro_step`` spans
    ``world * batch`` positions, rank ``r`` takes the ``r``-th run of ``batch`` — so ``world``
    processes with ``batch`` see exactly what one process with ``world * batch`` sees."""
    base = micro_step * world * batch + rank * batch
    return list(range(base, base + batch))
