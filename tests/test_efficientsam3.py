"""EfficientSAM3 image-encoder students: the trunks against goldens of the official code
(SimonZeng7108/efficientsam3, made by scripts/make_efficientsam3_goldens.py on synthesized weights),
the released key layout (tests/sam3/manifest_efficientsam3_trunks.json + SAM 3's manifest), the
whole student model end to end, and the errors for a checkpoint of the other kind."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "sam3"))

import es3_oracle as E  # noqa: E402
import oracle as O  # noqa: E402

from samkit import ImagePredictor  # noqa: E402
from samkit.checkpoint import load_into, remap  # noqa: E402
from samkit.errors import CheckpointError  # noqa: E402
from samkit.backbones.efficientsam3_trunk import STUDENT_BACKBONES  # noqa: E402
from samkit.models.efficientsam3 import build_efficientsam3_trunk, efficientsam3_model  # noqa: E402
from samkit.models.sam3 import Sam3Config, Sam3Model  # noqa: E402

FAMILY = {kind: fam for kind, (fam, _) in STUDENT_BACKBONES.items()}


def _trunk(kind: str, size: int) -> torch.nn.Module:
    """The full-width student trunk for ``size`` px, loaded through the student format's remap."""
    trunk = build_efficientsam3_trunk(kind, Sam3Config(image_size=size))
    sd = remap(E.synth_trunk(kind), E.student_spec(FAMILY[kind]))
    prefix = "image_encoder.trunk."
    trunk.load_state_dict({k[len(prefix):]: v for k, v in sd.items()}, strict=True)
    return trunk.eval()


def _close(ours: torch.Tensor, theirs: torch.Tensor, noise: float = 0.0) -> None:
    """Max-abs error within 1e-4 of the golden's scale, or within 4x the official code's own float32
    error against float64 (``noise``), whichever is larger: with synthesized weights the 54 blocks of
    RepViT-M2.3 grow its activations to 3e6, where float32 rounding alone reaches 7e-5 of the scale."""
    scale = float(theirs.abs().max())
    err = float((ours - theirs).abs().max())
    tol = max(1e-4 * scale, 4.0 * noise)
    assert err <= tol, f"max-abs error {err:.3g} exceeds {tol:.3g} (scale {scale:.3g}, official fp32 noise {noise:.3g})"


# ----------------------------------------------------------------------------- parity with the official code
@pytest.mark.parametrize("kind", list(E.KINDS) + [pytest.param(k, marks=pytest.mark.slow) for k in E.ALL_KINDS
                                                   if k not in E.KINDS])
def test_trunk_matches_the_official_student(kind):
    """224 px input -> 1024 x 16 x 16 (backbone, projection head, bilinear resize), BatchNorm
    running statistics in eval mode, against the official wrappers and backbones; also after
    ``fuse()``. Every stage-1 trunk: the three of the released stage-3 models, the other six ``slow``."""
    x, trunk, want = E.golden_input(), _trunk(kind, 224), E.golden()[f"{kind}.out_224_c4"]
    with torch.inference_mode():
        ours = trunk(x)
    assert ours.shape == (1, 1024, 16, 16)
    noise = E.golden_noise(f"{kind}.out_224_c4")
    _close(ours[:, ::4], want, noise)
    trunk.fuse()  # BatchNorms (and RepViT's RepVGG branches) folded: the same output
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules())
    with torch.inference_mode():
        _close(trunk(x)[:, ::4], want, noise)


@pytest.mark.slow
@pytest.mark.parametrize("kind", E.KINDS)
def test_trunk_matches_the_official_student_at_1008(kind):
    """Full size: 1008 px -> 1024 x 72 x 72 (every 64th channel stored)."""
    x = torch.nn.functional.interpolate(E.golden_input(), size=(1008, 1008), mode="bilinear", align_corners=False)
    trunk = _trunk(kind, 1008)
    with torch.inference_mode():
        ours = trunk(x)
    assert ours.shape == (1, 1024, 72, 72)
    _close(ours[:, ::64], E.golden()[f"{kind}.out_1008_c64"])


