"""Open-Vocabulary SAM: RoIAlign, the classifier pieces, prototypes, multi-file loading, bad input.
(Parity with the official code: test_ovsam_parity.py.)"""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent / "ovsam"))

import ovsam_cases as cases  # noqa: E402

from samkit import load_model  # noqa: E402
from samkit.checkpoint import model_signature, remap  # noqa: E402
from samkit.errors import CheckpointError, DownloadError, InputError  # noqa: E402
from samkit.heads.ovsam_head import ensemble_logits, mask_boxes, roi_levels  # noqa: E402
from samkit.models import ovsam_vocab  # noqa: E402
from samkit.ops.roi_align import roi_align  # noqa: E402
from samkit.registry import requirements  # noqa: E402
from samkit.specs import MODELS  # noqa: E402


# --------------------------------------------------------------------------- RoIAlign
def _roi_align_loop(x, rois, size, scale, ratio, aligned):
    """mmcv's CPU kernel restated sample by sample (roi_align.cpp: pre_calc + average)."""
    out = torch.zeros(rois.shape[0], x.shape[1], size, size, dtype=torch.float64)
    _, _, h, w = x.shape
    xd = x.double()
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        off = 0.5 if aligned else 0.0
        sx, sy, ex, ey = x1 * scale - off, y1 * scale - off, x2 * scale - off, y2 * scale - off
        rw, rh = ex - sx, ey - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = ratio if ratio > 0 else math.ceil(rh / size)
        gw = ratio if ratio > 0 else math.ceil(rw / size)
        count = max(gh * gw, 1)
        for ph in range(size):
            for pw in range(size):
                acc = torch.zeros(x.shape[1], dtype=torch.float64)
                for iy in range(gh):
                    yy = sy + ph * rh / size + (iy + 0.5) * (rh / size) / gh
                    for ix in range(gw):
                        xx = sx + pw * rw / size + (ix + 0.5) * (rw / size) / gw
                        if yy < -1.0 or yy > h or xx < -1.0 or xx > w:
                            continue
                        yy2, xx2 = max(yy, 0.0), max(xx, 0.0)
                        yl, xl = int(yy2), int(xx2)
                        if yl >= h - 1:
                            yl = yh = h - 1
                            yy2 = float(yl)
                        else:
                            yh = yl + 1
                        if xl >= w - 1:
                            xl = xh = w - 1
                            xx2 = float(xl)
                        else:
                            xh = xl + 1
                        ly, lx = yy2 - yl, xx2 - xl
                        acc += ((1 - ly) * (1 - lx) * xd[int(b), :, yl, xl] + (1 - ly) * lx * xd[int(b), :, yl, xh]
                                + ly * (1 - lx) * xd[int(b), :, yh, xl] + ly * lx * xd[int(b), :, yh, xh])
                out[k, :, ph, pw] = acc / count
    return out


@pytest.mark.parametrize("aligned,ratio", [(True, 0), (False, 0), (True, 2)])
def test_roi_align_matches_the_kernel_restated(aligned, ratio):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 9, 11, generator=g)
    rois = torch.tensor([[0, 8.0, 4.0, 70.0, 50.0], [1, -20.0, -8.0, 30.0, 20.0], [0, 0.0, 0.0, 0.0, 0.0],
                         [1, 60.0, 40.0, 95.0, 80.0], [0, -40.0, -40.0, -12.0, -12.0], [0, 3.3, 4.7, 3.9, 5.1]])
    got = roi_align(x, rois, 3, 1 / 8, ratio, aligned)
    ref = _roi_align_loop(x, rois, 3, 1 / 8, ratio, aligned)
    assert torch.allclose(got.double(), ref, atol=1e-5)
    assert got[4].abs().max() == 0  # a box more than one pixel outside the map
    if aligned and ratio == 0:
        assert got[2].abs().max() == 0  # an empty box has no samples (unaligned boxes are >= 1 px)


def test_mask_boxes_and_levels():
    low = torch.full((3, 16, 16), -1.0)
    low[0, 2:5, 3:9] = 1.0
    low[1, 15, 0] = 0.5
    boxes = mask_boxes(low)
    assert boxes.tolist() == [[12.0, 8.0, 36.0, 20.0], [0.0, 60.0, 4.0, 64.0], [0.0, 0.0, 0.0, 0.0]]
    sides = torch.tensor([[0, 0, 111.0, 111.0], [0, 0, 112.0, 112.0], [0, 0, 230.0, 230.0], [0, 0, 500, 500],
                          [0, 0, 1000.0, 1000.0], [0, 0, 0, 0]])
    assert roi_levels(sides, 4).tolist() == [0, 1, 2, 3, 3, 0]


