"""`samkit eval ...` sub-app on a synthetic DAVIS tree with fake models; and (when present)
a quick check on the shared real DAVIS frames (one frame, well under a minute)."""
import csv
import os
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("typer")
from typer.testing import CliRunner  # noqa: E402

import samkit.cli.eval_cmd as eval_cmd  # noqa: E402
from samkit.eval.davis import write_index_png  # noqa: E402
from _synthetic_davis import SeeingPredictor, make_davis_tree, squares  # noqa: E402

runner = CliRunner()
H, W = 24, 32


@pytest.fixture
def tree(tmp_path):
    maps = [squares(H, W, [(2, 8, 2, 10), (12, 20, 14, 26)]) for _ in range(4)]
    return make_davis_tree(tmp_path / "DAVIS", {"alpha": maps, "beta": maps[:3]})


def test_interactive_command_writes_tables(tree, tmp_path, monkeypatch):
    seen = {}

    def fake_build(model, checkpoint, device):
        seen.update(model=model, checkpoint=checkpoint, device=device)
        return SeeingPredictor()

    monkeypatch.setattr(eval_cmd, "build_predictor", fake_build)
    out = tmp_path / "out"
    r = runner.invoke(eval_cmd.app, ["interactive", "--data", str(tree), "--model", "fake", "--every", "2",
                                     "--max-clicks", "20", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert seen == {"model": "fake", "checkpoint": None, "device": "cpu"}
    assert "Global results" in r.output and "NoC@90" in r.output
    js = json.loads((out / "results.json").read_text())
    assert js["global"]["samples"] == 8 and js["global"]["mIoU@box"] == 1.0 and js["settings"]["every"] == 2
    rows = list(csv.DictReader((out / "global_results.csv").open()))
    assert rows[0]["NoC@85"] == "1.000"
    seq = list(csv.DictReader((out / "per-sequence_results.csv").open()))
    assert [s["Sequence"] for s in seq] == ["alpha", "beta"]
    assert len(list(csv.DictReader((out / "per-sample_results.csv").open()))) == 8


def test_interactive_bad_data_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setattr(eval_cmd, "build_predictor", lambda *a: SeeingPredictor())
    r = runner.invoke(eval_cmd.app, ["interactive", "--data", str(tmp_path / "nope"), "--model", "fake"])
    assert r.exit_code == 2 and "Fix" in r.output


def test_vos_without_tracker_names_what_is_missing(tree, monkeypatch):
    monkeypatch.setattr(eval_cmd, "_video_tracker_class", lambda: None)
    r = runner.invoke(eval_cmd.app, ["vos", "--data", str(tree), "--model", "classic"])
    assert r.exit_code == 2
    assert "VideoTracker" in r.output and "Fix" in r.output


def test_vos_with_tracker(tree, tmp_path, monkeypatch):
    from types import SimpleNamespace

    class Repeat:
        def start(self, source):
            return SimpleNamespace(n=len(list(Path(source).glob("*.jpg"))), masks={})

        def add_prompt(self, session, frame=0, obj_id=None, mask=None, **kw):
            session.masks[obj_id] = mask

        def propagate(self, session):
            for t in range(session.n):
                yield t, SimpleNamespace(masks=dict(session.masks))

    monkeypatch.setattr(eval_cmd, "build_tracker", lambda *a: Repeat())
    out = tmp_path / "vos"
    r = runner.invoke(eval_cmd.app, ["vos", "--data", str(tree), "--model", "x", "--out", str(out)])
    assert r.exit_code == 0, r.output
    g = list(csv.DictReader((out / "global_results.csv").open()))[0]
    assert list(g) == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    assert g["J&F-Mean"] == "1.000" and g["J-Decay"] == "0.000"
    seq = list(csv.DictReader((out / "per-sequence_results.csv").open()))
    assert [s["Sequence"] for s in seq] == ["alpha_1", "alpha_2", "beta_1", "beta_2"]


def test_davis_results_command(tree, tmp_path):
    res = tmp_path / "res"
    for name, n in (("alpha", 4), ("beta", 3)):
        for t in range(n):
            m = squares(H, W, [(2, 8, 2, 10), (12, 20, 14, 26)])
            if name == "alpha":
                m[m == 1] = 0                                   # object 1 of alpha never found
            write_index_png(res / name / f"{t:05d}.png", m)
    r = runner.invoke(eval_cmd.app, ["davis-results", "--data", str(tree), "--results", str(res)])
    assert r.exit_code == 0, r.output
    js = json.loads((res / "results.json").read_text())
    assert js["global"]["J-Mean"] == pytest.approx(0.75) and js["global"]["F-Mean"] == pytest.approx(0.75)


REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis"


@pytest.mark.skipif(not (REAL / "ImageSets").is_dir(), reason="shared DAVIS sample not present")
def test_real_davis_frame_with_seeing_oracle(tmp_path):
    """Real 854x480 frames and masks through the reader and the click protocol: an oracle
    that answers with the true mask must score 1.0 and need one click (fast: 1 frame/seq)."""
    from types import SimpleNamespace

    from samkit.eval.davis import DavisDataset
    from samkit.eval.interactive import evaluate_interactive

    ds = DavisDataset(REAL, year="2016")
    assert ds.names == ["blackswan", "bmx-trees", "car-shadow"]
    assert [len(ds.sequence(n)) for n in ds.names] == [50, 80, 40]

    class Oracle:
        def set_image(self, img):
            assert img.shape == (480, 854, 3)
            self.gt = ds.annotation(*self.key) == 1

        def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True):
            return SimpleNamespace(masks=self.gt[None], scores=np.ones(1), low_res_logits=None)

    o = Oracle()
    orig = ds.image
    ds.image = lambda name, t: (setattr(o, "key", (name, t)), orig(name, t))[1]
    rep = evaluate_interactive(o, ds, every=1000)
    g = rep.global_results()
    assert g["samples"] == 3 and g["mIoU@5"] == 1.0 and g["NoC@90"] == 1.0


def test_vos_end_to_end_with_the_classic_tracker(tmp_path):
    """The real VideoTracker (classic engine) through `samkit eval vos` on an easy synthetic
    sequence: white squares on black, one moving. Skipped while the tracker is absent."""
    cls = eval_cmd._video_tracker_class()
    if cls is None:
        pytest.skip("samkit.video.VideoTracker not available")
    try:
        eval_cmd.build_tracker("classic", None, "cpu")
    except Exception as exc:  # noqa: BLE001 - the classic tracker may not be built yet
        pytest.skip(f"classic VideoTracker unavailable: {exc}")
    maps = [squares(96, 128, [(20, 50, 20 + 2 * t, 60 + 2 * t), (60, 90, 70, 110)]) for t in range(5)]
    root = make_davis_tree(tmp_path / "D", {"syn": maps})
    out = tmp_path / "o"
    r = runner.invoke(eval_cmd.app, ["vos", "--data", str(root), "--model", "classic", "--out", str(out)])
    assert r.exit_code == 0, r.output
    js = json.loads((out / "results.json").read_text())
    assert [row["Sequence"] for row in js["per_sequence"]] == ["syn_1", "syn_2"]
    assert js["global"]["J-Mean"] > 0.8 and js["global"]["F-Mean"] > 0.8


@pytest.mark.parametrize("command", [["interactive", "--model", "fake"], ["vos", "--model", "fake"],
                                     ["davis-results", "--results", "RES"]])
def test_data_that_is_a_file_says_so(tmp_path, monkeypatch, command):
    monkeypatch.setattr(eval_cmd, "build_predictor", lambda *a: SeeingPredictor())
    monkeypatch.setattr(eval_cmd, "build_tracker", lambda *a: pytest.fail("no tracker without data"))
    afile = tmp_path / "davis.zip"
    afile.write_bytes(b"PK")
    (tmp_path / "RES").mkdir()
    args = [str(tmp_path / "RES") if a == "RES" else a for a in command]
    r = runner.invoke(eval_cmd.app, [*args, "--data", str(afile), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "is a file; expected the DAVIS root folder" in text and "JPEGImages/" in text and "Fix:" in text
    assert "does not exist" not in text


def test_coco_inputs_of_the_wrong_kind(tmp_path, monkeypatch):
    monkeypatch.setattr(eval_cmd, "build_predictor", lambda *a: pytest.fail("no model before the inputs are checked"))
    anns = tmp_path / "instances.json"
    anns.write_text("{}")
    r = runner.invoke(eval_cmd.app, ["coco", "--annotations", str(tmp_path), "--images", str(tmp_path),
                                     "--model", "fake"])
    assert r.exit_code == 2 and "is a folder; expected a COCO instances JSON file" in " ".join(r.output.split())
    r = runner.invoke(eval_cmd.app, ["coco", "--annotations", str(anns), "--images", str(anns), "--model", "fake"])
    assert r.exit_code == 2 and "is a file; expected the folder of the COCO images" in " ".join(r.output.split())


def test_help_points_to_models_ls():
    r = runner.invoke(eval_cmd.app, ["interactive", "--help"])
    assert r.exit_code == 0 and "samkit models ls" in r.output and "models list" not in r.output


def test_rerun_publishes_results_as_a_set(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(eval_cmd, "build_predictor", lambda *a: SeeingPredictor())
    out = tmp_path / "out"
    args = ["interactive", "--data", str(tree), "--model", "fake", "--every", "2", "--out", str(out)]
    assert runner.invoke(eval_cmd.app, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert set(before) == {"global_results.csv", "per-sequence_results.csv", "results.json", "per-sample_results.csv"}
    import samkit.eval.report as report

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "write_csv", broken)
    r = runner.invoke(eval_cmd.app, args)
    assert r.exit_code == 1 and "No space left" in r.output and ".samkit" not in r.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert os.listdir(out / ".samkit") == ["eval-interactive.json"]
