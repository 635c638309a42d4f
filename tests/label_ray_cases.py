"""samkit label --engine ray: a Ray Data actor pool on a local ``ray.init(num_cpus=2)`` gives the
serial run's outputs; a job whose actors never start stops with the no-progress error. One
Ray instance for the module (starting Ray takes seconds); the slow classic test runs first.

Not collected by itself: ``test_label_ray.py`` runs this module in a pytest subprocess. A Ray
driver must not live in a test worker: the abandoned Ray Data job of the stall case keeps a
thread that loses the shut-down GCS, and Ray ends that process about a minute later."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from _label_models import PPS, coco, write_boxes, write_images
from samkit.label import label_dataset

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def ray_local():
    """``ray.init(num_cpus=2)``; its workers import samkit and the test models from this checkout."""
    import ray

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS.parent), str(TESTS), old) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("label_ray")
    return write_images(root / "src"), write_boxes(root / "boxes.json")


def _same_outputs(out: Path, ref: Path) -> None:
    assert coco(out) == coco(ref)
    assert (out / "failures.jsonl").read_text() == (ref / "failures.jsonl").read_text()
    assert json.loads((out / "failures.jsonl").read_text().splitlines()[0])["file_name"] == "bad.png"


@pytest.mark.slow
def test_ray_matches_serial_classic(ray_local, data, tmp_path):
    ref = tmp_path / "serial"
    label_dataset(data[0], ref, "classic", mode="boxes", boxes=data[1], engine="serial", progress=False)
    label_dataset(data[0], tmp_path / "ray", "classic", mode="boxes", boxes=data[1], engine="ray", num_workers=2,
                  batch_size=2, stall_timeout=300, progress=False)
    _same_outputs(tmp_path / "ray", ref)


# one test (one Ray instance even under pytest-xdist); Ray's executor thread of the abandoned
# stalled job complains when the module's Ray instance shuts down
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_ray_matches_serial_and_never_hangs(ray_local, data, tmp_path):
    """Random-weight tiny SAM, everything mode: 2 actors (0.5 CPU each), one image per batch,
    give the serial run's outputs. Then actors whose model never loads: StallError naming the
    pool and the cluster, no hang (last: the stuck actors go with the module's Ray instance)."""
    from _label_models import hang, tiny_sam
    from samkit.label.engines import StallError

    ref = label_dataset(data[0], tmp_path / "serial", tiny_sam, engine="serial", progress=False, **PPS)
    summary = label_dataset(data[0], tmp_path / "ray", tiny_sam, engine="ray", num_workers=2, batch_size=1,
                            stall_timeout=300, progress=False, **PPS)
    assert summary["engine"] == "ray" and summary["workers"] == 2
    assert (summary["labelled"], summary["failed"], summary["masks"]) == (4, 1, ref["masks"])
    _same_outputs(tmp_path / "ray", tmp_path / "serial")

    t0 = time.monotonic()
    with pytest.raises(StallError, match=r"no image finished in the last 3 s \(ray engine; 1 actor\(s\) x 1 CPU"):
        label_dataset(data[0], tmp_path / "stall", hang, mode="boxes", boxes=data[1], engine="ray", num_workers=1,
                      stall_timeout=3, progress=False)
    assert time.monotonic() - t0 < 120