def test_ensemble_is_upstreams_formula_and_stays_finite():
    g = torch.Generator().manual_seed(0)
    q, c = torch.randn(4, 6, generator=g) * 5, torch.randn(4, 6, generator=g) * 5
    valid = torch.tensor([True, True, False, True])
    seen = torch.tensor([True, False, True, False, False, True])
    allowed = torch.tensor([True, True, True, False, True, True])
    got = ensemble_logits(q, c, valid, seen, allowed, 0.1, 0.9)
    # upstream (OVSAM.open_voc_inference) on probabilities
    pq, pc = q.softmax(-1), c.softmax(-1)
    v = valid.float()[:, None]
    a, b = 0.1 * v, 0.9 * v
    ref = ((pq ** (1 - a) * pc ** a).log() * seen.float() + (pq ** (1 - b) * pc ** b).log() * (1 - seen.float()))
    ref[:, :-1][:, ~allowed[:-1]] = -1000.0
    assert torch.allclose(got, ref, atol=1e-5)
    # where upstream's probabilities underflow to 0 (log 0 * 0 = NaN) the log-space form stays finite
    huge = torch.tensor([[0.0, 200.0, -200.0]])
    out = ensemble_logits(huge, huge, torch.tensor([True]), torch.tensor([True, False, True]))
    assert torch.isfinite(out).all() and int(out[0, :-1].argmax()) == 1


# --------------------------------------------------------------------------- prototypes
class _FakeClip:
    """A text tower that maps every text to a fixed pseudo-random vector (and counts calls)."""

    def __init__(self, dim=8):
        self.dim, self.calls = dim, 0

    def tokenize(self, texts):
        return list(texts)

    def encode_text(self, texts):
        self.calls += 1
        rows = [torch.Generator().manual_seed(sum(map(ord, t)) * 7919 + len(t)) for t in texts]
        return torch.stack([torch.randn(self.dim, generator=r) * 3 for r in rows])


def test_prototypes_follow_upstreams_gen_cls():
    clip = _FakeClip()
    names = ["couch,sofa,sofas", "tape_(sticky_cloth_or_paper)", "hot_dog"]
    protos = ovsam_vocab.compute_prototypes(names, clip)
    assert protos.shape == (3, 3, 8)
    assert ovsam_vocab.split_synonyms(names[1]) == ["tape (sticky cloth", "paper)"]
    for i, name in enumerate(names):
        syn = ovsam_vocab.split_synonyms(name)
        for j in range(3):
            s = syn[j] if j < len(syn) else syn[0]  # padding repeats the first synonym
            e = F.normalize(clip.encode_text([t.format(s) for t in ovsam_vocab.VILD_TEMPLATES]), dim=-1)
            assert torch.allclose(protos[i, j], F.normalize(e.mean(0), dim=0), atol=1e-6)
    assert len(ovsam_vocab.VILD_TEMPLATES) == 14


def test_builtin_vocabularies_and_splits():
    coco, lvis = ovsam_vocab.builtin_names("coco"), ovsam_vocab.builtin_names("lvis")
    assert len(coco) == 80 and coco[0].startswith("person,child") and len(lvis) == 1203
    assert lvis[0] == "aerosol_can" and lvis[-1] == "zucchini"
    c, lv = ovsam_vocab.builtin_split("coco"), ovsam_vocab.builtin_split("lvis")
    assert (len(c["base"]), len(c["novel"])) == (48, 17) and not set(c["base"]) & set(c["novel"])
    assert (len(lv["base"]), len(lv["novel"])) == (866, 337)
    assert set(lv["base"]) | set(lv["novel"]) == set(range(1203))


# --------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ovsam")
    return cases.load_ovsam("tiny", folder, vocabulary=False), folder


