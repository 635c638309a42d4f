"""SAM3-LiteText in samkit: the released key lists, the registry entries, the text contract of the
MobileCLIP student, bad input and the command line, on a reduced model loaded from synthesized
released-layout weights (parity with transformers: tests/test_sam3_litetext_parity.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "sam3"))

import litetext_oracle as L  # noqa: E402
import oracle as O  # noqa: E402

from samkit.checkpoint import load_into, remap  # noqa: E402
from samkit.errors import CheckpointError, InputError  # noqa: E402
from samkit.models.sam3_litetext import LITETEXT  # noqa: E402

VARIANT_OF = {"s0": "MobileCLIP-S0", "s1": "MobileCLIP-S1", "l": "MobileCLIP2-L"}
LONG = " ".join(["word"] * 15)  # 17 tokens with start / end: over a context of 16, within 32


@pytest.fixture(scope="module")
def lite():
    return L.load_reduced()


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- released layout
def _released_manifest(variant: str):
    """A released LiteText file's keys: sam3.pt's (tests/sam3/manifest_official.json) with the
    language backbone replaced by the student's (tests/sam3/manifest_litetext_text.json)."""
    sam3 = json.loads((O.HERE / "manifest_official.json").read_text())
    text = json.loads((O.HERE / "manifest_litetext_text.json").read_text())[variant]
    return [r for r in sam3 if not r[0].startswith(L.LB)] + text


@pytest.mark.parametrize("name", ["sam3_litetext_s0_16", "sam3_litetext_s1_32", "sam3_litetext_l_16"])
def test_released_key_lists_remap_to_the_model(name):
    """Each variant's released key list (names, shapes; the same for both contexts) remaps exactly
    onto its full-size model."""
    from samkit.registry import builder

    rows = _released_manifest(LITETEXT[name][0])
    with torch.device("meta"):
        model = builder(name)()
        sd = {k: torch.empty(s, dtype=getattr(torch, d)) for k, s, d in rows}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in remap(sd, name).items()}
    assert sorted(set(ours) ^ set(theirs)) == []
    assert [k for k in ours if ours[k] != theirs[k]] == []
    assert model.text_encoder.context_length == LITETEXT[name][1]


def test_test_helper_layout_is_the_released_one():
    """The reduced files of these tests name the student's keys as the released files do."""
    text = json.loads((O.HERE / "manifest_litetext_text.json").read_text())
    for cfg, variant in ((L.TEXT_S0, "MobileCLIP-S0"), (L.TEXT_BASE, "MobileCLIP-S1")):
        ours = [k.split("transformer.")[-1].split(".", 1)[-1] for k, _, _ in L.text_manifest(cfg)]
        released = {k.split("transformer.")[-1].split(".", 1)[-1] for k, _, _ in text[variant]}
        assert set(ours) == released


def test_specs_are_sam3_with_the_student():
    from samkit.specs import get_spec

    for name, (variant, ctx) in LITETEXT.items():
        spec = get_spec(name)
        short = name.split("_")[2]
        assert spec.extra["text_encoder"] == VARIANT_OF[short] == variant and spec.extra["context_length"] == ctx
        part = {"s0": "mobileclip_s0", "s1": "mobileclip_s1", "l": "mobileclip2_l"}[short]
        assert spec.url.endswith(f"/sam3_litetext/sam3_litetext_{part}_ctx{ctx}.pt")
        assert spec.video and spec.input_size == 1008 and spec.checkpoint_format == "sam3_litetext"
        assert "SAM License" in spec.license
        assert spec.extra["license_notice"] == get_spec("sam3").extra["license_notice"]


def test_license_notice_is_warned(monkeypatch):
    from samkit import registry
    from samkit.specs import get_spec

    monkeypatch.setattr(registry, "_LICENSE_WARNED", set())
    with pytest.warns(UserWarning, match="SAM License.*military"):
        registry._warn_license(get_spec("sam3_litetext_s0_16"))


def test_sam3_checkpoint_is_refused_by_name():
    with torch.device("meta"):
        model = L.build()
    with pytest.raises(CheckpointError) as exc:
        load_into(model, O.synth_official(O.REDUCED), "sam3_litetext", source="sam3.pt")
    text = str(exc.value)
    assert "SAM 3 itself" in text and "Fix:" in text and "--model sam3" in text


def test_remap_is_pure():
    sd = L.synth_official()
    keys = list(sd)
    remap(sd, "sam3_litetext")
    assert list(sd) == keys


# ----------------------------------------------------------------------------- the text encoder
def test_text_contract_and_padding(lite):
    """``tokenize`` pads to the context; features are N x 16 x 256-wide (reduced: 128), valid =
    ids != 0; a text's features do not depend on the other texts of the batch."""
    enc = lite.text_encoder
    ids = enc.tokenize(["yellow school bus", "a dog"])
    assert ids.shape == (2, 16) and ids[0, 0] == 49406
    with torch.inference_mode():
        feats, valid = enc(ids)
        alone, _ = enc(ids[1:])
    assert feats.shape == (2, 16, L.D) and torch.equal(valid, ids != 0) and valid[1].sum() == 4
    torch.testing.assert_close(feats[1], alone[0])


def test_text_longer_than_the_context_says_the_limit_and_the_fix(lite):
    with pytest.raises(InputError) as exc:
        lite.encode_text(["bus", LONG])
    text = str(exc.value)
    assert "reads at most 14" in text and "Fix:" in text and "_32" in text
    long32 = L.build(O.REDUCED, L.TEXT_BASE).text_encoder.tokenize([LONG])  # fits a context of 32
    assert long32.shape == (1, 32)


