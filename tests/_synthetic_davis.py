"""Tiny synthetic DAVIS trees for the eval tests (a test double; no real data needed).

``make_davis_tree(root, sequences={"name": [index_map, ...]})`` writes JPEG frames whose
pixels are 255 inside objects and 0 elsewhere (so a fake model can "see" the objects),
palette annotation PNGs and ImageSets/2016|2017/val.txt.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np
from PIL import Image

from samkit.eval.davis import write_index_png


def squares(h: int, w: int, boxes: Sequence[tuple]) -> np.ndarray:
    """H x W uint8 index map with object i+1 filling boxes[i] = (y0, y1, x0, x1) (end exclusive)."""
    m = np.zeros((h, w), np.uint8)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        m[y0:y1, x0:x1] = i + 1
    return m


def make_davis_tree(root, sequences: Mapping[str, Sequence[np.ndarray]], resolution: str = "480p",
                    years: Sequence[str] = ("2016", "2017")) -> Path:
    root = Path(root)
    for name, maps in sequences.items():
        img_dir = root / "JPEGImages" / resolution / name
        img_dir.mkdir(parents=True, exist_ok=True)
        for t, m in enumerate(maps):
            m = np.asarray(m, np.uint8)
            rgb = np.repeat(((m > 0) & (m != 255)).astype(np.uint8)[..., None] * 255, 3, axis=2)
            Image.fromarray(rgb).save(img_dir / f"{t:05d}.jpg", quality=100)
            write_index_png(root / "Annotations" / resolution / name / f"{t:05d}.png", m)
    for y in years:
        d = root / "ImageSets" / y
        d.mkdir(parents=True, exist_ok=True)
        (d / "val.txt").write_text("".join(f"{n}\n" for n in sequences))
    return root


class SeeingPredictor:
    """Fake ImagePredictor for tests: it thresholds the synthetic frame (objects are white) and
    answers a box with the white pixels inside it, clicks with the white 4-connected
    components under positive clicks minus those under negative clicks. Records its calls."""

    supports_mask_input = True

    def __init__(self):
        self.calls: List[Dict[str, object]] = []
        self.model = self

    def set_image(self, image):
        self.white = np.asarray(image)[..., 0] > 127
        cv2 = __import__("cv2")
        n, self.labels = cv2.connectedComponents(self.white.astype(np.uint8), connectivity=4)
        return self

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True):
        from types import SimpleNamespace

        self.calls.append(dict(points=points, labels=labels, box=box, mask_input=mask_input, multimask=multimask))
        m = np.zeros_like(self.white)
        if box is not None:
            x0, y0, x1, y1 = [int(round(v)) for v in box]
            m[y0:y1 + 1, x0:x1 + 1] = self.white[y0:y1 + 1, x0:x1 + 1]
        for (x, y), lab in zip(points or [], labels or []):
            comp = self.labels[int(y), int(x)]
            if comp == 0:
                continue
            if lab == 1:
                m |= self.labels == comp
            else:
                m &= self.labels != comp
        k = 3 if multimask else 1
        masks = np.stack([m] * k)
        return SimpleNamespace(masks=masks, scores=np.linspace(0.9, 0.5, k),
                               low_res_logits=np.zeros((k, 256, 256), np.float32))
