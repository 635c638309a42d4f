"""samkit.io.outputs.OutputSet: a run's files are published as one set; failures change nothing;
files samkit did not list are never touched."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from samkit.errors import SamkitError
from samkit.io.outputs import STATE_DIR, OutputSet, safe_key


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def write(outs, files):
    for name, text in files.items():
        outs.path(name).write_text(text)


def test_commit_publishes_and_removes_only_the_previous_runs_leftovers(tmp_path):
    out = tmp_path / "out"
    with OutputSet(out, "segment-a") as outs:
        write(outs, {"a_000.png": "1", "a_001.png": "2", "sub/x.txt": "3"})
        assert not (out / "a_000.png").exists()  # nothing visible before the set is complete
    with OutputSet(out, "segment-b") as outs:
        write(outs, {"b_000.png": "other key"})
    (out / "mine.txt").write_text("user")
    with OutputSet(out, "segment-a") as outs:
        write(outs, {"a_000.png": "new"})
    assert tree(out) == {"a_000.png": "new", "b_000.png": "other key", "mine.txt": "user",
                         f"{STATE_DIR}/segment-a.json": (out / STATE_DIR / "segment-a.json").read_text(),
                         f"{STATE_DIR}/segment-b.json": (out / STATE_DIR / "segment-b.json").read_text()}
    assert json.loads((out / STATE_DIR / "segment-a.json").read_text())["files"] == ["a_000.png"]
    assert not (out / "sub").exists()  # emptied by the cleanup


def test_failure_changes_nothing_and_leaves_no_staging(tmp_path):
    out = tmp_path / "out"
    with OutputSet(out, "k") as outs:
        write(outs, {"f.txt": "good"})
    before = tree(out)
    with pytest.raises(ValueError):
        with OutputSet(out, "k") as outs:
            write(outs, {"f.txt": "half", "g.txt": "new"})
            raise ValueError("a later format failed")
    assert tree(out) == before
    assert os.listdir(out / STATE_DIR) == ["k.json"]


def test_failure_in_a_new_folder_removes_what_it_created(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with OutputSet(tmp_path / "a" / "b", "k") as outs:
            write(outs, {"f.txt": "x"})
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_a_disk_error_names_the_folder_not_the_staging_file(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SamkitError, match="No space left") as info:
        with OutputSet(out, "k") as outs:
            raise OSError(28, "No space left on device", str(outs.path("f.txt")))
    assert str(out) in str(info.value) and STATE_DIR not in str(info.value) and "Fix:" in str(info.value)


def test_manifest_cannot_reach_outside_the_folder(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "precious.txt").write_text("keep")
    (out / STATE_DIR).mkdir(parents=True)
    (out / STATE_DIR / "k.json").write_text(json.dumps({"files": ["../precious.txt", str(tmp_path / "precious.txt")]}))
    with OutputSet(out, "k") as outs:
        write(outs, {"f.txt": "x"})
    assert (tmp_path / "precious.txt").read_text() == "keep"


def test_keep_partial_and_its_removal(tmp_path):
    out = tmp_path / "out"
    with OutputSet(out, "track") as outs:
        write(outs, {"masks/0.png": "good"})
    outs = OutputSet(out, "track").open()
    write(outs, {"masks/0.png": "partial", "tracks.jsonl": "line"})
    folder = outs.keep_partial("frame 1 is damaged")
    assert folder == out / "track-partial"
    assert tree(folder)["masks/0.png"] == "partial" and "damaged" in tree(folder)["partial.json"]
    assert (out / "masks/0.png").read_text() == "good"
    assert [p for p in os.listdir(out / STATE_DIR)] == ["track.json"]  # no staging left
    (folder / "user.txt").write_text("mine")
    with OutputSet(out, "track") as outs:
        write(outs, {"masks/0.png": "new"})
    assert tree(folder) == {"user.txt": "mine"}  # samkit's partial files gone, the user's file kept


@pytest.mark.skipif(os.name != "posix", reason="liveness of a pid is only probed on POSIX")
def test_staging_of_a_dead_process_is_swept(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    outs = OutputSet(out, "k").open()
    stale = outs.staging.parent / outs.staging.name.replace(f"-{os.getpid()}-", f"-{dead}-")
    stale.mkdir()
    (stale / "junk").write_text("x")
    outs.discard()
    OutputSet(out, "k").open().discard()
    assert not stale.exists()


def test_safe_key():
    assert safe_key("segment-photo (1)") == "segment-photo (1)"
    assert safe_key("a/b") != safe_key("a_b") and "/" not in safe_key("a/b")
    assert not safe_key(".hidden").startswith(".")
