"""SAM 3 concept tracking (``VideoTracker.add_text_prompt`` / ``add_prompt(text=...)``): video
masks over a few frames with two concepts against transformers' ``Sam3VideoModel`` (test-only
oracle, restated to the official code where it differs: tests/sam3/oracle.py ``hf_video``) on
the reduced configuration (video logits within 1e-3 of their scale: both store memory in
bfloat16; binary masks identical away from the 0 level), the association rules, the hole
filling and the errors."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent / "sam3"))

import oracle as O  # noqa: E402

from samkit import VideoTracker  # noqa: E402
from samkit.errors import InputError  # noqa: E402
from samkit.video.concept import (ConceptConfig, component_areas, component_areas_torch, fill_holes,  # noqa: E402
                                  suppress_shrunk)
from samkit.video.memory_tracker import preprocess_video_frame  # noqa: E402

TEXTS = ["person", "cat"]  # random weights: these two score alike, so both are found
H, W = 90, 120


@pytest.fixture(scope="module")
def sam3():
    return O.load_reduced()


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return [np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8) for _ in range(3)]


def _threshold(model, frames, k: int) -> float:
    """A detection threshold keeping the ``k`` best instances of frame 0 (random weights score low)."""
    x = preprocess_video_frame(frames[0], model.image_size, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    with torch.inference_mode():
        s = model.detect(model.encode(x), texts=TEXTS).scores.flatten().sort(descending=True).values
    return float(s[k] + s[k - 1]) / 2


# (samkit ConceptConfig, transformers Sam3VideoConfig): no NMS and no hole filling (transformers runs
# them only with its `kernels` package), new instances on frame 0 only (transformers re-runs every
# object when it adds one on a later frame; upstream adds new objects in a tracker state of their own)
CASES = {
    "no_hotstart": (dict(hotstart_delay=0, hotstart_unmatch_thresh=0, hotstart_dup_thresh=0),
                    dict(hotstart_delay=0, hotstart_unmatch_thresh=0, hotstart_dup_thresh=0)),
    "hotstart": ({}, {}),
}


@pytest.mark.oracle
@pytest.mark.parametrize("case", sorted(CASES))
def test_concept_tracking_matches_transformers(sam3, frames, case):
    ours_opts, hf_opts = CASES[case]
    thr = _threshold(sam3, frames, 4)
    tracker = VideoTracker(sam3, keep_logits=True, concept_config=ConceptConfig(
        score_threshold=thr, new_det_thresh=1.01, nms_iou=0.0, fill_hole_area=0, **ours_opts))
    session = tracker.start(frames)
    first = tracker.add_prompt(session, 0, text=TEXTS)
    assert sorted(first.masks) == [1, 2, 3, 4] and set(first.labels.values()) == set(TEXTS)
    ours = dict(tracker.propagate(session))
    cfg = O.REDUCED
    hf = O.hf_video(cfg, O.official_to_hf(O.synth_official(cfg)), score_threshold_detection=thr, new_det_thresh=1.01,
                    det_nms_thresh=0.0, fill_hole_area=0, **hf_opts)
    x = torch.cat([preprocess_video_frame(f, cfg.image_size, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
                   for f in frames])
    hf_session = O.hf_video_session(x, H, W, TEXTS, sam3.text_encoder.tokenize(TEXTS))
    with torch.inference_mode():
        outs = list(hf.propagate_in_video_iterator(hf_session))
    assert [o.frame_idx for o in outs] == sorted(ours) == [0, 1, 2]
    hidden = set(hf_session.hotstart_removed_obj_ids)
    if case == "hotstart":
        assert hidden and {o + 1 for o in hidden} == session.concept.removed
    for o in outs:
        res = ours[o.frame_idx]
        ref = {}
        for hid, low in o.obj_id_to_mask.items():
            up = F.interpolate(low[None].float(), size=(H, W), mode="bilinear", align_corners=False)[0, 0]
            if hid not in hidden and hid not in o.suppressed_obj_ids and (up > 0).any():
                ref[hid + 1] = up
        assert sorted(res.masks) == sorted(ref)
        for oid, up in ref.items():
            got = torch.from_numpy(res.logits[oid])
            # memory is stored in bfloat16 on both sides: rounding flips of nearly equal numbers
            # reach the next frames' logits at ~1e-4 of their scale, so 1e-3 here
            assert (got - up).abs().max() <= 1e-3 * up.abs().max()
            far = up.abs() > 1e-3 * up.abs().max()
            assert torch.equal((got > 0)[far], (up > 0)[far])
            assert np.array_equal(res.masks[oid], res.logits[oid] > 0) and res.labels[oid] in TEXTS


def test_new_instances_join_and_state_stays_bounded(sam3, frames):
    thr = _threshold(sam3, frames, 2)
    tracker = VideoTracker(sam3, concept_config=ConceptConfig(score_threshold=thr, new_det_thresh=thr, hotstart_delay=2,
                                                              hotstart_unmatch_thresh=1, hotstart_dup_thresh=1))
    video = frames + frames  # 6 frames: young instances removed in the hot-start window, later ones kept
    session = tracker.start(video)
    added = tracker.add_text_prompt(session, 0, TEXTS)
    assert added and set(added.values()) <= set(TEXTS)
    seen = set()
    for _, res in tracker.propagate(session):
        seen |= set(res.masks)
        assert set(res.labels or {}) == set(res.masks)
    state = session.concept
    assert state.next_id - 1 > len(added)  # instances joined after the first frame
    assert all(t >= len(video) - 1 - 2 for fr in state.unmatched.values() for t in fr)
    assert state.removed and session.objects  # both happened: removals and instances that stay
    assert set(state.unmatched) <= set(session.objects) and not (state.removed & set(session.objects))


@pytest.mark.parametrize("call, words", [
    (lambda tr, s: tr.add_prompt(s, 0, obj_id=1, text="bus"), "takes no obj_id"),
    (lambda tr, s: tr.add_prompt(s, 0, points=[[5, 5]], labels=[1]), "needs obj_id"),
    (lambda tr, s: tr.add_text_prompt(s, 0, " ".join(["word"] * 31)), "SAM 3 reads at most 30"),
    (lambda tr, s: tr.add_text_prompt(s, 0, "bus", clip=object()), "clip, first_obj_id"),
])
def test_concept_prompt_errors(sam3, frames, call, words):
    tracker = VideoTracker(sam3)
    session = tracker.start(frames)
    with pytest.raises(InputError, match="Fix:") as exc:
        call(tracker, session)
    assert words in str(exc.value)


def test_concept_session_refuses_other_prompts(sam3, frames):
    tracker = VideoTracker(sam3)
    session = tracker.start(frames)
    tracker.add_text_prompt(session, 0, "bus")
    with pytest.raises(InputError, match="tracks text concepts"):
        tracker.add_prompt(session, 1, obj_id=9, points=[[5, 5]], labels=[1])
    with pytest.raises(InputError, match="before tracking starts"):
        tracker.add_text_prompt(session, 1, "dog")
    with pytest.raises(InputError, match="forward only"):
        next(tracker.propagate(session, reverse=True))
    other = tracker.start(frames)
    tracker.add_prompt(other, 0, obj_id=1, points=[[5, 5]], labels=[1])
    with pytest.raises(InputError, match="start a new session"):
        tracker.add_text_prompt(other, 0, "bus")


# ----------------------------------------------------------------------------- the rules
def test_fill_holes_matches_connected_components():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(3, 24, 30)).astype(np.float32))
    logits[:, 5:15, 5:20] += 3.0
    out = fill_holes(logits, 8)
    for i in range(3):
        lg = logits[i].numpy()
        want = lg.copy()
        bg = (lg <= 0).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(bg, connectivity=8)
        small_bg = (bg > 0) & (stats[lab, cv2.CC_STAT_AREA] <= 8)
        want[small_bg] = 0.1
        fg = (want > 0).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        limit = min(8, int(fg.sum()) // 2)
        want[(fg > 0) & (stats[lab, cv2.CC_STAT_AREA] <= limit)] = -0.1
        np.testing.assert_array_equal(out[i].numpy(), want)


@pytest.mark.parametrize("areas_of", [component_areas, component_areas_torch])
def test_component_areas_are_eight_connected(areas_of):
    m = torch.zeros(1, 5, 5, dtype=torch.bool)
    m[0, 0, 0] = m[0, 1, 1] = m[0, 4, 4] = True
    areas = areas_of(m)[0]
    assert areas[0, 0] == areas[1, 1] == 2 and areas[4, 4] == 1 and areas[2, 2] == 0


def test_component_areas_without_opencv_are_the_same():
    """The torch fallback (no ``cv`` extra, or masks on an accelerator) equals OpenCV's
    connected components, which the CPU path uses (the fallback is ~1000x slower at 288 x 288)."""
    pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(4)
    m = torch.rand(3, 40, 50, generator=g) > 0.45
    assert torch.equal(component_areas(m), component_areas_torch(m))


def test_shrunk_masks_are_suppressed():
    a = torch.full((1, 8, 8), -5.0)
    a[0, :, :4] = 2.0
    b = torch.full((1, 8, 8), -5.0)
    b[0, :, :5] = 1.0  # mostly under a, which scores higher there: keeps 1 of 5 columns
    out = suppress_shrunk(torch.stack([a, b]))
    assert torch.equal(out[0], a) and (out[1] <= -10).all()


# ----------------------------------------------------------------------------- command line
def test_cli_track_text_with_sam3(sam3, frames, tmp_path, monkeypatch, capsys):
    pytest.importorskip("typer")
    from PIL import Image

    import samkit.registry
    import samkit.vocab
    from samkit.cli.main import main

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(samkit.registry, "load_model", lambda *a, **k: sam3)
    monkeypatch.setattr(samkit.vocab, "load_clip", lambda *a, **k: pytest.fail("a CLIP was loaded for SAM 3"))
    thr = _threshold(sam3, frames, 2)
    monkeypatch.setattr("samkit.video.concept.ConceptConfig", functools.partial(ConceptConfig, score_threshold=thr))
    code = main(["track", str(folder), "--model", "sam3", "--text", TEXTS[0], "--text", TEXTS[1], "--out",
                 str(tmp_path / "out"), "--format", "coco", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["frames"] == 3 and set(summary.get("labels", {}).values()) <= set(TEXTS)
    lines = [json.loads(x) for x in (tmp_path / "out" / "tracks.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and lines[0]["objects"] and all(o["label"] in TEXTS for line in lines for o in line["objects"])
