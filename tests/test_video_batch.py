"""Many objects in one video: ``VideoTracker(object_batch=N)`` (``MemoryTracker.step_many``:
per-frame work shared, the memory attention batched) gives exactly the logits of one-at-a-time
tracking (``object_batch=1``), bit for bit, on tiny random models of every SAM 2-family memory
variant: objects prompted on the same and on different frames (equal and unequal memory
layouts), an object added mid-video, a removed object, forward and reverse passes, memory
attention batches of 1, 2 and 8 objects."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit.errors import InputError
from samkit.memory.config import EDGETAM, EFFICIENTTAM, EFFICIENTTAM_1, EFFICIENTTAM_2, SAM21
from samkit.video import VideoTracker
from _tiny_video import build_tiny_video_model

FAMILIES = {"sam2.1": SAM21, "edgetam": EDGETAM, "efficienttam": EFFICIENTTAM,
            "efficienttam_1": EFFICIENTTAM_1, "efficienttam_2": EFFICIENTTAM_2}
# step_many runs the mask decoder and the memory encoder one object at a time on the shapes of
# ``step``, and the per-frame work (the memory attention's prefix, the memory encoder's projection)
# with the ops of ``step``: every number equals one-at-a-time tracking. (Before, with the decoder
# and the memory encoder batched, logits differed by up to 7e-4 and up to 6 mask pixels per session
# in these configs.) Batched memory attention rows equal their batch-1 rows on CPU (row-wise GEMMs,
# per-batch attention), checked here for batches of 1, 2 and 8.
ATTENTION_BATCHES = [1, 2, 8]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: torch on one thread


def _frames(n=8, h=48, w=64, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.random((n, h, w, 3)) * 255).astype(np.uint8)


PROMPTS = [  # (frame, obj_id, prompt)
    (0, 1, dict(points=[[30, 20]], labels=[1])),
    (0, 2, dict(box=[5, 5, 30, 25])),
    (2, 3, dict(points=[[50, 40], [10, 10]], labels=[1, 0])),
]


def _track(model, object_batch: int, n_objects: int = 3, full: bool = True) -> dict:
    """Logits per (pass, frame, obj_id) of a scripted session; ``full`` adds an object
    mid-video, removes one and runs a reverse and a second forward pass."""
    tr = VideoTracker(model, keep_logits=True, object_batch=object_batch)
    s = tr.start(_frames())
    for f, oid, p in PROMPTS[:n_objects]:
        tr.add_prompt(s, f, oid, **p)
    out = {("fwd", f, o): lg for f, r in tr.propagate(s) for o, lg in r.logits.items()}
    if full:
        tr.add_prompt(s, 4, 4, box=[20, 10, 60, 40])  # added mid-video
        tr.remove_object(s, 2)
        out.update({("rev", f, o): lg for f, r in tr.propagate(s, start=7, reverse=True) for o, lg in r.logits.items()})
        out.update({("fwd2", f, o): lg for f, r in tr.propagate(s, start=3) for o, lg in r.logits.items()})
    return out


def _assert_same(ref: dict, got: dict) -> None:
    """Bit-identical logits (hence masks) for every (pass, frame, object)."""
    assert ref.keys() == got.keys()
    for k in ref:
        assert ref[k].dtype == got[k].dtype and np.array_equal(ref[k], got[k]), \
            (k, float(np.abs(ref[k] - got[k]).max()), int(((ref[k] > 0) != (got[k] > 0)).sum()))


@pytest.fixture(params=ATTENTION_BATCHES)
def attention_batch(request, monkeypatch):
    """``MemoryTracker.attention_batch`` (objects per memory-attention batch) for the test."""
    from samkit.video.memory_tracker import MemoryTracker

    monkeypatch.setattr(MemoryTracker, "attention_batch", request.param)
    return request.param


@pytest.mark.parametrize("family", list(FAMILIES))
def test_step_many_equals_step(family, attention_batch):
    """From the same memory, ``step_many`` gives each object the entry of ``step``, bit for bit:
    the two objects prompted on frame 0 share a memory-attention batch (when it holds 2), the one
    prompted on frame 2 has its own."""
    model = build_tiny_video_model(64, 32, seed=5, family_cfg=FAMILIES[family])
    tr = VideoTracker(model, object_batch=1)
    s = tr.start(_frames())
    for f, oid, p in PROMPTS:
        tr.add_prompt(s, f, oid, **p)
    for _ in tr.propagate(s, max_frames=4):
        pass
    feats = tr._features(s, 4)
    tracks = list(s.objects.values())
    batched = tr.engine.step_many(s, tracks, feats, 4, False)
    for track, got in zip(tracks, batched):
        ref = tr.engine.step(s, track, feats, 4, False, False)
        for name in ("low_res", "obj_ptr", "object_score", "maskmem"):
            a, b = getattr(ref, name), getattr(got, name)
            assert a.dtype == b.dtype and torch.equal(a, b), (track.obj_id, name, float((a - b).abs().max()))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_batched_objects_equal_one_at_a_time(family, attention_batch):
    model = build_tiny_video_model(64, 32, seed=5, family_cfg=FAMILIES[family])
    ref = _track(model, 1)
    assert {k[0] for k in ref} == {"fwd", "rev", "fwd2"} and {k[2] for k in ref} == {1, 2, 3, 4}
    _assert_same(ref, _track(model, 8))


@pytest.mark.parametrize("n_objects", [1, 2, 3])
def test_batched_objects_1_2_3(n_objects, monkeypatch):
    from samkit.video.memory_tracker import MemoryTracker

    monkeypatch.setattr(MemoryTracker, "attention_batch", 8)
    model = build_tiny_video_model(64, 32, seed=6)
    # object_batch=2 bounds the memory-attention batch: three objects run as a batch of 2 and one of 1
    _assert_same(_track(model, 1, n_objects, full=False), _track(model, 2, n_objects, full=False))


def test_batched_path_is_used_and_groups_by_memory_layout(monkeypatch):
    """Objects with the same memory layout go through one memory-attention batch; an object
    prompted on another frame reads a different number of memory frames on some frames and gets a
    batch of its own there; ``step`` (one object) is only used when a single object needs a step.
    The per-frame work runs once per frame; the mask decoder and the memory encoder one object at
    a time."""
    from samkit.video.memory_tracker import MemoryTracker

    monkeypatch.setattr(MemoryTracker, "attention_batch", 8)
    model = build_tiny_video_model(64, 32, seed=7)
    sizes, singles, heads, encoded = [], [], [], []
    real_attend, real_step, real_encode = MemoryTracker._attend, MemoryTracker.step, MemoryTracker.encode_memory

    def spy_attend(self, feats, memory, *a):
        sizes.append((feats.index, memory.shape[0]))
        return real_attend(self, feats, memory, *a)

    def spy_step(self, session, track, feats, t, *a, **k):
        singles.append(t)
        return real_step(self, session, track, feats, t, *a, **k)

    def spy_encode(self, session, feats, low, *a, **k):
        encoded.append(low.shape[0])
        return real_encode(self, session, feats, low, *a, **k)

    monkeypatch.setattr(MemoryTracker, "_attend", spy_attend)
    monkeypatch.setattr(MemoryTracker, "step", spy_step)
    monkeypatch.setattr(MemoryTracker, "encode_memory", spy_encode)
    ma, me, prefixes, projections = model.memory_attention, model.memory_encoder, [], []
    real_prefix, real_project, real_heads = ma.prefix, me.project, model.forward_sam_heads
    monkeypatch.setattr(ma, "prefix", lambda *a: prefixes.append(1) or real_prefix(*a))
    monkeypatch.setattr(me, "project", lambda x: projections.append(1) or real_project(x))
    monkeypatch.setattr(model, "forward_sam_heads", lambda x, *a: heads.append(x.shape[0]) or real_heads(x, *a))
    _track(model, 8, 3, full=False)
    # the object-independent start of the memory attention: once per frame (7 propagated frames with
    # batches, even where two batches ran) plus once in the single step of object 3 on frame 0
    assert len(prefixes) == 7 + 1
    # the prompts, and frame 0 for object 3 (the only object without a prompt there)
    assert singles == [0, 0, 2, 0]
    by_frame = {}
    for f, b in sizes:
        by_frame.setdefault(f, []).append(b)
    # frames 1 and 7: object 3 (conditioning frame 2, which is no previous-frame memory) reads one
    # memory frame fewer than objects 1 and 2; frame 2: object 3 has its prompt there
    assert by_frame == {1: [2, 1], 2: [2], 3: [3], 4: [3], 5: [3], 6: [3], 7: [2, 1]}
    # decoder and memory encoder: one object per call; the memory encoder's projection of the
    # image features once per propagated frame (plus once inside each single step's encoding)
    n_steps = len(singles) + sum(b for _, b in sizes)
    assert set(heads) == {1} and len(heads) == n_steps
    assert set(encoded) == {1} and len(encoded) == n_steps
    assert len(projections) == 7 + len(singles)


def test_object_batch_bad_value():
    model = build_tiny_video_model(64, 32, seed=0)
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(InputError, match="object_batch"):
            VideoTracker(model, object_batch=bad)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["edgetam", "sam2.1_hiera_t"])
def test_batched_objects_real_size(name, tmp_path_factory):
    """Full-size models on the synthesized parity weights and the golden clip: three objects
    (two prompted on frame 0, one on frame 2) tracked over 4 frames batched and one at a time."""
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    from parity import require_parity, synth_checkpoint_file
    from samkit.registry import load_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    clip = load_file(str(require_parity() / "golden" / "video_clip.safetensors"))
    frames = clip["frames"].numpy()[:4]
    model = load_model(name, checkpoint=synth_checkpoint_file(name, tmp_path_factory.mktemp("ckpt")))
    h, w = frames.shape[1:3]
    prompts = [(0, 1, dict(points=clip["obj1_points"].numpy(), labels=clip["obj1_labels"].numpy())),
               (0, 2, dict(box=[w * 0.1, h * 0.1, w * 0.5, h * 0.6])),
               (2, 3, dict(box=clip["obj2_box"].numpy()))]
    runs = []
    for batch in (1, 8):
        tr = VideoTracker(model, keep_logits=True, object_batch=batch)
        s = tr.start(frames)
        for f, oid, p in prompts:
            tr.add_prompt(s, f, oid, **p)
        runs.append({(f, o): lg for f, r in tr.propagate(s) for o, lg in r.logits.items()})
    _assert_same(*runs)
