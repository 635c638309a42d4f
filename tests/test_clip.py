"""CLIP towers vs open_clip (test-only oracle) on weights synthesized in OpenAI's key layout:
image / text embeddings, every layer's output, logits, preprocessing; the released sizes in the
slow tests; open_clip's checkpoint files load through the same remap."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import _clip_oracle as co
from samkit import families, specs
from samkit.errors import InputError
from samkit.registry import load_model

pytestmark = pytest.mark.oracle

TEXTS = ["a photo of a dog.", "Red car!", "a café at 3 o'clock 🚗", ""]
TOL = 1e-4


def _pair(name: str, seed: int = 0):
    ours = co.build(name).eval()
    sd = co.synth_state_dict(ours, seed)
    ours.load_state_dict(sd)
    return ours, co.oracle(name, sd)


@pytest.fixture(scope="module", params=["vit_tiny", "rn_tiny"])
def pair(request):
    return request.param, *_pair(request.param)


def _images(model, n=2, seed=0):
    s = model.input_size
    return torch.randn(n, 3, s, s, generator=torch.Generator().manual_seed(seed))


def _parity(name, ours, ref) -> dict:
    """Max-abs differences of embeddings and per-layer outputs, and the scale of each."""
    x = _images(ours)
    ids = ours.tokenize(TEXTS)
    out = {}
    with torch.no_grad():
        out["image"] = (ours.encode_image(x), ref.encode_image(x))
        out["text"] = (ours.encode_text(ids), ref.encode_text(ids))
        if co.CONFIGS[name]["kind"] == "vit":
            layers = ours.visual.forward_layers(x)
        else:
            layers = ours.visual.stages(x)
        oracle_layers = ref.visual.forward_intermediates(x, intermediates_only=True)["image_intermediates"]
        assert len(layers) == len(oracle_layers)
        for i, (a, b) in enumerate(zip(layers, oracle_layers)):
            out[f"layer{i}"] = (a, b)
        out["logits"] = (ours(x, ids), ref.get_logits(x, ids)[0])
    return {k: ((a - b).abs().max().item(), b.abs().max().item()) for k, (a, b) in out.items()}


def test_embeddings_and_every_layer_match_open_clip(pair):
    name, ours, ref = pair
    diffs = _parity(name, ours, ref)
    for key, (diff, scale) in diffs.items():
        assert diff < TOL, (key, diff)
        assert scale > 0.05, (key, scale)  # the outputs are not vanishing, so the check can fail


def test_token_ids_match_open_clip(pair):
    ours = pair[1]
    oc = co.open_clip_module()
    assert torch.equal(ours.tokenize(TEXTS), oc.tokenize(TEXTS))


@pytest.mark.parametrize("hw", [(37, 50), (300, 200), (64, 64), (129, 128)])
def test_preprocess_matches_open_clip_transform(pair, hw):
    ours = pair[1]
    oc = co.open_clip_module()
    rng = np.random.default_rng(hw[0])
    img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    transform = oc.image_transform(ours.input_size, is_train=False)
    expected = transform(Image.fromarray(img))[None]
    got = ours.preprocess(img)
    assert got.shape == expected.shape == (1, 3, ours.input_size, ours.input_size)
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("fmt", ["open_clip_pytorch_model.bin", "open_clip_model.safetensors"])
def test_open_clip_checkpoint_files_load(pair, fmt, tmp_path, monkeypatch):
    name, ours, ref = pair
    path = tmp_path / fmt
    sd = ref.state_dict()
    if fmt.endswith(".bin"):
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    spec = specs.ModelSpec(name="tiny_clip", family="clip", module="samkit.models.clip", url=None,
                           filename=fmt, license="MIT", paper="test", checkpoint_format="openai_clip", kind="clip")
    monkeypatch.setitem(specs.MODELS, "tiny_clip", spec)
    monkeypatch.setitem(families._BUILDERS, "tiny_clip", lambda: co.build(name))
    loaded = load_model("tiny_clip", checkpoint=path)
    x = _images(ours)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(x), ours.encode_image(x))


def test_encode_text_refuses_bad_ids(pair):
    ours = pair[1]
    ids = ours.tokenize(["a dog"])
    for bad, why in ((ids.float(), "integer token ids"), (torch.zeros(1, 78, dtype=torch.long), "more than the context"),
                     (ids + 49408, r"in \[0, 49408\)"), (ids[0], "integer token ids")):
        with pytest.raises(InputError, match=why):
            ours.encode_text(bad)


# released sizes: the builders spell OpenAI's numbers; open_clip's profile gives the parameter counts
@pytest.mark.parametrize("name,image_m,text_m", [("clip_vit_b16", 86.19, 63.43), ("clip_rn50x16", 167.33, 123.65)])
def test_builders_have_the_released_parameter_counts(name, image_m, text_m):
    with torch.device("meta"):
        model = families.builder_for(specs.MODELS[name])()
    image = sum(p.numel() for p in model.visual.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert round(image / 1e6, 2) == image_m
    assert round((total - image) / 1e6, 2) == text_m
    assert model.context_length == 77 and model.vocab_size == 49408
    assert model.input_size == specs.MODELS[name].input_size


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b16", "rn50x16"])
def test_full_size_parity_with_open_clip(name, capsys):
    ours, ref = _pair(name, seed=1)
    diffs = _parity(name, ours, ref)
    with capsys.disabled():
        worst = max(d for d, _ in diffs.values())
        print(f"\n{name}: max-abs difference {worst:.2e} over " +
              ", ".join(f"{k} {d:.1e} (scale {s:.2g})" for k, (d, s) in diffs.items()))
    for key, (diff, scale) in diffs.items():
        assert diff < TOL, (key, diff)
        assert scale > 0.05, (key, scale)