def test_default_vocabulary_is_computed_once_and_cached(tiny, monkeypatch, tmp_path):
    model, _ = tiny
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path))
    clip = _FakeClip(dim=model.embed_dim)
    monkeypatch.setattr(model, "_load_clip", lambda: clip)
    monkeypatch.setattr(model, "trained_on", "coco")
    model._pending = "coco"
    feats = cases_features(model)
    out = model.decode(feats, torch.tensor([[[500.0, 300.0]]]), torch.ones(1, 1, dtype=torch.long), None, None, True)
    assert out.low_res.shape == (1, 1, 256, 256) and out.iou.shape == (1, 1)
    assert model.vocabulary_name == "coco" and len(model.label_names) == 80 and clip.calls > 0
    name = model.names_of(out)[0][0]
    assert name in model.label_names and 0.0 < float(out.label_scores) <= 1.0
    # a COCO class of neither split is never predicted; seen = the 48 base classes + background
    assert int(out.label_ids) in set(ovsam_vocab.builtin_split("coco")["base"]) | set(
        ovsam_vocab.builtin_split("coco")["novel"])
    assert int(model.seen.sum()) == 49 and int(model.allowed.sum()) == 66
    calls = clip.calls
    model.set_vocabulary("coco")  # from the disk cache
    assert clip.calls == calls
    assert list((tmp_path / "ovsam-prototypes").glob("clip_rn50x16-*.safetensors"))
    model.set_vocabulary(["dog", "cat"], clip=clip)
    assert model.allowed.numel() == 0 and model.seen.tolist() == [False, False, True]
    model.set_vocabulary(None)
    out = model.decode(feats, None, None, torch.tensor([[100.0, 100.0, 600.0, 500.0]]), None, False)
    assert out.label_ids is None
    with pytest.raises(InputError, match="no labels"):
        model.names_of(out)


def cases_features(model):
    x, _ = cases.input_tensor()
    with torch.inference_mode():
        return model.encode(x)


@pytest.mark.parametrize("vocabulary,message", [
    ([], "empty"), ("imagenet", "unknown built-in"), (["cat", ""], "non-empty"), (["cat", 3], "non-empty"),
    (["cat", "cat"], "more than once"), ("cat", "unknown built-in"), ([" , "], "non-empty")])
def test_bad_vocabularies(tiny, vocabulary, message):
    with pytest.raises(InputError, match=message):
        tiny[0].set_vocabulary(vocabulary, prototypes=torch.ones(1, 32))


def test_bad_prototypes_and_splits(tiny):
    model = tiny[0]
    with pytest.raises(InputError, match=r"512 dims .* compares 32-dim"):
        model.set_vocabulary(["a", "b"], prototypes=torch.randn(2, 512))
    with pytest.raises(InputError, match="3 prototypes for 2"):
        model.set_vocabulary(["a", "b"], prototypes=torch.randn(3, 32))
    with pytest.raises(InputError, match="NaN"):
        model.set_vocabulary(["a"], prototypes=torch.full((1, 32), float("nan")))
    with pytest.raises(InputError, match="both base and novel"):
        model.set_vocabulary(["a", "b"], prototypes=torch.randn(2, 32), base=[0], novel=[0])
    with pytest.raises(InputError, match=r"in \[0, 2\)"):
        model.set_vocabulary(["a", "b"], prototypes=torch.randn(2, 32), base=[2])


# --------------------------------------------------------------------------- files
def test_specs_requirements_and_licence(monkeypatch):
    monkeypatch.setattr("samkit.registry._LICENSE_WARNED", set())
    spec = MODELS["ovsam_coco_rn50x16"]
    assert [s.name for s in requirements(spec)] == ["clip_rn50x16", "ovsam_sam2clip_vith_rn50x16", "sam_vit_h"]
    assert not spec.commercial_use and "S-Lab" in spec.license and spec.kind == "segmenter"
    assert MODELS["ovsam_sam2clip_vith_rn50x16"].kind == "component"
    assert spec.sha256 == "c382555880466adafa2eff148851b3cc71e1ea5eb5ff8f36d0fab2047550e27e"
    assert MODELS["ovsam_sam2clip_vith_rn50x16"].extra["size"] == 536408050
    with pytest.warns(UserWarning, match="S-Lab"):
        with pytest.raises(Exception):
            load_model("ovsam_lvis_rn50x16", checkpoint="/nonexistent/clip2sam_lvis_rn50x16.pth")


@pytest.mark.parametrize("cfg_name", ["full"])
def test_released_layouts_remap_onto_the_models(cfg_name):
    """The official key layouts (manifests from upstream's modules at the released sizes) remap
    onto samkit's OVSAM and its companions exactly."""
    spec = MODELS["ovsam_coco_rn50x16"]
    sig = model_signature(spec)
    main = {k: torch.empty(0) for k, *_ in cases.manifest(cfg_name, "clip2sam")}
    shapes = {k: tuple(s) for k, s, _ in cases.manifest(cfg_name, "clip2sam")}
    mapped = remap({k: torch.empty(shapes[k], device="meta") for k in main}, spec)
    got = {k: tuple(v.shape) for k, v in mapped.items()}
    for name, take, put in spec.extra["requires"]:
        part = {"clip_rn50x16": "clip", "ovsam_sam2clip_vith_rn50x16": "sam2clip", "sam_vit_h": "prompt_encoder"}[name]
        sd = {k: torch.empty(s, device="meta") for k, s, _ in cases.manifest(cfg_name, part)}
        for k, v in remap(sd, MODELS[name]).items():
            if k.startswith(take):
                got[put + k[len(take):]] = tuple(v.shape)
    assert got == sig
    adapter = {k: tuple(v.shape) for k, v in remap(
        {k: torch.empty(s, device="meta") for k, s, _ in cases.manifest(cfg_name, "sam2clip")},
        MODELS["ovsam_sam2clip_vith_rn50x16"]).items()}
    assert adapter == model_signature("ovsam_sam2clip_vith_rn50x16")


