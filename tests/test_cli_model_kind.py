"""Model kinds in the CLI: CLIP models are listed with their kind, are never the default model, and a
command that draws masks refuses one with the fix."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("typer")

from samkit.cli import common  # noqa: E402
from samkit.cli.main import main  # noqa: E402
from samkit.specs import MODELS, list_models  # noqa: E402

CLIPS = [n for n, s in MODELS.items() if s.kind == "clip"]


pytestmark = pytest.mark.usefixtures("empty_cache")


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 120 + i, np.uint8)).save(folder / f"{i:05d}.png")
    return folder / "00000.png"


def test_registry_kinds():
    assert CLIPS == ["clip_vit_b16", "clip_rn50x16"]
    assert set(list_models(kind="clip")) == set(CLIPS)
    assert "sam_vit_b" in list_models(kind="segmenter") and not set(CLIPS) & set(list_models(kind="segmenter"))
    assert all(s.kind in ("segmenter", "clip", "component") for s in MODELS.values())


def test_cached_clip_weights_never_make_it_the_default(empty_cache):
    empty_cache.mkdir(parents=True)
    for name in CLIPS:
        (empty_cache / MODELS[name].filename).write_bytes(b"weights")
    assert common.default_model()[0] == "classic"


def test_models_ls_shows_the_kind(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rc, out, _ = _run(capsys, "models", "ls", "--format", "json")
    by = {m["name"]: m for m in json.loads(out)["models"]}
    assert rc == 0 and by["clip_vit_b16"]["kind"] == "clip" and by["sam_vit_b"]["kind"] == "segmenter"
    assert by["clip_rn50x16"]["input_size"] == 384 and by["clip_vit_b16"]["license"] == "MIT"
    rc, out, _ = _run(capsys, "models", "ls")  # one table per kind
    assert rc == 0 and out.index("sam_vit_b") < out.index("kind 'clip'") < out.index("clip_vit_b16")
    rc, out, _ = _run(capsys, "models", "info", "clip_rn50x16")
    assert rc == 0 and "kind        clip" in out and "RN50x16.pt" in out


@pytest.mark.parametrize("args", [
    ["segment", "{img}", "--point", "10,10", "--model", "clip_vit_b16"],
    ["everything", "{img}", "--model", "clip_rn50x16"],
    ["track", "{img}", "--point", "0,10,10,1", "--model", "clip_vit_b16"],
])
def test_commands_that_draw_masks_refuse_a_clip_model(capsys, image, tmp_path, args):
    source = image.parent if args[0] == "track" else image  # track reads a folder of frames
    args = [str(source) if a == "{img}" else a for a in args]
    rc, _, err = _run(capsys, *args, "--out", tmp_path / "o")
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert "is a clip model" in line and "Fix: pass a segmenter with --model" in line and "Traceback" not in err
    assert not (tmp_path / "o").exists()