# ----------------------------------------------------------------------------- released layout
def _meta(rows):
    return {k: torch.empty(s, dtype=getattr(torch, d), device="meta") for k, s, d in rows}


@pytest.mark.parametrize("kind", E.ALL_KINDS)
def test_released_trunk_layouts_remap_to_the_trunks(kind):
    """The official student trunks' key lists (names, shapes) remap exactly onto samkit's trunks."""
    with torch.device("meta"):
        trunk = build_efficientsam3_trunk(kind)
    ours = {"image_encoder.trunk." + k: tuple(v.shape) for k, v in trunk.state_dict().items()}
    sd = remap(_meta(E.trunk_manifests()[kind]), E.student_spec(FAMILY[kind]))
    theirs = {k: tuple(v.shape) for k, v in sd.items()}
    assert ours == theirs


def test_released_student_layout_remaps_to_the_model():
    """SAM 3's released key list with the official student trunk in place of the ViT remaps exactly
    onto the full-size student model (meta device), with and without ``student_trunk.`` in the names."""
    kind = "tinyvit_11m"
    released = json.loads((O.HERE / "manifest_official.json").read_text())
    rows = E.trunk_manifests()[kind] + [r for r in released if not r[0].startswith(E.TRUNK)]
    with torch.device("meta"):
        model = efficientsam3_model(kind)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    spec = E.student_spec(FAMILY[kind])
    wrapped = [[k.replace("trunk.model.", "trunk.model.student_trunk."), s, d] for k, s, d in rows]
    for layout in (rows, wrapped):
        theirs = {k: tuple(v.shape) for k, v in remap(_meta(layout), spec).items()}
        assert sorted(set(ours) ^ set(theirs)) == []
        assert [k for k in ours if ours[k] != theirs[k]] == []


def test_image_model_file_without_detector_prefix_remaps():
    """An image-model file (``backbone.*``, ``transformer.*``, no ``detector.`` / ``tracker.``) gets
    the ``detector.`` prefix, as the official video loader adds it."""
    sd = {"backbone.vision_backbone.trunk.model.head.0.weight": torch.zeros(1),
          "transformer.decoder.norm.weight": torch.zeros(1)}
    out = remap(sd, E.student_spec("tinyvit"))
    assert sorted(out) == ["image_encoder.trunk.model.head.0.weight", "transformer.decoder.norm.weight"]
    assert list(sd) == ["backbone.vision_backbone.trunk.model.head.0.weight", "transformer.decoder.norm.weight"]


