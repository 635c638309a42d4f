"""`samkit track` on a tiny frame folder with the classic engine: prompts checked before any
output exists, one --format parser, reruns published as a set, a failure mid-way keeping the
finished frames in OUT/track-partial/ and the previous output untouched."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("typer")
pytest.importorskip("cv2")

from samkit.cli.main import main  # noqa: E402
from samkit.errors import VideoError  # noqa: E402


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")


@pytest.fixture
def frames(tmp_path):
    """5 frames of 48 x 64: a yellow square moving right on a textured background."""
    from PIL import Image

    rng = np.random.default_rng(0)
    bg = (rng.random((48, 64, 3)) * 60 + 40).astype(np.uint8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        f = bg.copy()
        f[12:32, 10 + 2 * i:30 + 2 * i] = [230, 200, 60]
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    return folder


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_comma_separated_formats(capsys, frames, tmp_path):
    out = tmp_path / "out"
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--model", "classic", "--out", out,
                     "--format", "png,coco")
    assert rc == 0, err
    assert len(list((out / "masks").glob("*_obj1.png"))) == 5
    lines = [json.loads(x) for x in (out / "tracks.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(5))


def test_unknown_format_is_the_shared_error(capsys, frames, tmp_path):
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--out", tmp_path / "o", "-f", "png,gif")
    assert rc == 2 and "unknown output format 'gif'" in error_line(err) and "png, coco, overlay" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("prompt,words", [
    (["--point", "9,20,22,1"], ["frame 9", "5 frames"]),
    (["--point", "0,200,22,1"], ["outside", "64x48"]),
    (["--box", "0,10,10,70,30,1"], ["box", "outside"]),
    (["--point", "0,20,22"], ["FRAME,X,Y,OBJ"]),
    ([], ["no prompt"]),
])
def test_prompts_are_checked_before_outputs_and_model(capsys, frames, tmp_path, monkeypatch, prompt, words):
    import samkit.registry

    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: pytest.fail("model loaded before the check"))
    out = tmp_path / "out"
    rc, _, err = run(capsys, "track", frames, *prompt, "--model", "classic", "--out", out)
    assert rc == 2
    line = error_line(err)
    assert "Fix:" in line and all(w in line for w in words), line
    assert not out.exists()


def test_rerun_replaces_the_previous_set(capsys, frames, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--model", "classic", "--out", out,
                     "-f", "png", "-f", "coco")
    assert rc == 0, err
    assert len(list((out / "masks").iterdir())) == 5
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--model", "classic", "--out", out,
                     "--max-frames", "2")
    assert rc == 0, err
    assert sorted(files(out)) == [".samkit/track.json", "masks/00000_obj1.png", "masks/00001_obj1.png",
                                  "notes.txt"]


def _fail_after(monkeypatch, n):
    """The tracker yields ``n`` frames, then the video fails (a damaged frame)."""
    from samkit.video import VideoTracker

    original = VideoTracker.propagate

    def propagate(self, session, *a, **k):
        for i, item in enumerate(original(self, session, *a, **k)):
            if i == n:
                raise VideoError(f"frame {i} cannot be read: damaged. Fix: replace the damaged file.")
            yield item

    monkeypatch.setattr(VideoTracker, "propagate", propagate)


def test_failure_mid_way_keeps_finished_frames_and_the_previous_run(capsys, frames, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["track", frames, "--point", "0,20,22,1", "--model", "classic", "--out", out, "--format", "png,coco"]
    rc, _, err = run(capsys, *args)
    assert rc == 0, err
    before = files(out)
    with monkeypatch.context() as m:
        _fail_after(m, 3)
        rc, _, err = run(capsys, *args)
    assert rc == 2
    line = error_line(err)
    partial = out / "track-partial"
    assert "frame 3 cannot be read" in line and str(partial) in line and "3 finished frame(s)" in line
    assert files(out) == {**before, **{f"track-partial/{k}": v for k, v in files(partial).items()}}
    assert sorted(files(partial)) == ["masks/00000_obj1.png", "masks/00001_obj1.png", "masks/00002_obj1.png",
                                      "partial.json", "tracks.jsonl"]
    assert len((partial / "tracks.jsonl").read_text().splitlines()) == 3
    assert "frame 3" in json.loads((partial / "partial.json").read_text())["reason"]
    rc, _, err = run(capsys, *args)  # the next good run removes the partial folder
    assert rc == 0, err
    assert files(out) == before and not partial.exists()


def test_failure_on_the_first_frame_changes_nothing(capsys, frames, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _fail_after(monkeypatch, 0)
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--model", "classic", "--out", out)
    assert rc == 2 and "frame 0 cannot be read" in error_line(err) and "partial" not in err
    assert not out.exists()


def test_help_usage_and_formats(capsys):
    rc, out, _ = run(capsys, "track", "--help")
    assert rc == 0 and "Usage: samkit track [OPTIONS] VIDEO" in out
    assert "track-partial" in " ".join(out.split())


def test_reverse_writes_each_frame_once(capsys, frames, tmp_path):
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "track", frames, "--point", "2,24,22,1", "--model", "classic", "--out", out,
                          "--format", "coco", "--reverse", "--json")
    assert rc == 0, err
    lines = [json.loads(x)["frame"] for x in (out / "tracks.jsonl").read_text().splitlines()]
    assert lines == [2, 3, 4, 1, 0]  # forward from the prompt, then backward; frame 2 once
    assert json.loads(stdout)["frames"] == 5


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_object_batch_bad_value_is_refused_before_anything(capsys, frames, tmp_path, monkeypatch, value):
    import samkit.registry

    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: pytest.fail("model loaded before the check"))
    out = tmp_path / "out"
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--model", "classic", "--out", out,
                     "--object-batch", value)
    assert rc == 2
    line = error_line(err)
    assert "--object-batch" in line and repr(value) in line and "Fix: pass e.g. --object-batch 8" in line, line
    assert not out.exists()


@pytest.mark.parametrize("args, expected", [([], 8), (["--object-batch", "1"], 1), (["--object-batch", "3"], 3)])
def test_object_batch_reaches_the_tracker(capsys, frames, tmp_path, monkeypatch, args, expected):
    import samkit.video

    seen = []
    real = samkit.video.VideoTracker

    class Spy(real):
        def __init__(self, model, **kw):
            seen.append(kw.get("object_batch"))
            super().__init__(model, **kw)

    monkeypatch.setattr(samkit.video, "VideoTracker", Spy)
    out = tmp_path / "out"
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--model", "classic", "--out", out, *args)
    assert rc == 0, err
    assert seen == [expected] and len(list((out / "masks").glob("*_obj1.png"))) == 5


def test_object_batch_is_refused_for_an_export_folder(capsys, frames, tmp_path):
    folder = tmp_path / "export"  # a folder that is no model name: taken as an export folder
    folder.mkdir()
    rc, _, err = run(capsys, "track", frames, "--point", "0,20,22,1", "--model", folder, "--out", tmp_path / "o",
                     "--object-batch", "4")
    assert rc == 2 and "--object-batch" in error_line(err) and "export folder" in err
