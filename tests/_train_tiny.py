"""Training test doubles: tiny random models of every image family registered as samkit models
(``tiny_<family>`` and ``tiny_<family>_student``: the same reduced architecture, other seeds; the
official key layout of the family), their checkpoint files, and a synthetic data set of coloured
shapes with PNG masks."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from PIL import Image

from _tiny_families import FAMILIES, tiny_family

_MODULES = {"sam": "samkit.models.sam", "mobile_sam": "samkit.models.mobile_sam",
            "edge_sam": "samkit.models.edge_sam", "efficient_sam": "samkit.models.efficient_sam",
            "sam2": "samkit.models.sam2", "edgetam": "samkit.models.edgetam",
            "efficienttam": "samkit.models.efficienttam"}
_FORMATS = {"sam": "sam", "mobile_sam": "mobile_sam", "edge_sam": "edge_sam", "efficient_sam": "efficient_sam",
            "sam2": "sam2", "edgetam": "edgetam", "efficienttam": "efficienttam"}


def _build(family: str, seed: int):
    model = tiny_family(family, seed=seed)
    if family == "efficient_sam":  # as in the released model: negative clicks add nothing
        model.prompt_encoder.point_embeddings[0].weight.data.zero_()
    with torch.no_grad():  # confident masks (random heads give logits of about +-0.02, noise-like masks)
        for name, p in model.mask_decoder.named_parameters():
            if name.startswith("output_hypernetworks_mlps.") and ".layers.2." in name:
                p.mul_(100.0)
    return model


def register_all() -> Dict[str, str]:
    """Add ``tiny_<family>`` (seed 0) and ``tiny_<family>_student`` (seed 7) to the registry
    (idempotent, for this process). Returns {name: family}."""
    from samkit import families, specs
    from samkit.families import import_family

    names = {}
    for fam in FAMILIES:
        for suffix, seed in (("", 0), ("_student", 7)):
            name = f"tiny_{fam}{suffix}"
            spec = specs.ModelSpec(name=name, family=fam, module=_MODULES[fam], url=None, filename=f"{name}.pt",
                                   license="Apache-2.0", paper="test", checkpoint_format=_FORMATS[fam])
            specs.MODELS[name] = spec
            import_family(spec)
            families._BUILDERS[name] = functools.partial(_build, fam, seed)
            names[name] = fam
    return names


def write_checkpoint(name: str, path: Path) -> Path:
    """The official-layout file of registered model ``name`` (its random weights)."""
    from samkit.registry import build_model
    from samkit.specs import get_spec
    from samkit.train.layouts import save_official

    model = build_model(name)
    return save_official(model, get_spec(name), path)


def shapes_dataset(root: Path, n: int = 6, size=(48, 64), seed: int = 0, objects: int = 2) -> Path:
    """``root/images/img{i}.png`` + ``root/masks/img{i}.png`` (label maps): ``objects`` coloured
    rectangles / ellipses on a noisy background per image."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        img = (rng.random((h, w, 3)) * 60 + 30).astype(np.uint8)
        labels = np.zeros((h, w), dtype=np.uint8)
        for k in range(objects):
            cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
            ry, rx = rng.integers(5, h // 3), rng.integers(5, w // 3)
            if k % 2 == 0:
                m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
            else:
                m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            img[m] = rng.integers(120, 255, 3)
            labels[m] = k + 1
        Image.fromarray(img).save(root / "images" / f"img{i}.png")
        Image.fromarray(labels).save(root / "masks" / f"img{i}.png")
    return root
