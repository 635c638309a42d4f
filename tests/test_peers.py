"""The transformers peers of ``benchmarks/bench_peers.py`` compute what samkit computes: the
synthesized parity weights, renamed to transformers' layout by ``tests/_hf_peers.py``, fill
every tensor of SamModel / Sam2Model / Sam2VideoModel, and their outputs equal samkit's on the
same inputs (otherwise the benchmark would time two different computations)."""
from __future__ import annotations

import _hf_peers as P
import numpy as np
import pytest
import torch
from parity import manifest, require_parity

pytestmark = pytest.mark.oracle

ATOL, AGREE = 1e-2, 0.999


def _need(name):
    """transformers, and for EdgeTAM timm (its RepViT trunk; the Makefile installs it as a
    test-only package beside transformers)."""
    pytest.importorskip("transformers")
    if name == "edgetam" and not P.timm_for_transformers():
        pytest.skip("transformers' EdgeTAM needs timm: make test-venv, or pip install --no-deps --target VENV/peers-timm timm==1.0.31")


@pytest.mark.parametrize("name,video", [("sam_vit_b", False), ("sam2.1_hiera_t", False), ("sam2.1_hiera_t", True),
                                        ("edgetam", False), ("edgetam", True)])
def test_layout_fills_every_tensor(name, video):
    """Every parameter and buffer the transformers model saves gets a checkpoint tensor of its
    shape, and no official key of the model's parts is left over (checked on meta tensors)."""
    _need(name)
    with torch.device("meta"):
        want = P.hf_model(name, video).state_dict()
        official = {k: torch.empty(shape) for k, shape, _ in manifest(name)}
    got = P.converted(name, want, official)
    assert set(got) == set(want)
    renamed = P.remap(P.FAMILY[name], official, "prompt_encoder.point_embed.weight" in want)
    unused = set(renamed) - set(want)
    if video or name == "sam_vit_b":
        assert unused == set(), sorted(unused)[:8]
    else:  # the image model leaves out exactly the memory parts
        assert unused and all(k.startswith(("memory_", "mask_downsample.", "object_pointer_proj.", "no_object_pointer",
                                            "occlusion_spatial", "temporal_positional", "no_memory_positional",
                                            "spatial_perceiver."))
                              for k in unused), sorted(unused)[:8]


def test_remap_rejects_a_missing_tensor():
    pytest.importorskip("transformers")
    with torch.device("meta"):
        want = P.hf_model("sam2.1_hiera_t").state_dict()
        official = {k: torch.empty(shape) for k, shape, _ in manifest("sam2.1_hiera_t")}
    official.pop("sam_mask_decoder.iou_token.weight")
    with pytest.raises(KeyError, match="iou_token"):
        P.converted("sam2.1_hiera_t", want, official)


def _image_case(name):
    from parity import synth_state_dict

    from samkit import ImagePredictor
    from samkit.checkpoint import load_into
    from samkit.registry import build_model

    require_parity()
    rng = np.random.default_rng(0)
    image = (rng.random((96, 144, 3)) * 255).astype(np.uint8)
    ours = build_model(name)
    load_into(ours, synth_state_dict(name), name)
    pred = ImagePredictor(ours.eval(), selection="native").set_image(image)
    return ours, pred, image, P.load_hf(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "sam_vit_b", "edgetam"])
def test_image_peer_same_masks(name):
    """Same low-res logits, IoU predictions and full-resolution masks, single and multimask."""
    _need(name)
    ours, pred, image, hf = _image_case(name)
    x, t = ours.preprocess(image)
    pts, lab = np.array([[60.0, 40.0], [100.0, 70.0]], np.float32), np.array([1, 0], np.int32)
    p = t.coords_to_frame(torch.from_numpy(pts.astype(np.float64))).float()
    with torch.inference_mode():
        emb = P.hf_encode(hf, x)
        for multimask in (True, False):
            low, iou = P.hf_decode(hf, emb, p, torch.from_numpy(lab), multimask)
            full = P.hf_full_mask(hf, low, image.shape[:2], t.input_size)
            mine = pred.predict(points=pts, labels=lab, multimask=multimask)
            assert low.shape == mine.low_res_logits.shape
            assert np.abs(mine.low_res_logits - low.numpy()).max() <= ATOL
            assert ((mine.low_res_logits > 0) == (low.numpy() > 0)).mean() >= AGREE
            np.testing.assert_allclose(mine.scores, iou.numpy(), atol=1e-3)
            assert (mine.masks != full.numpy()).mean() <= 1 - AGREE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "edgetam"])
def test_video_peer_same_logits(name, tmp_path):
    """Sam2VideoModel / EdgeTamVideoModel track the golden clip's object 1 like samkit's
    VideoTracker (3 frames)."""
    _need(name)
    from parity import synth_checkpoint_file
    from safetensors.torch import load_file

    from samkit.registry import load_model
    from samkit.video import VideoTracker
    from samkit.video.memory_tracker import preprocess_video_frame

    clip = load_file(str(require_parity() / "golden" / "video_clip.safetensors"))
    vid = clip["frames"].numpy()[:3]
    pts, labs = clip["obj1_points"].numpy(), clip["obj1_labels"].numpy()
    T, H, W = vid.shape[:3]
    tr = VideoTracker(load_model(name, checkpoint=synth_checkpoint_file(name, tmp_path)), keep_logits=True)
    s = tr.start(vid)
    r0 = tr.add_prompt(s, 0, 1, points=pts, labels=labs)
    ours = {f: res.logits[1] for f, res in tr.propagate(s)}
    hf = P.load_hf(name, video=True)
    frames = torch.cat([preprocess_video_frame(f, 1024, tr.mean, tr.std, torch.device("cpu")) for f in vid])
    with torch.inference_mode():
        sess = P.hf_video_session(hf, frames, H, W)
        P.hf_video_prompt(hf, sess, 0, 1, torch.from_numpy(pts) * torch.tensor([1024.0 / W, 1024.0 / H]),
                          torch.from_numpy(labs))
        theirs = {f: lg[0].numpy() for f, lg in P.hf_video_frames(hf, sess, H, W)}
    assert sorted(theirs) == sorted(ours) == list(range(T))
    assert np.abs(r0.logits[1] - theirs[0]).max() <= ATOL
    for f in range(T):
        assert np.abs(ours[f] - theirs[f]).max() <= ATOL, f
        assert ((ours[f] > 0) == (theirs[f] > 0)).mean() >= AGREE, f
