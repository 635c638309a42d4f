"""samkit label (samkit.label): the local worker pool gives the serial run's outputs, a killed job
resumes with every image exactly once, corrupt images land in failures.jsonl, a job that makes
no progress stops, and the command line's inputs, formats and errors. The Ray engine is tested
in tests/test_label_ray.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _label_models import PPS, coco, write_boxes, write_images
from samkit.cli.main import main
from samkit.errors import InputError, MissingExtraError
from samkit.label import label_dataset

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
NAMES = ["bad.png", "im0.png", "im1.png", "im2.png", "sub/im3.png"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("label")
    return write_images(root / "src"), write_boxes(root / "boxes.json")


@pytest.fixture(scope="module")
def serial_tiny(data, tmp_path_factory):
    """The reference: the random-weight tiny SAM in everything mode, in this process."""
    from _label_models import slow_tiny_sam

    out = tmp_path_factory.mktemp("serial_tiny")
    summary = label_dataset(data[0], out, slow_tiny_sam, engine="serial", progress=False, **PPS)
    return out, summary


@pytest.fixture(scope="module")
def serial_classic(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial_classic")
    summary = label_dataset(data[0], out, "classic", mode="boxes", boxes=data[1], engine="serial", progress=False)
    return out, summary


def _failures(out: Path) -> list:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def test_serial_reference_outputs(serial_tiny, serial_classic):
    out, summary = serial_tiny
    doc = coco(out)
    assert [im["file_name"] for im in doc["images"]] == NAMES[1:]
    assert [im["id"] for im in doc["images"]] == [2, 3, 4, 5]  # SRC order, bad.png is image 1
    assert summary["masks"] == len(doc["annotations"]) > 0
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))
    assert doc["categories"] == [{"id": 1, "name": "object"}]
    assert (summary["images"], summary["labelled"], summary["failed"]) == (5, 4, 1)
    fails = _failures(out)
    assert [f["file_name"] for f in fails] == ["bad.png"] and "not an image" in fails[0]["reason"]
    out, summary = serial_classic
    doc = coco(out)
    assert doc["categories"] == [{"id": 3, "name": "car"}]
    assert len(doc["annotations"]) == 4 and {a["category_id"] for a in doc["annotations"]} == {3}
    assert all(a["prompt_box"] and a["source_id"] >= 100 for a in doc["annotations"])


def test_local_pool_matches_serial_run(data, serial_classic, tmp_path):
    """Two worker processes, one image per batch: the same COCO document and failures."""
    summary = label_dataset(data[0], tmp_path, "classic", mode="boxes", boxes=data[1], engine="local",
                            num_workers=2, batch_size=1, progress=False)
    assert summary["workers"] == 2 and summary["processed_this_run"] == 5
    assert coco(tmp_path) == coco(serial_classic[0])
    assert _failures(tmp_path) == _failures(serial_classic[0])


_KILLED_JOB = """
import sys
sys.path[:0] = [{root!r}, {tests!r}]
from _label_models import PPS, slow_tiny_sam
from samkit.label import label_dataset
if __name__ == "__main__":
    label_dataset({src!r}, {out!r}, slow_tiny_sam, engine="serial", batch_size=1, progress=False, **PPS)
