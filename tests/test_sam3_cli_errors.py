"""Bad input to SAM 3 on the command line: every case prints one ``error: <problem>. Fix: ...``
line (no traceback) and exits with samkit's code for it (2: bad input, 3: a checkpoint that is
not SAM 3's). The API-level errors are in tests/test_sam3.py / tests/test_sam3_video.py; this
table checks that each one reaches the user of ``samkit segment`` / ``samkit track`` intact."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "sam3"))

import oracle as O  # noqa: E402

pytest.importorskip("typer")

LONG = " ".join(["word"] * 31)  # 33 tokens with start / end: over SAM 3's context of 32


@pytest.fixture(scope="module")
def sam3():
    return O.load_reduced()


@pytest.fixture()
def files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "img.png")
    video = tmp_path / "frames"
    video.mkdir()
    for i in range(2):
        Image.fromarray(img).save(video / f"{i:05d}.png")
    return tmp_path


# (command line after the input path, exit code, words of the message)
SEGMENT = [
    (["--text", ""], 2, "empty"),
    (["--text", "   "], 2, "empty"),
    (["--text", LONG], 2, "SAM 3 reads at most 30"),
    (["--text", "bus", "--point", "5,5"], 2, "--text"),
]
TRACK = [
    (["--text", ""], 2, "empty"),
    (["--text", LONG], 2, "SAM 3 reads at most 30"),
    (["--text", "bus", "--text-frame", "7"], 2, "frame"),
]


def _run(argv, capsys):
    from samkit.cli.main import main

    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    return code, lines, err


def _check(code, lines, err, want_code, words):
    assert code == want_code, err
    assert len(lines) == 1 and "Fix:" in lines[0] and words in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("command, source, args, want_code, words",
                         [("segment", "img.png", *case) for case in SEGMENT] +
                         [("track", "frames", *case) for case in TRACK])
def test_bad_input(sam3, files, monkeypatch, capsys, command, source, args, want_code, words):
    import samkit.registry

    monkeypatch.setenv("SAMKIT_HOME", str(files / "cache"))
    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: sam3)
    code, lines, err = _run([command, str(files / source), "--model", "sam3", "--out", str(files / "out"), *args],
                            capsys)
    _check(code, lines, err, want_code, words)


def test_sam2_checkpoint_given_as_sam3(files, synth_checkpoint, monkeypatch, capsys):
    """``--model sam3 --checkpoint <a SAM 2.1 file>``: exit 3, the message names the model the
    file fits. (The reduced SAM 3 stands in for the released size: the check is on the keys.)"""
    import samkit.registry
    from samkit.models.sam3 import Sam3Model

    build = samkit.registry.build_model
    monkeypatch.setattr(samkit.registry, "build_model",
                        lambda spec, **kw: Sam3Model(O.REDUCED) if spec.name == "sam3" else build(spec, **kw))
    monkeypatch.setenv("SAMKIT_HOME", str(files / "cache"))
    code, lines, err = _run(["segment", str(files / "img.png"), "--model", "sam3", "--checkpoint",
                             str(synth_checkpoint("sam2.1_hiera_t")), "--text", "bus", "--out", str(files / "out")],
                            capsys)
    _check(code, lines, err, 3, "does not fit model 'sam3'")
    assert "sam2.1_hiera_t" in lines[0]
