"""MaskCLIP dense features vs a direct re-statement of the paper's equations, written here from the
module's weights (the trunk before the modified block runs in open_clip, the test-only oracle),
on reduced configurations; the DenseClip protocol; bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import _clip_oracle as co
from samkit import families, specs
from samkit.errors import CheckpointError, InputError
from samkit.vocab.maskclip import MaskClip, load_maskclip

pytestmark = pytest.mark.oracle
TOL = 1e-4


@pytest.fixture(scope="module", params=["vit_tiny", "rn_tiny"])
def setup(request):
    name = request.param
    model = co.build(name).eval()
    sd = co.synth_state_dict(model, seed=5)
    model.load_state_dict(sd)
    return name, model, co.oracle(name, sd), sd


def _ln(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"])


def _linear(x, sd, prefix):
    return x @ sd[prefix + ".weight"].t() + sd[prefix + ".bias"]


def _vit_equations(x, sd, oracle, patch):
    """Patchify, position embeddings (bicubic to the grid, class slot kept), ln_pre, the first L-1
    blocks (open_clip), then the last block's value path per token:
    v = x + W_o (W_v ln_1(x) + b_v) + b_o;  v += c_proj(QuickGELU(c_fc(ln_2(v))));  f = ln_post(v) P;
    keys k = W_o (W_k ln_1(x) + b_k) + b_o (the official code's keys)."""
    t = F.conv2d(x, sd["visual.conv1.weight"], stride=patch)
    _, c, h, w = t.shape
    pos = sd["visual.positional_embedding"]
    g = int(round((pos.shape[0] - 1) ** 0.5))
    grid = pos[1:].reshape(g, g, c).permute(2, 0, 1)[None]
    if (h, w) != (g, g):
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    tokens = torch.cat([(sd["visual.class_embedding"] + pos[0])[None], t[0].flatten(1).t() + grid[0].flatten(1).t()])
    tokens = _ln(tokens, sd, "visual.ln_pre")[None]
    blocks = oracle.visual.transformer.resblocks
    for block in list(blocks)[:-1]:
        tokens = block(tokens)
    x0 = tokens[0]
    last = f"visual.transformer.resblocks.{len(blocks) - 1}"
    wq, wk, wv = sd[last + ".attn.in_proj_weight"].chunk(3)
    bq, bk, bv = sd[last + ".attn.in_proj_bias"].chunk(3)
    y = _ln(x0, sd, last + ".ln_1")
    v = x0 + _linear(y @ wv.t() + bv, sd, last + ".attn.out_proj")
    hidden = _linear(_ln(v, sd, last + ".ln_2"), sd, last + ".mlp.c_fc")
    v = v + _linear(hidden * torch.sigmoid(1.702 * hidden), sd, last + ".mlp.c_proj")
    feats = _ln(v[1:], sd, "visual.ln_post") @ sd["visual.proj"]
    keys = _linear(y[1:] @ wk.t() + bk, sd, last + ".attn.out_proj")
    return feats.t().reshape(-1, h, w), keys.t().reshape(-1, h, w)


def _resnet_equations(x, sd, oracle):
    """The last stage (open_clip), then at every location f = W_c (W_v x + b_v) + b_c, k = W_k x + b_k."""
    last = oracle.visual.forward_intermediates(x, intermediates_only=True)["image_intermediates"][-1][0]
    c, h, w = last.shape
    loc = last.flatten(1).t()
    feats = _linear(_linear(loc, sd, "visual.attnpool.v_proj"), sd, "visual.attnpool.c_proj")
    keys = _linear(loc, sd, "visual.attnpool.k_proj")
    return feats.t().reshape(-1, h, w), keys.t().reshape(-1, h, w)


def _equations(name, x, sd, oracle):
    with torch.no_grad():
        if co.CONFIGS[name]["kind"] == "vit":
            return _vit_equations(x, sd, oracle, co.CONFIGS[name]["patch_size"])
        return _resnet_equations(x, sd, oracle)


@pytest.mark.parametrize("cells", [(4, 4), (3, 5), (2, 1)])  # the training grid, wide, tall
def test_dense_maps_are_the_papers_equations(setup, cells):
    name, model, oracle, sd = setup
    mc = MaskClip(model)
    x = torch.randn(1, 3, cells[0] * mc.cell, cells[1] * mc.cell, generator=torch.Generator().manual_seed(1))
    feats, keys = mc.dense_maps(x)
    want_f, want_k = _equations(name, x, sd, oracle)
    assert feats.shape == want_f.shape and feats.shape[1:] == cells
    assert (feats - want_f).abs().max().item() < TOL and (keys - want_k).abs().max().item() < TOL
    assert want_f.abs().max().item() > 0.05


def _smoothed(feats, keys):
    """Key smoothing as the paper states it: f'_i = sum_j cos(k_i, k_j) f_j / |f_j|, then normalised."""
    d, h, w = feats.shape
    f = feats.reshape(d, -1).t()
    k = keys.reshape(keys.shape[0], -1).t()
    f = f / f.norm(dim=1, keepdim=True)
    cos = (k @ k.t()) / (k.norm(dim=1)[:, None] * k.norm(dim=1)[None, :])
    out = cos @ f
    return (out / out.norm(dim=1, keepdim=True)).t().reshape(d, h, w)


@pytest.mark.parametrize("smoothing", [False, True])
def test_dense_features_of_an_image_cover_it_and_are_normalised(setup, smoothing):
    name, model, oracle, sd = setup
    mc = MaskClip(model, key_smoothing=smoothing, short_side=2 * (16 if "vit" in name else 32))
    img = np.random.default_rng(2).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    got = mc.dense_features(img)
    h, w = mc.grid_size(50, 90)
    assert (h, w) == (2, round(90 * 2 / 50)) and got.shape[1:] == (h, w)
    # the whole image resized to the grid's pixels (bicubic), normalised with CLIP's mean / std
    resized = np.asarray(Image.fromarray(img).resize((w * mc.cell, h * mc.cell), Image.BICUBIC))
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() / 255 - torch.tensor(specs.CLIP_MEAN)[:, None, None]) \
        / torch.tensor(specs.CLIP_STD)[:, None, None]
    feats, keys = _equations(name, x[None], sd, oracle)
    want = _smoothed(feats, keys) if smoothing else feats / feats.norm(dim=0, keepdim=True)
    assert got.dtype == torch.float32 and (got - want).abs().max().item() < TOL
    assert torch.allclose(got.norm(dim=0), torch.ones(h, w), atol=1e-5)
    assert "keysmooth" in mc.name if smoothing else "keysmooth" not in mc.name