def test_a_sam_checkpoint_given_as_ovsam_names_what_it_is(synth_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path))
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    with pytest.warns(UserWarning):
        with pytest.raises(CheckpointError) as err:
            load_model("ovsam_coco_rn50x16", checkpoint=synth_checkpoint("mobile_sam"))
    text = str(err.value)
    assert "not the main file (clip2sam_coco_rn50x16.pth) of ovsam_coco_rn50x16" in text
    assert "It is a checkpoint of mobile_sam" in text and "samkit models download ovsam_coco_rn50x16" in text


def test_a_clip_file_given_as_ovsam_or_as_the_adapter_is_refused(tiny, monkeypatch):
    from samkit import families, specs
    from samkit.backbones.clip_resnet import ModifiedResNet

    _, folder = tiny
    paths = cases.write_files("tiny", folder)
    spec = cases.spec_of("tiny")
    with pytest.raises(CheckpointError, match=r"not the main file \(clip2sam_tiny.pth\) of ovsam_tiny_test"):
        load_model(spec, checkpoint=paths["clip"], companions=cases.companions(paths))

    # a registered (tiny) CLIP whose file is given in the adapter's place: identified and refused
    def build_clip_tiny():
        m = torch.nn.Module()
        m.visual = ModifiedResNet(**cases.CONFIGS["tiny"]["clip"])
        return m

    monkeypatch.setitem(specs.MODELS, "clip_tiny_test", dataclasses.replace(
        specs.MODELS["clip_rn50x16"], name="clip_tiny_test", module="samkit.models.clip"))
    monkeypatch.setitem(families._BUILDERS, "clip_tiny_test", build_clip_tiny)
    rows = (("clip_tiny_test", "visual.", "backbone."),) + tuple(spec.extra["requires"][1:])
    spec = cases.spec_of("tiny", requires=rows)
    comp = dict(cases.companions(paths), ovsam_sam2clip_vith_rn50x16=paths["clip"])
    comp["clip_tiny_test"] = comp.pop("clip_rn50x16")
    with pytest.raises(CheckpointError, match=r"given as the ovsam_sam2clip_vith_rn50x16 file .* a checkpoint of "
                                              r"clip_tiny_test.*samkit models download ovsam_sam2clip_vith_rn50x16"):
        load_model(spec, checkpoint=paths["clip2sam"], companions=comp)
    comp["ovsam_sam2clip_vith_rn50x16"] = paths["sam2clip"]
    assert load_model(spec, checkpoint=paths["clip2sam"], companions=comp).embed_dim == 32


def test_companion_without_the_keys_it_must_give(tiny):
    _, folder = tiny
    paths = cases.write_files("tiny", folder)
    comp = dict(cases.companions(paths), sam_vit_h=paths["sam2clip"])
    with pytest.raises(CheckpointError, match=r"no 'prompt_encoder\.\*' keys.*sam_vit_h_4b8939\.pth"):
        load_model(cases.spec_of("tiny"), checkpoint=paths["clip2sam"], companions=comp)
    with pytest.raises(InputError, match="companions names sam_vit_b, which"):
        load_model(cases.spec_of("tiny"), checkpoint=paths["clip2sam"], companions={"sam_vit_b": paths["clip"]})


def test_missing_companion_names_the_file_and_the_command(tiny, monkeypatch, tmp_path):
    _, folder = tiny
    monkeypatch.setenv("SAMKIT_HOME", str(tmp_path))
    monkeypatch.setenv("SAMKIT_OFFLINE", "1")
    paths = cases.write_files("tiny", folder)
    comp = cases.companions(paths)
    del comp["sam_vit_h"]
    with pytest.raises(DownloadError) as err:
        load_model(cases.spec_of("tiny"), checkpoint=paths["clip2sam"], companions=comp)
    text = str(err.value)
    assert "also needs sam_vit_h_4b8939.pth (model sam_vit_h)" in text
    assert "samkit models download sam_vit_h" in text and str(tmp_path) in text

