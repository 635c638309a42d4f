"""Helpers of the labelling tests (tests/test_label*.py): model factories importable at module
level (the local engine's worker processes and Ray's actors build the same model from them) and
a small folder of images with one corrupt file."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

PPS = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)  # masks from random weights


def tiny_sam():
    """The random-weight reduced SAM of ``tests/tiny.py`` (128-pixel frame), eval mode."""
    from tiny import tiny_sam as build

    return build(seed=0, image_size=128)


def hang():
    """A model that never finishes loading (the no-progress timeout tests); the process exits
    when its parent (the local pool's driver, Ray's raylet) is gone, so no test leaves it behind."""
    import os

    parent, t0 = os.getppid(), time.monotonic()
    while os.getppid() == parent and time.monotonic() - t0 < 600:
        time.sleep(0.2)
    os._exit(0)


def write_images(folder: Path, n: int = 4) -> Path:
    """``n`` small PNGs (H x W = 40 x 56, a coloured rectangle moving with the index), a
    sub-folder, and ``bad.png`` (not an image) in ``folder``; returns the folder."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    for i in range(n):
        a = np.full((40, 56, 3), 20 + 10 * i, np.uint8)
        a[6 + i:26 + i, 5 + 2 * i:35 + i] = (220, 40 + 30 * i, 60)
        Image.fromarray(a).save(folder / ("sub" if i == n - 1 else "") / f"im{i}.png")
    (folder / "bad.png").write_bytes(b"this is not a png")
    return folder


def write_boxes(path: Path, n: int = 4) -> Path:
    """A COCO detection file with one box per image of ``write_images`` (category 3, "car")."""
    names = [f"im{i}.png" if i < n - 1 else f"sub/im{i}.png" for i in range(n)]
    doc = {"images": [{"id": 10 + i, "file_name": nm} for i, nm in enumerate(names)],
           "annotations": [{"id": 100 + i, "image_id": 10 + i, "bbox": [4 + 2 * i, 5 + i, 32, 22], "category_id": 3}
                           for i in range(n)],
           "categories": [{"id": 3, "name": "car"}]}
    path.write_text(json.dumps(doc))
    return path


def coco(out: Path) -> dict:
    """The merged COCO document of a job, without its ``info`` (which names the settings)."""
    doc = json.loads((Path(out) / "coco.json").read_text())
    doc.pop("info")
    return doc


def slow_tiny_sam():
    """``tiny_sam`` whose image encoder takes 0.2 s more per image (the kill test needs a job
    that is still running after a few images); the masks are those of ``tiny_sam``."""
    model = tiny_sam()
    model.image_encoder.register_forward_hook(lambda *args: time.sleep(0.2))
    return model


def synthetic_clip():
    """The DenseClip test double of ``_synthetic_clip`` ("red", "blue", "ground")."""
    from _synthetic_clip import SyntheticClip

    return SyntheticClip()


def crashing_tiny_sam():
    """``tiny_sam`` whose process dies (``os._exit``) at its second image when the file named by
    $SAMKIT_TEST_CRASH_ONCE does not exist yet (it is created first, so only one worker dies)."""
    import os

    model = tiny_sam()
    calls = []

    def hook(*args):
        calls.append(1)
        marker = os.environ.get("SAMKIT_TEST_CRASH_ONCE")
        if marker and len(calls) == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    model.image_encoder.register_forward_hook(hook)
    return model


def die():
    """A model whose loading kills the worker process (workers that can never start)."""
    import os

    os._exit(3)
