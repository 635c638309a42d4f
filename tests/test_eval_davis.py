"""DAVIS reader, J&F on synthetic sequences, and the interactive evaluation on a synthetic tree."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from samkit.errors import InputError
from samkit.eval.davis import DavisDataset, davis_palette, read_index_png, write_index_png
from samkit.eval.interactive import count_samples, evaluate_interactive
from _synthetic_davis import SeeingPredictor, make_davis_tree, squares
from samkit.eval.vos import VosReport, evaluate_results_dir, evaluate_tracker, score_sequence

H, W = 24, 32


def seq_maps(n, boxes_per_frame=None):
    return [squares(H, W, [(2, 8, 2 + t % 3, 10 + t % 3), (12, 20, 14, 26)]) for t in range(n)]


@pytest.fixture
def tree(tmp_path):
    return make_davis_tree(tmp_path / "DAVIS", {"alpha": seq_maps(5), "beta": seq_maps(4)})


# ----------------------------------------------------------------------------- reader
def test_reader_layout(tree):
    ds = DavisDataset(tree)
    assert ds.names == ["alpha", "beta"] and len(ds) == 2
    seq = ds.sequence("alpha")
    assert len(seq) == 5 and seq.frame_ids == ["00000", "00001", "00002", "00003", "00004"]
    assert ds.num_objects("alpha") == 2 and ds.object_ids("beta") == [1, 2]
    ann = ds.annotation("alpha", 1)
    assert ann.dtype == np.uint8 and set(np.unique(ann)) == {0, 1, 2}
    np.testing.assert_array_equal(ann, seq_maps(5)[1])
    img = ds.image("alpha", 0)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and img[4, 4, 0] > 200 and img[0, 0, 0] < 50
    with Image.open(seq.annotations[0]) as im:
        assert im.mode == "P" and im.getpalette()[3:6] == [128, 0, 0]   # DAVIS object 1 is dark red


def test_reader_2016_binary_and_sequence_override(tree, tmp_path):
    ds = DavisDataset(tree, year="2016")
    assert ds.binary and ds.num_objects("alpha") == 1          # 2016: one foreground object
    assert set(np.unique(ds.annotation("alpha", 0))) == {0, 1}
    ds = DavisDataset(tree, sequences=["beta"])
    assert ds.names == ["beta"]
    gray = tmp_path / "g.png"
    Image.fromarray(np.array([[0, 255]], np.uint8), mode="L").save(gray)
    np.testing.assert_array_equal(read_index_png(gray, binary=True), [[0, 1]])   # DAVIS 2016 0/255 files


def test_reader_void_label(tmp_path):
    m = np.zeros((4, 4), np.uint8)
    m[0, 0], m[1, 1] = 1, 255
    write_index_png(tmp_path / "a.png", m)
    out = read_index_png(tmp_path / "a.png", binary=True)
    assert out[0, 0] == 1 and out[1, 1] == 255 and out[2, 2] == 0


def test_reader_errors(tree, tmp_path):
    with pytest.raises(InputError, match="Fix"):
        DavisDataset(tmp_path / "nowhere")
    with pytest.raises(InputError, match="ImageSets"):
        DavisDataset(tree, split="test-dev")
    (tree / "Annotations" / "480p" / "alpha" / "00000.png").unlink()
    with pytest.raises(InputError, match="first frame"):
        DavisDataset(tree).sequence("alpha")
    with pytest.raises(InputError, match="No frames"):
        DavisDataset(tree, sequences=["ghost"]).sequence("ghost")


def test_palette_first_entries():
    p = davis_palette()
    assert p[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] and len(p) == 768


# ----------------------------------------------------------------------------- J&F
def perfect(maps):
    return [{1: m == 1, 2: m == 2} for m in maps]


def test_jf_known_values_and_first_last_exclusion():
    maps = seq_maps(5)
    preds = perfect(maps)
    preds[0] = {1: np.zeros((H, W), bool), 2: np.zeros((H, W), bool)}   # frame 0 is not scored
    preds[4] = {}                                                       # last frame is not scored
    preds[2] = {1: maps[2] == 1}                                        # object 2 lost on frame 2
    objs = score_sequence("s", maps, preds)
    assert [o.name for o in objs] == ["s_1", "s_2"]
    np.testing.assert_allclose(objs[0].j, [1, 1, 1])
    np.testing.assert_allclose(objs[1].j, [1, 0, 1])
    np.testing.assert_allclose(objs[1].f, [1, 0, 1])                    # empty prediction: P=1, R=0
    rep = VosReport(objs)
    g = rep.global_results()
    assert g["J-Mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert g["J&F-Mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert g["J-Recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert g["J-Decay"] == pytest.approx((0 + -0.5) / 2)               # bins [1,0] and [1] for object 2
    assert rep.per_sequence()[1] == {"Sequence": "s_2", "J-Mean": pytest.approx(2 / 3),
                                     "F-Mean": pytest.approx(2 / 3)}


def test_jf_boundary_shift_and_overlap_painting():
    h, w = 20, 20                                                       # tolerance 1 pixel
    gt = [squares(h, w, [(5, 10, 5, 10)]) for _ in range(3)]
    shifted = np.zeros((h, w), bool)
    shifted[5:10, 7:12] = True                                          # F = 0.6 by hand, J = 3/7
    objs = score_sequence("x", gt, [{1: gt[0] == 1}, {1: shifted}, {}])
    assert objs[0].j[0] == pytest.approx(15 / 35) and objs[0].f[0] == pytest.approx(0.6)
    # overlapping predictions: painted in id order, the higher id wins (like a results PNG)
    maps = [squares(h, w, [(0, 6, 0, 6), (6, 12, 0, 6)]) for _ in range(3)]
    both = (maps[1] == 1) | (maps[1] == 2)
    preds = [{}, {1: both, 2: maps[1] == 2}, {}]
    exclusive = score_sequence("o", maps, preds)
    assert exclusive[0].j[0] == 1.0 and exclusive[1].j[0] == 1.0
    separate = score_sequence("o", maps, preds, exclusive=False)
    assert separate[0].j[0] == pytest.approx(0.5)


def test_jf_void_and_errors():
    maps = [squares(8, 8, [(0, 4, 0, 4)]) for _ in range(3)]
    maps[1][0, 4:8] = 255                                               # void strip
    pred = np.zeros((8, 8), bool)
    pred[0:4, 0:4] = True
    pred[0, 4:8] = True                                                 # the error lies in the void
    objs = score_sequence("v", maps, [{}, {1: pred}, {}])
    assert objs[0].j[0] == 1.0
    with pytest.raises(InputError, match="Fix"):
        score_sequence("v", maps, [{}, {}])
    with pytest.raises(InputError, match="at least 3"):
        score_sequence("v", maps[:2], [{}, {}])


def test_results_dir_like_official(tree, tmp_path):
    ds = DavisDataset(tree)
    res = tmp_path / "res"
    for seq in ds:
        for i, fid in enumerate(seq.frame_ids):
            m = ds.annotation(seq.name, i).copy()
            if seq.name == "beta" and i == 1:
                m[m == 2] = 0                                           # object 2 missed on one frame
            write_index_png(res / seq.name / f"{fid}.png", m)
    rep = evaluate_results_dir(ds, res)
    rows = {r["Sequence"]: r for r in rep.per_sequence()}
    assert set(rows) == {"alpha_1", "alpha_2", "beta_1", "beta_2"}
    assert rows["alpha_1"]["J-Mean"] == 1.0 and rows["beta_2"]["J-Mean"] == pytest.approx(0.5)
    assert rep.global_results()["J-Mean"] == pytest.approx((3 + 0.5) / 4)


class FakeTracker:
    """VideoTracker API fake: repeats the first-frame masks, dropping object 2 on frame 2."""

    def __init__(self):
        self.prompts = []

    def start(self, source):
        self.source = source
        n = len(list(Path(source).glob("*.jpg")))
        return SimpleNamespace(n=n, masks={})

    def add_prompt(self, session, frame=0, obj_id=None, points=None, labels=None, box=None, mask=None):
        self.prompts.append((frame, obj_id))
        session.masks[obj_id] = mask

    def propagate(self, session):
        for t in range(session.n):
            masks = dict(session.masks)
            if t == 2:
                masks.pop(2)
            yield t, SimpleNamespace(masks=masks)


def test_evaluate_tracker(tree):
    ds = DavisDataset(tree, sequences=["beta"])
    tr = FakeTracker()
    rep = evaluate_tracker(tr, ds)
    assert tr.prompts == [(0, 1), (0, 2)] and tr.source.endswith("beta")
    rows = {r["Sequence"]: r for r in rep.per_sequence()}
    # object 1 moves one column per frame: 6x8 boxes overlap 6x7 of 6x9, then 6x6 of 6x10
    assert rows["beta_1"]["J-Mean"] == pytest.approx((42 / 54 + 36 / 60) / 2)
    assert rows["beta_2"]["J-Mean"] == pytest.approx(0.5)              # frames 1, 2 scored; 2 lost


# ----------------------------------------------------------------------------- interactive
def test_interactive_perfect_and_blind(tree):
    ds = DavisDataset(tree)
    assert count_samples(ds, every=2) == 2 * (3 + 2)                    # frames 0,2,4 and 0,2; 2 objects
    pred = SeeingPredictor()
    rep = evaluate_interactive(pred, ds, every=2, max_clicks=20)
    g = rep.global_results()
    assert g["samples"] == 10 and g["mIoU@box"] == 1.0 and g["mIoU@centre"] == 1.0 and g["mIoU@5"] == 1.0
    assert g["NoC@85"] == 1.0 and g["NoC@90"] == 1.0
    assert pred.calls[0]["box"] is not None and pred.calls[1]["multimask"] is True
    assert [r["Sequence"] for r in rep.per_sequence()] == ["alpha", "beta"]

    class Blind(SeeingPredictor):
        def predict(self, **kw):
            out = super().predict(**kw)
            out.masks[:] = False
            return out

    g = evaluate_interactive(Blind(), ds, every=4, max_clicks=7).global_results()
    assert g["mIoU@box"] == 0.0 and g["NoC@90"] == 7.0 and g["NoC@85-failures"] == g["samples"] == 6


def test_interactive_bad_args(tree):
    ds = DavisDataset(tree)
    with pytest.raises(InputError, match="Fix"):
        evaluate_interactive(SeeingPredictor(), ds, every=0)
    with pytest.raises(InputError, match="max-clicks"):
        evaluate_interactive(SeeingPredictor(), ds, max_clicks=3, report_clicks=(1, 5))


def test_pooling_per_sequence_rows_equals_global(tree):
    from samkit.eval.interactive import pool_per_sequence

    ds = DavisDataset(tree)

    class Half(SeeingPredictor):
        """Perfect on alpha, blind on beta: the pooled means must weight by sample count."""

        def predict(self, **kw):
            out = super().predict(**kw)
            if self.blind:
                out.masks[:] = False
            return out

    p = Half()
    orig = ds.image
    ds.image = lambda name, t: (setattr(p, "blind", name == "beta"), orig(name, t))[1]
    rep = evaluate_interactive(p, ds, every=2, max_clicks=6)
    g = rep.global_results()
    assert g["mIoU@box"] == pytest.approx(6 / 10) and g["NoC@85"] == pytest.approx((6 * 1 + 4 * 6) / 10)
    pooled = pool_per_sequence(rep.per_sequence())
    for k in ("mIoU@box", "mIoU@5", "NoC@85", "NoC@90", "samples"):
        assert pooled[k] == pytest.approx(g[k])
