"""VideoTracker behaviour on a tiny random SAM 2-style model: API, bounded streaming memory,
bad input, frame sources, the classic optical-flow engine and ``samkit track``."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from samkit.errors import InputError, VideoError
from samkit.io.video import ArraySource, FolderSource, IteratorSource, open_frames
from samkit.video import FrameResult, TrackingSession, VideoTracker
from _tiny_video import build_tiny_video_model


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_video_model(64, 32, seed=0)


def frames(n=12, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, h, w, 3)) * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- API
def test_prompt_propagate_types_and_shapes(tiny):
    tr = VideoTracker(tiny, keep_logits=True)
    s = tr.start(frames())
    assert isinstance(s, TrackingSession) and (s.height, s.width) == (48, 64) and s.num_frames == 12
    r = tr.add_prompt(s, frame=0, obj_id=1, points=[[30, 20]], labels=[1])
    assert isinstance(r, FrameResult) and r.masks[1].shape == (48, 64) and r.masks[1].dtype == bool
    out = list(tr.propagate(s))
    assert [f for f, _ in out] == list(range(12))
    assert all(set(res.masks) == {1} for _, res in out)
    assert np.array_equal(out[0][1].masks[1], r.masks[1])  # the prompted frame keeps its output
    assert all(np.array_equal(res.logits[1] > 0, res.masks[1]) for _, res in out)


def test_objects_added_mid_video_reverse_and_removal(tiny):
    tr = VideoTracker(tiny)
    s = tr.start(frames(10))
    tr.add_prompt(s, 0, 1, points=[[30, 20]], labels=[1])
    first = {f: r.masks[1].copy() for f, r in tr.propagate(s)}
    tr.add_prompt(s, 5, 2, box=[10, 10, 40, 30])
    second = {f: r for f, r in tr.propagate(s)}
    assert set(second) == set(range(10)) and all(set(r.masks) == {1, 2} for r in second.values())
    # objects are tracked independently: object 1 is unchanged by object 2
    assert all(np.array_equal(first[f], second[f].masks[1]) for f in range(10))
    back = [f for f, _ in tr.propagate(s, start=5, reverse=True)]
    assert back == [5, 4, 3, 2, 1, 0]
    tr.remove_object(s, 1)
    assert s.obj_ids == [2]
    assert all(set(r.masks) == {2} for _, r in tr.propagate(s, max_frames=3))


def test_reprompt_and_mask_prompt(tiny):
    tr = VideoTracker(tiny)
    s = tr.start(frames(6))
    tr.add_prompt(s, 0, 1, points=[[30, 20]], labels=[1])
    list(tr.propagate(s))
    r = tr.add_prompt(s, 3, 1, points=[[30, 20], [5, 5]], labels=[1, 0])  # correction on a tracked frame
    assert 3 in s.objects[1].cond
    m = np.zeros((48, 64), bool)
    m[10:30, 20:50] = True
    r = tr.add_prompt(s, 1, 7, mask=m)
    assert r.masks[7].shape == (48, 64) and 0.5 < (r.masks[7] & m).sum() / m.sum()
    assert {f for f, _ in tr.propagate(s)} == set(range(6))


# ----------------------------------------------------------------------------- bounded memory
@pytest.mark.slow
def test_streams_2000_frames_with_a_bounded_memory_bank(tiny):
    """A never-ending iterator: entries, tensors and cached features stay under the bound the
    model needs (cond frames + last max_obj_ptrs frames), and are the same at 100 and 2,000."""
    rng = np.random.default_rng(1)
    base = (rng.random((8, 32, 32, 3)) * 255).astype(np.uint8)
    stream = (base[i % 8] for i in itertools.count())
    tr = VideoTracker(tiny, max_cond_frames=4)
    s = tr.start(stream)
    assert s.num_frames is None
    tr.add_prompt(s, 0, 1, points=[[16, 16]], labels=[1])
    cfg = tiny.memory_config
    per_obj_entries = 4 + cfg.max_obj_ptrs_in_encoder
    snapshots = {}
    for f, res in tr.propagate(s, max_frames=2000):
        if f == 60:
            tr.add_prompt(s, 60, 2, box=[4, 4, 20, 20])  # a second object mid-stream
        assert s.memory_entries() <= 2 * per_obj_entries
        assert len(s.features) <= s.feature_cache
        assert len(s.source._buf) <= 2
        if f in (100, 1999):
            snapshots[f] = (s.memory_entries(), s.memory_tensors())
        if f == 60:
            break
    for f, res in tr.propagate(s, max_frames=2000 - 61):
        assert s.memory_entries() <= 2 * per_obj_entries
        if f in (100, 1999):
            snapshots[f] = (s.memory_entries(), s.memory_tensors())
    assert f == 1999 and set(res.masks) == {1, 2}
    assert snapshots[100] == snapshots[1999]
    # per object: 1 cond entry + 16 recent frames; tensors: (4 per spatial-memory frame,
    # 2 per pointer-only frame) + cached features
    assert s.stats.max_entries <= 2 * (1 + cfg.max_obj_ptrs_in_encoder)
    assert s.stats.max_tensors <= 2 * (4 + 4 * cfg.num_maskmem + 2 * (cfg.max_obj_ptrs_in_encoder - cfg.num_maskmem)) + 8


# ----------------------------------------------------------------------------- bad input
class _EndsEarly(ArraySource):
    """Claims 10 frames, delivers 6."""

    def __init__(self, fr):
        super().__init__(fr)
        self.num_frames = 10

    def get(self, index):
        if index >= 6:
            raise VideoError(f"the video ended early, before frame {index}")
        return super().get(index)


def test_bad_input_errors_keep_finished_frames(tiny, tmp_path):
    tr = VideoTracker(tiny)
    s = tr.start(frames(5))
    with pytest.raises(InputError, match="add_prompt first"):
        list(tr.propagate(s))
    with pytest.raises(InputError, match="outside the video"):
        tr.add_prompt(s, 5, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match="never prompted"):
        tr.remove_object(s, 3)
    with pytest.raises(InputError, match="labels"):
        tr.add_prompt(s, 0, 1, points=[[1, 1]])
    with pytest.raises(InputError, match="points, a box or a mask"):
        tr.add_prompt(s, 0, 1)
    with pytest.raises(InputError, match="obj_id"):
        tr.add_prompt(s, 0, "one", points=[[1, 1]], labels=[1])

    s = tr.start(_EndsEarly(frames(6)))
    tr.add_prompt(s, 0, 1, points=[[30, 20]], labels=[1])
    done = []
    with pytest.raises(VideoError, match="ended early"):
        for f, r in tr.propagate(s):
            done.append(f)
    assert done == [0, 1, 2, 3, 4, 5]

    from PIL import Image

    for i, fr in enumerate(frames(5)):
        Image.fromarray(fr).save(tmp_path / f"{i:05d}.png")
    (tmp_path / "00003.png").write_bytes(b"not a png")
    s = tr.start(tmp_path)
    tr.add_prompt(s, 0, 1, points=[[30, 20]], labels=[1])
    done = []
    with pytest.raises(VideoError, match="00003.png"):
        for f, r in tr.propagate(s):
            done.append(f)
    assert done == [0, 1, 2]

    live = tr.start(iter(frames(4)))
    with pytest.raises(VideoError, match="ended after 4 frames"):
        tr.add_prompt(live, 9, 1, points=[[1, 1]], labels=[1])
    tr.add_prompt(live, 3, 1, points=[[30, 20]], labels=[1])
    assert [f for f, _ in tr.propagate(live)] == [3]  # a stream that ends just stops


# ----------------------------------------------------------------------------- sources
def test_frame_sources(tmp_path):
    from PIL import Image

    fr = frames(12, 16, 24)
    for i in (0, 2, 10, 1, 11, 3, 4, 5, 6, 7, 8, 9):
        Image.fromarray(fr[i]).save(tmp_path / f"f{i}.png")
    src = open_frames(tmp_path)
    assert isinstance(src, FolderSource) and src.num_frames == 12
    assert all(np.array_equal(src.get(i), fr[i]) for i in (0, 9, 10, 11))  # numeric, not lexical, order
    it = IteratorSource(iter(fr), keep=2)
    assert np.array_equal(it.get(3), fr[3]) and np.array_equal(it.get(2), fr[2])
    with pytest.raises(VideoError, match="released"):
        it.get(0)
    with pytest.raises(VideoError):
        open_frames(tmp_path / "missing.mp4")


def test_video_file_source_random_access(tmp_path):
    av = pytest.importorskip("av")
    from fractions import Fraction

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=Fraction(10))
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        st.gop_size = 4
        for i in range(20):
            img = np.full((48, 64, 3), i * 12, np.uint8)
            img[:, : 3 * i] = 255
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    src = open_frames(path)
    assert src.num_frames == 20
    seq = [src.get(i) for i in range(20)]
    for i in (13, 2, 19, 7, 7, 0):
        assert np.array_equal(src.get(i), seq[i])
    assert abs(int(seq[10][0, 40, 0]) - 120) < 20
    with pytest.raises(VideoError, match="beyond the end"):
        src.get(20)


# ----------------------------------------------------------------------------- classic
def _moving_square(n=10, h=72, w=96):
    rng = np.random.default_rng(0)
    bg = (rng.random((h, w, 3)) * 60 + 40).astype(np.uint8)
    out, gts = [], []
    for i in range(n):
        f = bg.copy()
        x0, y0 = 10 + 3 * i, 20 + i
        f[y0:y0 + 24, x0:x0 + 24] = (220, 40, 40)
        gt = np.zeros((h, w), bool)
        gt[y0:y0 + 24, x0:x0 + 24] = True
        out.append(f)
        gts.append(gt)
    return np.stack(out), gts


def test_classic_flow_tracker_follows_a_moving_object():
    pytest.importorskip("cv2")
    from samkit.models.classic import GrabCutModel

    vid, gts = _moving_square()
    tr = VideoTracker(GrabCutModel())
    s = tr.start(vid)
    tr.add_prompt(s, 0, 1, box=[8, 18, 36, 46])
    ious = []
    for f, r in tr.propagate(s):
        m = r.masks[1]
        ious.append((m & gts[f]).sum() / max(1, (m | gts[f]).sum()))
    assert len(ious) == 10 and min(ious) > 0.6, ious


def test_track_cli_writes_png_and_coco(tmp_path):
    pytest.importorskip("cv2")
    typer_testing = pytest.importorskip("typer.testing")
    from PIL import Image

    from samkit.cli.track_cmd import app

    vid, _ = _moving_square(5)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(vid):
        Image.fromarray(f).save(d / f"{i:05d}.png")
    out = tmp_path / "out"
    res = typer_testing.CliRunner().invoke(app, [str(d), "--box", "0,8,18,36,46,1", "--model", "classic",
                                                 "--out", str(out), "--format", "png", "--format", "coco"])
    assert res.exit_code == 0, res.output
    assert len(list((out / "masks").glob("*_obj1.png"))) == 5
    lines = [json.loads(x) for x in (out / "tracks.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(5)) and lines[0]["objects"][0]["id"] == 1
    bad = typer_testing.CliRunner().invoke(app, [str(d), "--point", "0,1,2", "--model", "classic"])
    assert bad.exit_code != 0


def test_edgetam_semantics_every_prompted_frame_conditions_all_objects():
    from samkit.memory.config import EDGETAM, EFFICIENTTAM_1

    model = build_tiny_video_model(64, 32, seed=1, family_cfg=EDGETAM)
    assert hasattr(model, "spatial_perceiver")
    tr = VideoTracker(model, keep_logits=True)
    s = tr.start(frames(5))
    tr.add_prompt(s, 0, 1, points=[[30, 20]], labels=[1])
    tr.add_prompt(s, 2, 2, box=[10, 10, 40, 30])
    out = dict(tr.propagate(s))
    # object 2 on frame 0 and object 1 on frame 2: empty masks, placeholder score 10
    for f, oid in ((0, 2), (2, 1)):
        assert not out[f].masks[oid].any() and out[f].scores[oid] == 10.0
        assert np.allclose(out[f].logits[oid], -1024.0)
    assert out[0].masks[1].any() and out[2].masks[2].any()
    assert s.objects[1].cond.keys() == s.objects[2].cond.keys() == {0, 2}
    # EfficientTAM pooled memory runs through the tracker as well
    m2 = build_tiny_video_model(64, 32, seed=2, family_cfg=EFFICIENTTAM_1)
    tr2 = VideoTracker(m2)
    s2 = tr2.start(frames(4))
    tr2.add_prompt(s2, 0, 1, points=[[30, 20]], labels=[1])
    assert [f for f, _ in tr2.propagate(s2)] == [0, 1, 2, 3]