def test_encode_text_is_normalised_clip_text_embedding(setup):
    _, model, oracle, _ = setup
    mc = MaskClip(model)
    texts = ["red car", "a blue sky"]
    got = mc.encode_text(texts)
    with torch.no_grad():
        want = F.normalize(oracle.encode_text(co.open_clip_module().tokenize(texts)), dim=-1)
    assert got.shape == (2, co.CONFIGS[setup[0]]["embed_dim"]) and (got - want).abs().max().item() < TOL
    with pytest.raises(InputError, match="tokens long"):
        mc.encode_text(["dog " * 80])


def test_grid_policy_short_side_and_long_side_cap(setup):
    mc = MaskClip(setup[1], short_side=448, max_long_side=1344)
    cell = mc.cell
    assert mc.grid_size(480, 640) == (round(448 / cell), round(640 * 448 / 480 / cell))
    assert mc.grid_size(100, 1000) == (round(134.4 / cell), round(1344 / cell))  # long side capped
    assert mc.grid_size(1, 1) == (round(448 / cell), round(448 / cell))
    assert min(MaskClip(setup[1], short_side=1).grid_size(5, 7)) == 1  # at least one cell


def test_bad_input(setup, tmp_path, monkeypatch):
    name, model, oracle, sd = setup
    with pytest.raises(InputError, match="MaskClip needs a CLIP model"):
        MaskClip(torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="short_side"):
        MaskClip(model, short_side=0)
    with pytest.raises(InputError, match="multiples of"):
        MaskClip(model).dense_maps(torch.zeros(1, 3, 17, 32))
    with pytest.raises(InputError, match="'sam_vit_b' is a segmenter, not a CLIP model. Fix: pass one of "
                                         "clip_vit_b16, clip_rn50x16"):
        load_maskclip("sam_vit_b")


def test_a_clip_file_of_the_wrong_model_names_it(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    for spec_name, config in (("tiny_clip_vit", "vit_tiny"), ("tiny_clip_rn", "rn_tiny")):
        spec = specs.ModelSpec(name=spec_name, family="clip", module="samkit.models.clip", url=None,
                               filename=f"{spec_name}.safetensors", license="MIT", paper="test",
                               checkpoint_format="openai_clip", kind="clip")
        monkeypatch.setitem(specs.MODELS, spec_name, spec)
        monkeypatch.setitem(families._BUILDERS, spec_name, lambda config=config: co.build(config))
    path = tmp_path / "rn.safetensors"
    save_file(co.synth_state_dict(co.build("rn_tiny")), str(path))
    with pytest.raises(CheckpointError, match=r"does not fit model 'tiny_clip_vit'(.|\n)*looks like a checkpoint "
                                              r"of tiny_clip_rn"):
        load_maskclip("tiny_clip_vit", checkpoint=path)
    assert load_maskclip("tiny_clip_rn", checkpoint=path).name == "tiny_clip_rn/maskclip@448"


def test_full_size_files_are_told_apart():
    """An RN50x16 state dict (OpenAI's entries included) given for ViT-B/16 names RN50x16."""
    from samkit.checkpoint import load_into

    with torch.device("meta"):
        vit = families.builder_for(specs.MODELS["clip_vit_b16"])()
        rn = families.builder_for(specs.MODELS["clip_rn50x16"])()
    sd = dict(rn.state_dict(), input_resolution=torch.tensor(384), context_length=torch.tensor(77),
              vocab_size=torch.tensor(49408))
    with pytest.raises(CheckpointError, match=r"looks like a checkpoint of clip_rn50x16; call "
                                              r"load_model\('clip_rn50x16'"):
        load_into(vit, sd, "clip_vit_b16", source="RN50x16.pt")
