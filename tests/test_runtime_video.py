"""The video half of the ONNX export (``samkit.export.video_graphs``) and its torch-free runner
``samkit.runtime.OnnxVideoTracker``, on reduced models of the three video families
(``tests/_tiny_families.tiny_video_family``).

* per graph: each runtime step (graph + the numpy around it) against the samkit torch code it
  replaces, on the same inputs, within 1e-4;
* end to end: 6 frames, 2 objects, prompts on two frames, forward then backward, in a process
  where torch cannot be imported (``test_runtime.run_without_torch``), against samkit's torch
  ``VideoTracker``: >= 99.9 % of mask pixels agree (and the logits nearly so);
* bad input: an export folder without video graphs, a missing or altered graph file.

EdgeTAM runs in the default suite; SAM 2.1, EfficientTAM and its pooled-memory variants are
``slow`` (each export takes half a minute on the CI machine)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from _video_clip import clip, run_tracker  # noqa: E402
from test_runtime import ROOT, _env, run_without_torch  # noqa: E402

FAMILIES = [pytest.param("edgetam"), pytest.param("sam2", marks=pytest.mark.slow),
            pytest.param("efficienttam", marks=pytest.mark.slow),
            pytest.param("efficienttam_1", marks=pytest.mark.slow),
            pytest.param("efficienttam_2", marks=pytest.mark.slow)]
TOL = 1e-4


@pytest.fixture(scope="module")
def video_export(tmp_path_factory):
    """``video_export(family) -> (model, folder)``, exported once per module."""
    cache: dict = {}

    def get(family: str):
        if family not in cache:
            from _tiny_families import tiny_video_family
            from samkit.export import export_onnx

            model = tiny_video_family(family)
            cache[family] = (model, export_onnx(model, tmp_path_factory.mktemp(f"video_{family}"), name=family))
        return cache[family]

    return get


def _np_entry(e):
    from samkit.runtime.video import to_bfloat16
    from samkit.video.session import FrameEntry

    return FrameEntry(obj_ptr=e.obj_ptr.numpy(), object_score=e.object_score.numpy(), low_res=e.low_res.numpy(),
                      maskmem=to_bfloat16(e.maskmem.float().numpy()))


def _close(a, b, what: str, tol: float = TOL) -> None:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = float(np.abs(a - b).max()) if a.size else 0.0
    assert err <= tol * max(1.0, float(np.abs(b).max())), f"{what}: max |onnx - torch| = {err:.3g}"


def _check_memory_attention(model, tt, rt, st, sr, ft, fr) -> None:
    """The memory attention (runtime: memory assembled in numpy + graph; torch: ``MemoryTracker``)
    on banks of 1 and of 4 frames with object pointers, forward and backward."""
    from samkit.video.session import FrameEntry, ObjectTrack

    gen = torch.Generator().manual_seed(2)
    cm, c = model.memory_config.mem_dim, model.memory_config.hidden_dim
    n = st.maskmem_pos.shape[1]

    def entry():
        return FrameEntry(obj_ptr=torch.randn(1, c, generator=gen), object_score=torch.ones(1, 1),
                          low_res=torch.zeros(1, 1, 4, 4), maskmem=torch.randn(1, n, cm, generator=gen).bfloat16())

    for cond, non_cond, t, rev in (([3], [], 4, False), ([0], [1, 2, 3], 4, False), ([6], [5, 4], 3, True)):
        track = ObjectTrack(1, cond={k: entry() for k in cond}, non_cond={k: entry() for k in non_cond})
        track_np = ObjectTrack(1, cond={k: _np_entry(e) for k, e in track.cond.items()},
                               non_cond={k: _np_entry(e) for k, e in track.non_cond.items()})
        a = rt._with_memory(sr, track_np, fr, t, False, rev)
        b = tt.engine._with_memory(st, track, ft, t, False, rev)
        _close(a, b.detach().numpy(), f"memory attention (cond {cond}, non-cond {non_cond}, frame {t})")


@pytest.mark.parametrize("family", FAMILIES)
def test_video_graphs_match_torch(family, video_export):
    """Each graph with the runtime's numpy around it vs samkit's torch ``MemoryTracker``."""
    from samkit.runtime import OnnxVideoTracker
    from samkit.video import VideoTracker
    from samkit.video.memory_tracker import preprocess_video_frame

    model, folder = video_export(family)
    doc = json.loads((folder / "samkit-export.json").read_text())
    video_files = [g["file"] for k, g in doc["graphs"].items() if k in doc["pipelines"]["video"].values()]
    assert video_files and all(f in doc["files"] and len(doc["files"][f]["sha256"]) == 64 for f in video_files)
    frames = clip()
    tt, rt = VideoTracker(model), OnnxVideoTracker(folder)
    st, sr = tt.start(frames), rt.start(frames)
    # the encoder: a real frame, its levels and position
    ft, fr = tt._features(st, 0), rt._features(sr, 0)
    _close(rt.preprocess(frames[0]), preprocess_video_frame(frames[0], rt.size, tt.mean, tt.std, "cpu").numpy(),
           "preprocessed frame", 1e-6)
    for i, (a, b) in enumerate(zip(fr.feats + [fr.pos], ft.feats + [ft.pos])):
        _close(a, b.numpy(), f"encoder output {i}")
    # the decoder heads on the raw features: a click (multimask) and two clicks + a box (single)
    coords = torch.tensor([[[30.0, 40.0]]])
    for c, lab, multi in ((coords, torch.tensor([[1]], dtype=torch.int32), True),
                          (torch.tensor([[[10.0, 12.0], [90.0, 100.0], [30.0, 40.0], [70.0, 20.0]]]),
                           torch.tensor([[2, 3, 1, 0]], dtype=torch.int32), False)):
        out = model.forward_sam_heads(ft.top, {"point_coords": c, "point_labels": lab}, None, ft.high_res, multi)
        low, ptr, score = rt._heads(fr.top, fr, c.numpy(), lab.numpy().astype(np.float32), None, multi)
        for a, b, what in ((low, out[3], "low-res mask"), (ptr, out[5], "object pointer"), (score, out[6], "score")):
            _close(a, b.detach().numpy(), f"decoder {what} (multimask={multi})")
    # a mask prompt as output (mask downsample + decoder pointer)
    mask = torch.zeros(1, 1, rt.size, rt.size)
    mask[..., 20:70, 30:90] = 1.0
    out = model.use_mask_as_output(ft.top, ft.high_res, mask)
    for a, b, what in zip(rt._mask_as_output(fr, mask.numpy()), (out[3], out[5], out[6]), ("low", "pointer", "score")):
        _close(a, b.detach().numpy(), f"mask prompt {what}")
    # the memory encoder (bfloat16 tokens: one bfloat16 step apart at most) and its positions
    from samkit.runtime.video import from_bfloat16

    low_t = torch.randn(1, 1, rt.size // 4, rt.size // 4, generator=torch.Generator().manual_seed(1)) * 3
    for score, pts in ((torch.tensor([[1.5]]), True), (torch.tensor([[-0.5]]), False)):
        mt = tt.engine.encode_memory(st, ft, low_t, score, pts).float().numpy()
        mr = from_bfloat16(rt._encode_memory(sr, fr, low_t.numpy(), score.numpy(), pts))
        np.testing.assert_allclose(mr, mt, rtol=2 ** -7, atol=1e-6, err_msg="memory features")
    _close(sr.maskmem_pos, st.maskmem_pos.numpy(), "memory positions")
    _check_memory_attention(model, tt, rt, st, sr, ft, fr)


TRACK = '''
    import json, numpy as np
    sys.path.insert(0, sys.argv[3])
    from samkit.runtime import OnnxVideoTracker
    from _video_clip import clip, run_tracker
    folder, tmp = sys.argv[1], sys.argv[2]
    out, stats = run_tracker(OnnxVideoTracker(folder, keep_logits=True), clip())
    keys = sorted(out)
    np.savez(tmp + "/rt.npz", masks=np.stack([out[k][0] for k in keys]), logits=np.stack([out[k][1] for k in keys]),
             scores=np.array([out[k][2] for k in keys]))
    json.dump({"keys": [list(k) for k in keys], "stats": stats}, open(tmp + "/rt.json", "w"))
'''


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_video_tracker_without_torch_matches_torch(family, video_export, tmp_path):
    from samkit.video import VideoTracker

    model, folder = video_export(family)
    run_without_torch(TRACK, str(folder), str(tmp_path), str(ROOT / "tests"))
    ref, stats = run_tracker(VideoTracker(model, keep_logits=True), clip())
    got = np.load(tmp_path / "rt.npz")
    meta = json.loads((tmp_path / "rt.json").read_text())
    keys = sorted(ref)
    assert [tuple(k) for k in meta["keys"]] == keys  # same frames, directions and objects
    assert tuple(meta["stats"]) == stats  # the same bounded memory bank (entries and arrays held)
    masks_t = np.stack([ref[k][0] for k in keys])
    assert 0.002 < masks_t.mean() < 0.9  # the comparison is not between empty masks
    assert (got["masks"] == masks_t).mean() >= 0.999
    np.testing.assert_allclose(got["scores"], [ref[k][2] for k in keys], atol=1e-3)
    logits_t = np.stack([ref[k][1] for k in keys])
    assert np.abs(got["logits"] - logits_t).max() <= 1e-3 * max(1.0, np.abs(logits_t).max())


def test_video_tracker_refuses_bad_export_folders(video_export, tmp_path):
    from samkit.errors import CheckpointError, InputError
    from samkit.runtime import OnnxVideoTracker
    from samkit.runtime.manifest import MANIFEST

    _, folder = video_export("edgetam")
    doc = json.loads((folder / MANIFEST).read_text())
    # an export without video graphs (as an image-only model writes it)
    image_only = tmp_path / "image_only"
    shutil.copytree(folder, image_only)
    doc2 = dict(doc, pipelines={"image": doc["pipelines"]["image"]})
    doc2.pop("video")
    (image_only / MANIFEST).write_text(json.dumps(doc2))
    with pytest.raises(InputError, match="has no video graphs, so it cannot track.*Fix: export a video model"):
        OnnxVideoTracker(image_only)
    # the CLI says so in one line, exit 2
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for t, f in enumerate(clip(n=2)):
        Image.fromarray(f).save(frames / f"{t:05d}.png")
    cli = subprocess.run([sys.executable, "-m", "samkit", "track", str(frames), "--model", str(image_only), "--point",
                          "0,20,20,1", "--out", str(tmp_path / "out")], capture_output=True, text=True, env=_env(),
                         cwd=ROOT, timeout=300)
    assert cli.returncode == 2, cli.stdout + cli.stderr
    assert "error:" in cli.stderr and "no video graphs" in cli.stderr and "Traceback" not in cli.stderr
    # the good folder tracks from the CLI (and torch-only options are refused)
    good = subprocess.run([sys.executable, "-m", "samkit", "track", str(frames), "--model", str(folder), "--point",
                           "0,24,25,1", "--box", "0,48,44,86,76,2", "--out", str(tmp_path / "good"), "--json"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["frames"] == 2 and "onnxruntime" in good.stderr
    assert sorted(p.name for p in (tmp_path / "good" / "masks").iterdir()) == [
        "00000_obj1.png", "00000_obj2.png", "00001_obj1.png", "00001_obj2.png"]
    refused = subprocess.run([sys.executable, "-m", "samkit", "track", str(frames), "--model", str(folder), "--point",
                              "0,24,25,1", "--device", "cuda", "--out", str(tmp_path / "x")], capture_output=True,
                             text=True, env=_env(), cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and "export folder" in refused.stderr and "--device" in refused.stderr
    # a missing and an altered video graph
    names = {g["role"]: g["file"] for g in doc["graphs"].values()}
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    (damaged / names["memory_attention"]).unlink()
    data = bytearray((damaged / names["video_decoder"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / names["video_decoder"]).write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        OnnxVideoTracker(damaged)
    assert f"missing: {names['memory_attention']}" in str(err.value)
    assert names["video_decoder"] in str(err.value) and "altered" in str(err.value)


def test_export_video_refused_for_image_models():
    from _tiny_families import tiny_family
    from samkit.errors import InputError
    from samkit.export import export_onnx

    with pytest.raises(InputError, match="has no video memory.*Fix"):
        export_onnx(tiny_family("sam2"), "unused-folder", video=True)