def test_mobileclip_text_encoder_numbers():
    """The released variants' sizes (README of the official repository: text 42.5M / 63.5M /
    123.8M parameters, with its running BatchNorm statistics)."""
    from samkit.backbones.mobileclip_text import mobileclip_text_encoder

    for variant, millions, blocks in (("s0", 42.58, 6), ("MobileCLIP-S1", 63.56, 12), ("l", 123.85, 12)):
        with torch.device("meta"):
            enc = mobileclip_text_encoder(variant, 16)
        n = sum(v.numel() for k, v in enc.state_dict().items() if not k.endswith("num_batches_tracked"))
        assert round(n / 1e6, 2) == millions and len(enc.encoder.transformer) == blocks
    with pytest.raises(ValueError, match="unknown MobileCLIP"):
        mobileclip_text_encoder("MobileCLIP-B", 16)


# ----------------------------------------------------------------------------- command line
@pytest.fixture()
def files(tmp_path, image):
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "img.png")
    torch.save({"model": L.synth_official()}, tmp_path / "lite.pt")
    torch.save({"model": O.synth_official(O.REDUCED)}, tmp_path / "sam3.pt")
    return tmp_path


def _segment(files, monkeypatch, capsys, checkpoint, *args):
    """``samkit segment img.png --model sam3_litetext_s0_16 --checkpoint ...``, the registry
    building the reduced model for that name (the file decides everything else)."""
    pytest.importorskip("typer")
    import samkit.registry
    from samkit.cli.main import main

    build = samkit.registry.build_model

    def reduced(spec):
        name = getattr(spec, "name", spec)
        return L.build() if name == "sam3_litetext_s0_16" else build(spec)

    monkeypatch.setattr(samkit.registry, "build_model", reduced)
    monkeypatch.setenv("SAMKIT_HOME", str(files / "cache"))
    code = main(["segment", str(files / "img.png"), "--model", "sam3_litetext_s0_16", "--checkpoint",
                 str(files / checkpoint), "--out", str(files / "out"), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_segment_text_with_a_checkpoint(files, monkeypatch, capsys):
    from samkit.models.sam3 import Sam3Model

    monkeypatch.setattr(Sam3Model, "score_threshold", 0.0)  # random weights: every query is kept
    code, out, err = _segment(files, monkeypatch, capsys, "lite.pt", "--text", "bus", "--format", "png,coco,json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["model"] == "sam3_litetext_s0_16" and doc["prompts"] == {"text": ["bus"]}
    assert {m["label"] for m in doc["masks"]} == {"bus"} and len(doc["masks"]) > 0
    assert json.loads((files / "out" / "img_coco.json").read_text())["categories"] == [{"id": 1, "name": "bus"}]


@pytest.mark.parametrize("checkpoint, args, want, words", [
    ("lite.pt", ["--text", LONG], 2, "reads at most 14"),
    ("sam3.pt", ["--text", "bus"], 3, "SAM 3 itself"),
])
def test_cli_bad_input(files, monkeypatch, capsys, checkpoint, args, want, words):
    code, _, err = _segment(files, monkeypatch, capsys, checkpoint, *args)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == want, err
    assert len(lines) == 1 and "Fix:" in lines[0] and words in lines[0] and "Traceback" not in err


# ----------------------------------------------------------------------------- video
def test_video_tracks_a_text(lite, image):
    """``VideoTracker.add_text_prompt`` on a LiteText model: the student reads the text, SAM 3's
    detector and tracker follow the instances (the official video builder takes the student too)."""
    from samkit import VideoTracker
    from samkit.video.concept import ConceptConfig

    frames = [image, np.ascontiguousarray(image[:, ::-1])]
    with torch.inference_mode():
        x, _ = lite.preprocess(image)
        s = lite.detect(lite.encode(x), texts=["bus"]).scores.flatten().sort(descending=True).values
    thr = float(s[2] + s[3]) / 2  # a few instances on frame 0 (random weights score low)
    tracker = VideoTracker(lite, concept_config=ConceptConfig(score_threshold=thr, new_det_thresh=thr))
    session = tracker.start(frames)
    added = tracker.add_text_prompt(session, 0, "bus")
    assert added and set(added.values()) == {"bus"}
    results = list(tracker.propagate(session))
    assert len(results) == 2 and all(set(r.labels or {}) == set(r.masks) for _, r in results)
    assert results[0][1].masks[next(iter(added))].shape == image.shape[:2]


def test_lower_image_size(monkeypatch):
    """LiteText keeps SAM 3's ViT, so it takes SAM 3's lower input sizes (the reduced SAM 3 stands
    in for the released one here: 168 px instead of 252)."""
    import samkit.models.sam3 as sam3_module
    import samkit.models.sam3_litetext as lt
    from samkit.errors import InputError
    from samkit.registry import build_model

    reduced = O.REDUCED
    monkeypatch.setattr(sam3_module, "SAM3_CONFIG", reduced)
    monkeypatch.setattr(lt, "SAM3_CONFIG", reduced)
    model = build_model("sam3_litetext_s0_16", image_size=168)
    assert model.image_size == 168 and model.prompt_encoder.image_embedding_size == (12, 12)
    with pytest.raises(InputError, match="multiple of 14"):
        build_model("sam3_litetext_s0_16", image_size=170)