# ----------------------------------------------------------------------------- the whole model
@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A reduced student read from a file saved like the official merge script saves it
    (``{"model": state_dict, "meta": {...}}``) and loaded strictly through the student format."""
    from samkit.checkpoint import read_state_dict

    kind = "repvit_m1_1"
    path = tmp_path_factory.mktemp("es3") / "efficientsam3_repvit.pt"
    torch.save({"model": E.synth_student(E.REDUCED_STUDENT, kind),
                "meta": {"text_context_length": 16, "text_pos_embed_table_size": 16}}, path)
    model = efficientsam3_model(kind, cfg=E.REDUCED_STUDENT).eval()
    report = load_into(model, read_state_dict(path), E.student_spec("repvit"), source=path)
    assert report == {"missing": [], "unexpected": [], "mismatched": []}
    model.score_threshold = 0.0  # random weights: keep every query
    return model


def test_student_finds_text_instances_end_to_end(student):
    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    masks = ImagePredictor(student).set_image(image).predict(text="bus")
    assert len(masks) == E.REDUCED_STUDENT.num_queries
    assert masks.masks.shape[1:] == (120, 160) and set(masks.labels) == {"bus"}
    assert np.all(np.diff(masks.scores) <= 0) and masks.masks.any()


@pytest.mark.parametrize("kind", ["efficientvit_b1", "tinyvit_11m"])
def test_student_checkpoints_load_strictly(kind):
    """Every key of a released-layout student file is used and every model key is filled."""
    with torch.device("meta"):
        model = efficientsam3_model(kind, cfg=E.REDUCED_STUDENT)
    sd = {k: torch.empty(s, device="meta") for k, s, _ in E.student_manifest(E.REDUCED_STUDENT, kind)}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in remap(sd, E.student_spec(FAMILY[kind])).items()}
    assert ours == theirs


# ----------------------------------------------------------------------------- wrong checkpoints
def test_sam3_checkpoint_given_to_a_student_says_so():
    with torch.device("meta"):
        model = efficientsam3_model("tinyvit_11m", cfg=E.REDUCED_STUDENT)
    with pytest.raises(CheckpointError) as exc:
        load_into(model, O.synth_official(O.REDUCED), E.student_spec("tinyvit"))
    text = str(exc.value)
    assert "SAM 3's own checkpoint" in text and "efficientsam3_tinyvit" in text and "Fix: load it with sam3" in text


def test_student_checkpoint_given_to_sam3_says_so():
    with torch.device("meta"):
        model = Sam3Model(O.REDUCED)
    sd = {k: torch.empty(s, device="meta") for k, s, _ in E.student_manifest(E.REDUCED_STUDENT, "repvit_m1_1")}
    with pytest.raises(CheckpointError) as exc:
        load_into(model, sd, "sam3")
    text = str(exc.value)
    assert "EfficientSAM3 student" in text and "efficientsam3_repvit" in text and "Fix:" in text


def test_other_student_family_is_named():
    sd = {k: torch.empty(s, device="meta") for k, s, _ in E.trunk_manifests()["efficientvit_b1"]}
    with pytest.raises(CheckpointError, match=r"EfficientViT student checkpoint.*RepViT student.*Fix: load it "
                                              r"with the EfficientSAM3 EfficientViT model"):
        remap(sd, E.student_spec("repvit"))


def test_student_tracks_text_instances_in_video(student):
    """Concept tracking runs on the student unchanged (SAM 3's tracker and memory)."""
    from samkit import VideoTracker
    from samkit.video.concept import ConceptConfig
    from samkit.video.memory_tracker import preprocess_video_frame

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    frames = [base, np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)]
    x = preprocess_video_frame(frames[0], student.image_size, (0.5,) * 3, (0.5,) * 3, torch.device("cpu"))
    with torch.inference_mode():
        thr = float(student.detect(student.encode(x), texts=["bus"]).scores.median())  # random weights score low
    tracker = VideoTracker(student, concept_config=ConceptConfig(score_threshold=thr, new_det_thresh=thr))
    session = tracker.start(frames)
    added = tracker.add_text_prompt(session, 0, ["bus"])
    assert len(added) >= 1 and set(added.values()) == {"bus"}
    results = dict(tracker.propagate(session))
    assert sorted(results) == [0, 1] and all(set(r.labels or {}) == set(r.masks) for r in results.values())


def test_other_family_checkpoint_is_left_to_the_strict_load():
    """A SAM 2.1 file is not taken for SAM 3's own: the remap passes it on, and the strict load then
    lists its keys and names the model it fits (``identify``)."""
    from parity import manifest
    from samkit.models.sam3_remap import trunk_family

    sd = _meta(manifest("sam2.1_hiera_t"))
    assert trunk_family(sd) is None
    assert "image_encoder.trunk.blocks.0.attn.qkv.weight" in remap(sd, E.student_spec("tinyvit"))


