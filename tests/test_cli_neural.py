"""`samkit segment` with neural models and official-layout checkpoint files."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("typer")

from samkit.cli.main import main  # noqa: E402


@pytest.mark.parametrize("name", ["edge_sam", "mobile_sam"])
def test_segment_with_checkpoint_file(capsys, tmp_path, monkeypatch, synth_checkpoint, name):
    from samkit.io import example_image_path

    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    ckpt = synth_checkpoint(name)
    args = ["segment", str(example_image_path()), "--model", name, "--checkpoint", str(ckpt),
            "--point", "111,83", "--box", "17,61,383,189", "--format", "json,png", "--out", str(tmp_path / "o")]
    if name == "edge_sam":  # EdgeSAM's weights are non-commercial: loading it says so
        with pytest.warns(UserWarning, match="non-commercial"):
            code = main(args)
    else:
        code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"] == name and doc["count"] >= 1
    assert all(0 <= m["area"] <= 400 * 267 for m in doc["masks"])
    assert (tmp_path / "o" / "truck_000.png").exists()
