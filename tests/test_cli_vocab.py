"""`samkit segment --text`, `samkit everything --vocabulary` and `samkit track --text` with the
synthetic DenseClip (injected by replacing samkit.vocab.load_clip, the one place the CLI builds
its CLIP): labels in every output format, the names file, and the errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("typer")

from samkit.cli.main import main  # noqa: E402
from _synthetic_clip import SyntheticClip, two_squares  # noqa: E402


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    import samkit.vocab

    loaded = []

    def load_clip(name="clip_vit_b16", checkpoint=None, device="cpu", download=True, **options):
        loaded.append((name, checkpoint, download))
        return SyntheticClip()

    monkeypatch.setattr(samkit.vocab, "load_clip", load_clip)
    return loaded


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "squares.png"
    Image.fromarray(two_squares()[0]).save(path)
    return path


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err):
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


# ----------------------------------------------------------------------------- segment --text
def test_segment_text_writes_labels_in_every_format(capsys, image, tmp_path, env):
    from PIL import Image

    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "segment", image, "--text", "red", "--text", "blue", "--model", "classic",
                          "--clip-checkpoint", tmp_path / "ViT-B-16.pt", "--offline", "--out", out,
                          "--format", "png,coco,yolo,labelme,polygons,json")
    assert rc == 0, err
    assert env == [("clip_vit_b16", tmp_path / "ViT-B-16.pt", False)]
    doc = json.loads(stdout)
    assert doc["prompts"] == {"text": ["red", "blue"]} and doc["clip"] == "clip_vit_b16"
    assert [m["label"] for m in doc["masks"]] == ["red", "blue"] and all(m["label_score"] > 0.9 for m in doc["masks"])
    coco = json.loads((out / "squares_coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2]
    assert all(a["label_score"] > 0.9 for a in coco["annotations"])
    assert [line.split()[0] for line in (out / "squares.txt").read_text().splitlines()] == ["0", "1"]
    assert (out / "classes.txt").read_text() == "red\nblue\n"
    assert [s["label"] for s in json.loads((out / "squares.json").read_text())["shapes"]] == ["red", "blue"]
    assert [p["label"] for p in json.loads((out / "squares_polygons.json").read_text())["masks"]] == ["red", "blue"]
    _, red, blue = two_squares()
    assert iou(np.array(Image.open(out / "squares_000.png")) > 0, red) > 0.9
    assert "'red': 1 instance(s)" in err


def test_yolo_names_file_of_another_vocabulary_is_refused_before_any_work(capsys, image, tmp_path, env):
    out = tmp_path / "out"
    assert run(capsys, "segment", image, "--text", "red", "--model", "classic", "--out", out,
               "--format", "yolo")[0] == 0
    before = sorted(p.name for p in out.iterdir())
    env.clear()
    rc, _, err = run(capsys, "segment", image, "--text", "blue", "--model", "classic", "--out", out, "--format", "yolo")
    assert rc == 2 and "classes.txt lists other class names" in error_line(err) and env == []
    assert sorted(p.name for p in out.iterdir()) == before and (out / "classes.txt").read_text() == "red\n"
    # the same vocabulary again is fine, and a run without labels leaves classes.txt alone
    assert run(capsys, "segment", image, "--text", "red", "--model", "classic", "--out", out,
               "--format", "yolo")[0] == 0
    assert run(capsys, "segment", image, "--box", "10,10,60,60", "--model", "classic", "--out", out,
               "--format", "yolo", "--single")[0] == 0
    assert (out / "classes.txt").read_text() == "red\n"
    assert (out / "squares.txt").read_text().split()[0] == "0"


@pytest.mark.parametrize("extra, words", [
    (["--text", "red", "--point", "5,5"], ["--text cannot be combined with --point or --box"]),
    (["--text", "red", "--box", "0,0,9,9"], ["cannot be combined"]),
    (["--text", "  "], ["text prompt is empty"]),
    (["--text", "red", "--text", "Red"], ["given twice"]),
    (["--text", "red", "--clip", "sam_vit_b"], ["--clip sam_vit_b is not a CLIP model"]),
    (["--text", "red", "--text-threshold", "1"], ["threshold must be in [0, 1)"]),
])
def test_segment_text_errors(capsys, image, tmp_path, extra, words):
    rc, _, err = run(capsys, "segment", image, "--model", "classic", "--out", tmp_path / "o", *extra)
    line = error_line(err)
    assert rc == 2 and all(w in line for w in words) and "Fix:" in line
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- everything --vocabulary
@pytest.fixture
def color_model(monkeypatch):
    import samkit.registry
    from test_auto import ColorRegion

    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: ColorRegion())


def test_everything_vocabulary_labels_coco_yolo_labelme_json(capsys, image, tmp_path, color_model, env):
    vocab = tmp_path / "colours.txt"
    vocab.write_text("# two colours\nred\nblue\n")
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "everything", image, "--model", "sam_vit_b", "--vocabulary", vocab, "--quiet",
                          "--points-per-side", "8", "--stability-thresh", "0.85", "--out", out, "--json",
                          "--format", "coco,yolo,labelme")
    assert rc == 0, err
    recs = json.loads(stdout)["masks"]
    coco = json.loads((out / "squares_everything_coco.json").read_text())
    assert coco["categories"] == [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    ids = {1: "red", 2: "blue"}
    assert [ids[a["category_id"]] for a in coco["annotations"]] == [r["label"] for r in recs]
    assert all(0 <= a["label_score"] <= 1 for a in coco["annotations"])
    _, red, blue = two_squares()
    from samkit.ops import coco_to_mask

    found = {}
    for a in coco["annotations"]:
        m = np.asarray(coco_to_mask(a["segmentation"]), bool)
        for name, gt in (("red", red), ("blue", blue)):
            if iou(m, gt) > 0.85:
                found[name] = ids[a["category_id"]]
    assert found == {"red": "red", "blue": "blue"}
    assert (out / "classes.txt").read_text() == "red\nblue\n"
    classes = [int(line.split()[0]) for line in (out / "squares_everything.txt").read_text().splitlines()]
    assert set(classes) <= {0, 1}
    shapes = json.loads((out / "squares_everything.json").read_text())["shapes"]
    assert {s["label"] for s in shapes} <= {"red", "blue"} and len(shapes) >= 2


def test_everything_builtin_vocabulary_uses_official_ids(capsys, image, tmp_path, color_model):
    out = tmp_path / "out"
    rc, _, err = run(capsys, "everything", image, "--model", "sam_vit_b", "--vocabulary", "coco", "--quiet",
                     "--points-per-side", "4", "--stability-thresh", "0.85", "--out", out)
    assert rc == 0, err
    coco = json.loads((out / "squares_everything_coco.json").read_text())
    assert len(coco["categories"]) == 80 and coco["categories"][11] == {"id": 13, "name": "stop sign"}
    assert {a["category_id"] for a in coco["annotations"]} <= {c["id"] for c in coco["categories"]}


@pytest.mark.parametrize("vocab, words", [("cocoo", ["unknown vocabulary 'cocoo'"]), ("empty", ["is empty"]),
                                          ("a,A", ["twice"])])
def test_everything_vocabulary_errors_before_any_work(capsys, image, tmp_path, vocab, words, env, monkeypatch):
    import samkit.registry

    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    if vocab == "empty":
        vocab = tmp_path / "empty.txt"
        vocab.write_text("# nothing\n")
    rc, _, err = run(capsys, "everything", image, "--model", "sam_vit_b", "--vocabulary", vocab,
                     "--out", tmp_path / "o")
    assert rc == 2 and all(w in error_line(err) for w in words) and env == []
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- track --text
@pytest.fixture
def frames(tmp_path):
    from PIL import Image

    img, _, _ = two_squares()
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(img, 2 * i, axis=1)).save(folder / f"{i:05d}.png")
    return folder


def test_track_text_keeps_labels(capsys, frames, tmp_path, env):
    pytest.importorskip("cv2")
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, "track", frames, "--text", "blue", "--text", "red", "--point", "0,4,4,3",
                          "--model", "classic", "--out", out, "--format", "coco", "--json")
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["objects"] == [3, 4, 5] and summary["labels"] == {"4": "blue", "5": "red"}
    lines = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert [(o["id"], o.get("label")) for o in line["objects"]] == [(3, None), (4, "blue"), (5, "red")]


@pytest.mark.parametrize("extra, words", [(["--text", "zebra"], ["none of the texts ['zebra'] was found on frame 0"]),
                                          (["--text", "red", "--text-frame", "7"], ["--text-frame 7 is outside"]),
                                          (["--text", ""], ["empty"])])
def test_track_text_errors(capsys, frames, tmp_path, extra, words):
    pytest.importorskip("cv2")
    rc, _, err = run(capsys, "track", frames, "--model", "classic", "--out", tmp_path / "o", *extra)
    assert rc == 2 and all(w in error_line(err) for w in words)
    assert not (tmp_path / "o" / "tracks.jsonl").exists() and not list((tmp_path / "o").glob("masks/*"))