# ----------------------------------------------------------------------------- the released stage-3 models
@pytest.mark.parametrize("family", ["efficientvit", "repvit", "tinyvit"])
def test_stage3_key_lists_remap_to_the_registered_models(family):
    """A released stage-3 file = sam3.pt's keys with the ViT trunk replaced by the student trunk
    and the language backbone by the MobileCLIP-S0 student (the official merge script): it remaps
    exactly onto the registered model built by its builder (meta device), with the position table
    stored at 77 rows or cut to the context (16): the short one is padded."""
    from samkit.models.efficientsam3 import RELEASED_TRUNKS
    from samkit.registry import builder

    released = json.loads((O.HERE / "manifest_official.json").read_text())
    text = json.loads((O.HERE / "manifest_litetext_text.json").read_text())["MobileCLIP-S0"]
    lb = "detector.backbone.language_backbone."
    rows = (E.trunk_manifests()[RELEASED_TRUNKS[family]] + text +
            [r for r in released if not r[0].startswith((E.TRUNK, lb))])
    cut = [[k, s[:2] + [16] + s[3:], d] if k.endswith("positional_embedding.pos_embed.pos_embed") else [k, s, d]
           for k, s, d in rows]
    name = f"efficientsam3_{family}"
    with torch.device("meta"):
        model = builder(name)()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for layout in (rows, cut):
        theirs = {k: tuple(v.shape) for k, v in remap(_meta(layout), name).items()}
        assert sorted(set(ours) ^ set(theirs)) == []
        assert [k for k in ours if ours[k] != theirs[k]] == []
    assert model.text_encoder.context_length == 16


def test_stage3_specs():
    from samkit.hub import NO_PUBLIC_DIGEST
    from samkit.specs import get_spec

    for family in ("efficientvit", "repvit", "tinyvit"):
        spec = get_spec(f"efficientsam3_{family}")
        assert spec.url.endswith(f"/efficientsam3_ft/efficientsam3_{family}.pt") and spec.video
        assert "SAM License" in spec.license and spec.extra["code_license"] == "Apache-2.0"
        assert spec.name in NO_PUBLIC_DIGEST


def test_short_position_table_is_padded_with_zeros():
    from samkit.models.efficientsam3 import _POS_KEY, _full_position_table

    pos = torch.randn(1, 1, 16, 8)
    out = _full_position_table({_POS_KEY: pos, "x": torch.ones(1)})
    assert out[_POS_KEY].shape == (1, 1, 77, 8) and torch.equal(out[_POS_KEY][:, :, :16], pos)
    assert not out[_POS_KEY][:, :, 16:].any()


# ----------------------------------------------------------------------------- the stage-1 students
@pytest.mark.parametrize("name", ["efficientsam3_stage1_efficientvit_s", "efficientsam3_stage1_repvit_l",
                                  "efficientsam3_stage1_tinyvit_m"])
def test_stage1_key_lists_remap_to_the_registered_models(name):
    """A stage-1 file = sam3.pt's keys (SAM 3's text encoder kept) with the ViT trunk replaced by
    the student trunk: it remaps exactly onto the registered model (meta device)."""
    from samkit.models.efficientsam3 import STAGE1_TRUNKS
    from samkit.registry import builder

    family, size = name.split("_")[-2:]
    released = json.loads((O.HERE / "manifest_official.json").read_text())
    rows = E.trunk_manifests()[STAGE1_TRUNKS[(family, size)]] + [r for r in released if not r[0].startswith(E.TRUNK)]
    with torch.device("meta"):
        model = builder(name)()
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in remap(_meta(rows), name).items()}
    assert sorted(set(ours) ^ set(theirs)) == []
    assert [k for k in ours if ours[k] != theirs[k]] == []


def test_stage1_specs():
    from samkit.hub import NO_PUBLIC_DIGEST
    from samkit.specs import get_spec

    for family in ("efficientvit", "repvit", "tinyvit"):
        for size in "sml":
            spec = get_spec(f"efficientsam3_stage1_{family}_{size}")
            assert spec.url.endswith(f"/stage1_all_converted/efficient_sam3_{family}_{size}.pt")
            assert spec.checkpoint_format == f"efficientsam3_{family}" and spec.name in NO_PUBLIC_DIGEST
