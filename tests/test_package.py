"""Package-level guarantees: light import without extras, no torchvision, torch-level batch API."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_imports_without_optional_extras():
    code = (
        "import sys\n"
        "for m in ('cv2', 'typer', 'rich', 'pycocotools', 'av', 'onnxruntime', 'supervision', 'torchvision'):\n"
        "    sys.modules[m] = None  # makes any import of it fail\n"
        "import samkit\n"
        "from samkit import load_model, ImagePredictor, Masks, list_models\n"
        "assert 'sam_vit_b' in list_models()\n"
        "from samkit.models.sam import build_sam_vit_b\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_no_torchvision_anywhere_in_samkit():
    pattern = re.compile(r"^\s*(import|from)\s+torchvision\b", re.M)
    offenders = [str(p) for p in (ROOT / "samkit").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_torch_level_batch_of_images_equals_single_images():
    from tiny import tiny_sam

    model = tiny_sam()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (90, 120, 3), dtype=np.uint8), rng.integers(0, 255, (120, 70, 3), dtype=np.uint8)]
    xs, ts = zip(*(model.preprocess(im) for im in images))
    x = torch.cat(xs)
    pts = torch.stack([ts[0].coords_to_frame(torch.tensor([[30.0, 40.0]])),
                       ts[1].coords_to_frame(torch.tensor([[50.0, 20.0]]))])
    labels = torch.ones(2, 1, dtype=torch.int32)
    with torch.inference_mode():
        batched = model(x, pts, labels, multimask=True)
        for i in range(2):
            single = model(xs[i], pts[i : i + 1], labels[i : i + 1], multimask=True)
            assert torch.allclose(batched.low_res[i], single.low_res[0], atol=1e-5)
            assert torch.allclose(batched.iou[i], single.iou[0], atol=1e-6)
    assert batched.low_res.shape == (2, 3, 32, 32)
