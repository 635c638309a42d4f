"""COCO instance masks: reader and mask AP through pycocotools (``COCOeval``, iouType "segm").

``coco_mask_ap`` returns the 12 standard numbers of ``COCOeval.summarize`` (AP, AP50, AP75,
APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl); pycocotools uses -1 where a number is
undefined (e.g. no ground truth of that area range).
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..errors import InputError, require

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _coco():
    return require("pycocotools.coco", "coco", "COCO evaluation")


def _cocoeval():
    return require("pycocotools.cocoeval", "coco", "COCO evaluation")


def _mask_utils():
    return require("pycocotools.mask", "coco", "COCO evaluation")


def load_coco(src) -> "object":
    """A ``pycocotools.coco.COCO`` from a JSON path, a dict, or an existing COCO object."""
    mod = _coco()
    if isinstance(src, mod.COCO):
        return src
    if isinstance(src, dict):
        data = src
    else:
        path = Path(src)
        if not path.is_file():
            raise InputError(f"COCO annotation file {path} not found. Fix: pass the instances_*.json path.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is not valid JSON ({exc}). Fix: re-download the annotation file.") from exc
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise InputError(f"COCO annotations lack the {key!r} list. Fix: pass an instance-segmentation "
                             f"JSON (images, annotations, categories).")
    coco = mod.COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


@dataclass
class CocoInstance:
    """One ground-truth instance: ids, H x W bool mask, xywh box, crowd flag."""

    ann_id: int
    image_id: int
    category_id: int
    mask: np.ndarray
    bbox: List[float]
    iscrowd: bool


class CocoInstances:
    """COCO instance annotations with images under ``image_root`` (``file_name`` relative to it)."""

    def __init__(self, annotations, image_root=None):
        self.coco = load_coco(annotations)
        self.image_root = None if image_root is None else Path(image_root)

    @property
    def image_ids(self) -> List[int]:
        return sorted(self.coco.getImgIds())

    def image(self, image_id: int) -> np.ndarray:
        """H x W x 3 uint8 RGB image."""
        if self.image_root is None:
            raise InputError("No image folder was given. Fix: pass image_root (the folder of the COCO images).")
        info = self.coco.loadImgs([image_id])[0]
        path = self.image_root / info["file_name"]
        if not path.is_file():
            raise InputError(f"Image {path} not found. Fix: point image_root at the folder of {info['file_name']}.")
        from ..io.image import load_image

        return load_image(str(path))

    def instances(self, image_id: int, include_crowd: bool = False) -> List[CocoInstance]:
        out = []
        for ann in self.coco.loadAnns(self.coco.getAnnIds(imgIds=[image_id])):
            crowd = bool(ann.get("iscrowd", 0))
            if crowd and not include_crowd:
                continue
            out.append(CocoInstance(int(ann["id"]), int(image_id), int(ann["category_id"]),
                                    self.coco.annToMask(ann).astype(bool), [float(v) for v in ann["bbox"]], crowd))
        return out


def encode_mask(mask) -> Dict[str, object]:
    """H x W bool -> COCO RLE dict with a str ``counts`` (JSON-ready)."""
    mu = _mask_utils()
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InputError(f"A mask must be H x W, got shape {m.shape}. Fix: encode one mask at a time.")
    rle = mu.encode(np.asfortranarray(m.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def detection(image_id: int, category_id: int, mask, score: float) -> Dict[str, object]:
    """One result entry of the COCO results format (segmentation as RLE)."""
    return {"image_id": int(image_id), "category_id": int(category_id), "segmentation": encode_mask(mask),
            "score": float(score)}


def coco_mask_ap(gt, detections: Sequence[Dict[str, object]], image_ids: Optional[Iterable[int]] = None,
                 verbose: bool = False) -> Dict[str, float]:
    """COCO mask AP/AR of ``detections`` (results-format dicts) against ``gt`` (path, dict or COCO).

    Every detection needs image_id, category_id, segmentation (RLE or polygons) and score.
    No detections at all gives AP = AR = 0 (pycocotools cannot load an empty result list).
    """
    coco_gt = load_coco(gt)
    dets = list(detections)
    for i, d in enumerate(dets):
        missing = [k for k in ("image_id", "category_id", "segmentation", "score") if k not in d]
        if missing:
            raise InputError(f"Detection {i} lacks {missing}. Fix: build entries with samkit.eval.coco.detection().")
    known = set(coco_gt.getImgIds())
    unknown = sorted({int(d["image_id"]) for d in dets} - known)
    if unknown:
        raise InputError(f"Detections refer to image ids {unknown[:5]} that are not in the ground truth. "
                         f"Fix: use the image ids of the annotation file.")
    if not dets:
        return {k: 0.0 for k in STAT_NAMES}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_dt = coco_gt.loadRes(dets)
        ev = _cocoeval().COCOeval(coco_gt, coco_dt, iouType="segm")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose:
        print(sink.getvalue())
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}


def evaluate_box_prompts(predictor, data: CocoInstances, image_ids: Optional[Iterable[int]] = None,
                         progress=None) -> Dict[str, float]:
    """Mask AP of a promptable model given each ground-truth box (xywh -> xyxy) as the prompt:
    one single-mask prediction per non-crowd instance, scored with the model's score."""
    dets = []
    ids = list(image_ids) if image_ids is not None else data.image_ids
    for image_id in ids:
        inst = data.instances(image_id)
        if not inst:
            continue
        predictor.set_image(data.image(image_id))
        for ins in inst:
            x, y, w, h = ins.bbox
            res = predictor.predict(points=None, labels=None, box=[x, y, x + w, y + h], mask_input=None,
                                    multimask=False)
            dets.append(detection(image_id, ins.category_id, np.asarray(res.masks[0], bool), float(res.scores[0])))
        if progress:
            progress(str(image_id))
    return coco_mask_ap(data.coco, dets, image_ids=ids)
