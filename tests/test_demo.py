"""The README's demo path end to end: the exact ``samkit segment`` call of ``make demo`` (read
from the Makefile), run as ``python -m samkit`` in a subprocess with an empty weights cache,
must write masks that decode to the truck."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("typer")
pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[1]


def makefile_vars() -> dict:
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^([A-Z_]+)\s*:?=\s*(.*?)\s*$", text, flags=re.M))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run the demo command once: (completed process, output folder, box, point)."""
    from samkit.io import example_image_path

    v = makefile_vars()
    image = example_image_path()
    assert (ROOT / v["DEMO_IMAGE"]).resolve() == image.resolve(), "make demo must use the bundled example image"
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    env = dict(os.environ, SAMKIT_HOME=str(tmp / "empty_cache"), SAMKIT_OFFLINE="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "samkit", "segment", str(image), "--box", v["DEMO_BOX"], "--point", v["DEMO_POINT"],
           "--out", str(out), "--format", "png", "--format", "coco,json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    box = [float(x) for x in v["DEMO_BOX"].split(",")]
    point = [float(x) for x in v["DEMO_POINT"].split(",")]
    return proc, out, box, point


def test_demo_command_succeeds_offline(demo):
    proc, out, _, _ = demo
    assert proc.returncode == 0, proc.stderr
    assert "model: classic" in proc.stderr  # empty cache -> the offline default, announced
    assert "Traceback" not in proc.stderr


def test_demo_png_is_the_truck(demo):
    from PIL import Image

    proc, out, box, point = demo
    best = np.asarray(Image.open(out / "truck_000.png"))
    assert best.shape == (267, 400) and set(np.unique(best)) <= {0, 255}
    mask = best > 0
    x0, y0, x1, y1 = box
    box_area = (x1 - x0) * (y1 - y0)
    assert 0.4 * box_area < mask.sum() < 1.0 * box_area, "the truck fills a large part of its box"
    ys, xs = np.nonzero(mask)
    assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2 and ys.min() >= y0 - 2 and ys.max() <= y1 + 2
    assert mask[int(point[1]), int(point[0])], "the clicked point is inside the mask"
    index = np.asarray(Image.open(out / "truck_index.png"))
    assert index.shape == mask.shape and index.max() >= 1


def test_demo_coco_decodes_to_the_same_mask(demo):
    from PIL import Image

    from samkit.masks import Masks

    proc, out, _, _ = demo
    coco = json.loads((out / "truck_coco.json").read_text())
    assert coco["images"][0]["file_name"] == "truck.png"
    anns = coco["annotations"]
    assert len(anns) == 3 and all(a["image_id"] == 1 for a in anns)
    assert [a["score"] for a in anns] == sorted((a["score"] for a in anns), reverse=True)  # best first
    decoded = Masks.from_coco_rle([a["segmentation"] for a in anns])
    best = np.asarray(Image.open(out / "truck_000.png")) > 0
    assert decoded.masks[0].sum() > 0
    assert np.array_equal(decoded.masks[0], best)
    assert anns[0]["area"] == int(best.sum())


def test_demo_json_on_stdout(demo):
    proc, out, _, _ = demo
    doc = json.loads(proc.stdout)
    assert doc["model"] == "classic" and doc["count"] == 3
    assert set(doc["files"]) == {"png", "coco"}
    assert doc["masks"][0]["score"] >= doc["masks"][-1]["score"]


def test_demo_message_says_the_masks_are_sorted():
    """`make demo` and the README say truck_000.png is the best mask; segment sorts by score."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "sorted by score, best first" in recipe and "truck_000.png" in recipe
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "sorted by score, best first" in readme


def test_readme_quickstart_is_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```(?:bash|sh)?\n(.*?)```", quick, flags=re.S)
    assert block, "Quickstart has a code block"
    commands = [ln.strip() for ln in block[0].splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert commands == ["make demo", "make test"]
    targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), flags=re.M)
    assert "demo" in targets and "test" in targets


def test_readme_lists_every_model_with_its_licence():
    from samkit.specs import MODELS

    readme = (ROOT / "README.md").read_text()
    rows = {ln.split("|")[1].strip().strip("`"): ln for ln in readme.splitlines() if ln.startswith("| `")}
    for name, spec in MODELS.items():
        assert name in rows, f"README's model table misses {name}"
        assert str(spec.input_size if spec.neural else "any") in rows[name]
        if not spec.commercial_use:
            assert "non-commercial" in rows[name]