"""


def _records(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in (out / "shards").glob("*/*.jsonl"))


def test_killed_job_resumes_with_every_image_once(data, serial_tiny, tmp_path):
    """SIGKILL the job after 2 images, rerun: the rest is labelled, nothing twice, and the result
    is the uninterrupted run's."""
    out = tmp_path / "out"
    script = _KILLED_JOB.format(root=str(ROOT), tests=str(TESTS), src=str(data[0]), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not (out / "shards").is_dir() or _records(out) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the job wrote no results"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = _records(out)
    assert proc.returncode == -signal.SIGKILL and 2 <= done < 5
    assert not (out / "coco.json").exists()
    from _label_models import slow_tiny_sam

    summary = label_dataset(data[0], out, slow_tiny_sam, engine="serial", progress=False, **PPS)
    assert summary["resumed"] == done and summary["processed_this_run"] == 5 - done
    assert _records(out) == 5
    doc = coco(out)
    assert doc == coco(serial_tiny[0])
    assert sorted(im["file_name"] for im in doc["images"]) == NAMES[1:]
    again = label_dataset(data[0], out, slow_tiny_sam, engine="serial", progress=False, **PPS)
    assert again["processed_this_run"] == 0 and _records(out) == 5 and coco(out) == doc


def test_job_without_progress_stops(data, tmp_path):
    """A worker that never finishes its batch: StallError after --stall-timeout, no hang."""
    from _label_models import hang
    from samkit.label.engines import StallError

    t0 = time.monotonic()
    with pytest.raises(StallError, match="no image finished in the last 2 s.*--stall-timeout"):
        label_dataset(data[0], tmp_path, hang, mode="boxes", boxes=data[1], engine="local", num_workers=1,
                      stall_timeout=2, progress=False)
    assert time.monotonic() - t0 < 120
    assert not (tmp_path / "coco.json").exists()


# ----------------------------------------------------------------------------- command line
def _cli(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_boxes_formats_and_resume(data, serial_classic, tmp_path, capsys, empty_cache):
    args = ["label", data[0], "--out", tmp_path, "--model", "classic", "--mode", "boxes", "--boxes", data[1],
            "--engine", "serial", "-f", "coco,jsonl", "-f", "parquet", "-q"]
    code, _, err = _cli(capsys, *args)
    assert code == 6, err  # finished, one image failed
    assert "4 of 5 image(s) labelled" in err and "failed: bad.png" in err
    assert coco(tmp_path) == coco(serial_classic[0])
    lines = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [x["file_name"] for x in lines] == NAMES[1:] and all(len(x["annotations"]) == 1 for x in lines)
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "labels.parquet").to_pydict()
    assert table["category"] == ["car"] * 4 and table["annotation_id"] == [1, 2, 3, 4]
    code, out, err = _cli(capsys, *args, "--json")
    assert code == 6 and "resuming: 4 of 5 image(s) already labelled, 1 unreadable" in err
    assert json.loads(out)["processed_this_run"] == 0


def test_cli_bad_input(data, tmp_path, capsys, empty_cache):
    base = ["label", data[0], "--out", tmp_path]
    cases = [
        (base + ["--model", "classic"], "--mode everything needs a neural model"),
        (base + ["--model", "classic", "--mode", "boxes"], "--mode boxes needs the boxes"),
        (base + ["--model", "classic", "--boxes", data[1]], "--boxes applies to --mode boxes"),
        (base + ["--model", "classic", "--mode", "text"], "--mode text needs the classes"),
        (base + ["--model", "classic", "-f", "yolo"], "unknown output format 'yolo'"),
        (["label", tmp_path / "nothing", "--out", tmp_path, "--model", "classic"], "does not exist"),
        (["label", str(data[0]) + "/*.jpg", "--out", tmp_path, "--model", "classic"], "matches no image files"),
        (base + ["--model", "classic", "--mode", "boxes", "--boxes", data[1], "--ray-address", "auto"],
         "--ray-address apply to --engine ray"),
    ]
    for args, message in cases:
        code, _, err = _cli(capsys, *args)
        assert code == 2 and message in err and "Fix:" in err, (args, err)
        assert "Traceback" not in err


def test_missing_extras_are_named_before_any_work(data, tmp_path, monkeypatch, capsys, empty_cache):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, err = _cli(capsys, "label", data[0], "--out", tmp_path, "--model", "classic", "--mode", "boxes",
                        "--boxes", data[1], "--engine", "serial", "-f", "parquet", "-q")
    assert code == 5 and "samkit[parquet]" in err
    assert not (tmp_path / "shards").exists()  # refused before any work
    monkeypatch.setitem(sys.modules, "ray", None)
    code, _, err = _cli(capsys, "label", data[0], "--out", tmp_path, "--model", "classic", "--mode", "boxes",
                        "--boxes", data[1], "--engine", "ray")
    assert code == 5 and "samkit[ray]" in err and "--engine ray" in err


# ----------------------------------------------------------------------------- inputs
def test_sources_glob_list_coco_and_uris(data, tmp_path, monkeypatch):
    from samkit.label.sources import list_items

    src = data[0]
    folder = list_items(str(src))
    assert [it.name for it in folder] == NAMES and [it.image_id for it in folder] == [1, 2, 3, 4, 5]
    glob = list_items(str(src) + "/**/im*.png")
    assert [it.name for it in glob] == NAMES[1:]
    (tmp_path / "list.txt").write_text(f"# frames\n{src}/im1.png\n\n{src}/sub/im3.png\n")
    assert [Path(it.uri).name for it in list_items(str(tmp_path / "list.txt"))] == ["im1.png", "im3.png"]
    (tmp_path / "images.json").write_text(json.dumps({"images": [{"id": 7, "file_name": "im2.png"}]}))
    items = list_items(str(tmp_path / "images.json"), image_root=str(src))
    assert [(it.name, it.image_id, it.uri) for it in items] == [("im2.png", 7, str(src / "im2.png"))]
    import fsspec  # samkit[label] (make test installs it)

    fs = fsspec.filesystem("memory")
    fs.pipe("/lbl/a.png", (src / "im0.png").read_bytes())
    fs.pipe("/lbl/b.txt", b"not an image")
    uris = list_items("memory://lbl/")
    assert [(it.name, it.uri) for it in uris] == [("a.png", "memory:///lbl/a.png")]
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(MissingExtraError, match=r"samkit\[remote\]"):
        list_items("s3://bucket/frames/")


def test_uri_images_are_labelled(data, serial_classic, tmp_path):
    """An fsspec list of URIs gives the same masks as the files."""
    import fsspec  # samkit[label] (make test installs it)

    fs = fsspec.filesystem("memory")
    for name in NAMES:
        fs.pipe(f"/lbl2/{name}", (data[0] / name).read_bytes())
    summary = label_dataset("memory://lbl2/", tmp_path, "classic", mode="boxes", boxes=data[1], engine="serial",
                            progress=False)
    assert summary["labelled"] == 4
    assert coco(tmp_path)["annotations"] == coco(serial_classic[0])["annotations"]


def test_rle_strings_match_pycocotools():
    import pycocotools.mask as mask_api

    from samkit.label.worker import rle_string
    from samkit.masks import Masks

    rng = np.random.default_rng(0)
    data = rng.random((3, 23, 31)) > 0.6
    data[1] = False
    data[2, 5:20, 3:30] = True
    ours = Masks(data, scores=np.ones(3)).to_coco_rle(compressed=False)
    for k in range(3):
        ref = mask_api.encode(np.asfortranarray(data[k].astype(np.uint8)))
        assert rle_string(ours[k]["counts"]) == ref["counts"].decode()


def test_ray_actor_sizing():
    """2 CPUs, 2 actors: 0.5 CPU each (Ray keeps the rest for its read tasks); a request that
    leaves no CPU beside the actors is refused instead of hanging."""
    from samkit.label.ray_engine import actor_resources

    assert actor_resources(2, 0, 2, None) == (2, 0.5, 0.0)
    assert actor_resources(16, 0, None, None) == (4, 3.75, 0.0)
    assert actor_resources(8, 2, None, None, 1.0) == (2, 1.0, 1.0)
    with pytest.raises(InputError, match="leave no CPU for Ray's own tasks"):
        actor_resources(2, 0, 2, 1.0)
    with pytest.raises(InputError, match="need 2 GPU"):
        actor_resources(8, 1, 2, None, 1.0)


def test_text_mode_and_named_masks_get_the_classes(data, tmp_path):
    """--mode text (classic + the synthetic CLIP) and everything mode with --classes: COCO
    categories are the classes and every annotation carries its class."""
    from _label_models import synthetic_clip, tiny_sam

    label_dataset(data[0], tmp_path / "text", "classic", mode="text", classes="red,blue", clip=synthetic_clip,
                  engine="serial", progress=False)
    doc = coco(tmp_path / "text")
    assert doc["categories"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    assert len(doc["annotations"]) >= 3 and {(a["category_id"], a["label"]) for a in doc["annotations"]} == {(1, "red")}
    label_dataset(data[0] / "im0.png", tmp_path / "named", tiny_sam, classes=["red", "blue"], clip=synthetic_clip,
                  engine="serial", progress=False, **PPS)
    anns = coco(tmp_path / "named")["annotations"]
    assert anns and all(a["category_id"] in (1, 2) and a["label"] in ("red", "blue") for a in anns)


@pytest.mark.slow
def test_dead_worker_is_replaced_and_its_images_retried(data, serial_tiny, tmp_path, monkeypatch):
    """A worker process that dies mid-job: a new pool labels its images; nothing is lost."""
    from _label_models import crashing_tiny_sam

    monkeypatch.setenv("SAMKIT_TEST_CRASH_ONCE", str(tmp_path / "crashed"))
    summary = label_dataset(data[0], tmp_path / "out", crashing_tiny_sam, engine="local", num_workers=1,
                            batch_size=2, progress=False, **PPS)
    assert (tmp_path / "crashed").exists() and (summary["labelled"], summary["failed"]) == (4, 1)
    assert coco(tmp_path / "out")["annotations"] == coco(serial_tiny[0])["annotations"]


@pytest.mark.slow
def test_workers_that_never_start_stop_the_job(data, tmp_path):
    """Worker processes that die before any image (here the model kills them; in a script
    without the __main__ guard, spawning does): a clear error after a few restarts."""
    from _label_models import die
    from samkit.errors import SamkitError

    with pytest.raises(SamkitError, match=r"died 3 times before finishing any image.*__main__"):
        label_dataset(data[0], tmp_path, die, mode="boxes", boxes=data[1], engine="local", num_workers=1,
                      progress=False)
