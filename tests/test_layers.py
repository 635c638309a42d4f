"""samkit.layers: the pieces every family shares (attention, sine encodings, patch embedding, conv
stem, SAM neck) are one implementation each, used by every encoder; one RepViT serves EdgeSAM's
and EdgeTAM's official key layouts; layers/ never imports the packages built on it."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from samkit import layers
from samkit.layers.position import _SINE_2D, _SINE_2D_MAX, sine_encoding_2d


def test_layers_import_nothing_built_on_them():
    code = ("import sys, samkit.layers, samkit.layers.reparam, samkit.layers.windows; "
            "print(sorted(m for m in sys.modules if m.startswith(('samkit.models', 'samkit.backbones', "
            "'samkit.memory', 'samkit.heads'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ attention
def test_memory_attention_builds_on_the_shared_attention():
    from samkit.memory import attention as mem
    from samkit.memory.config import SAM21, build_memory_attention

    assert mem.Attention is layers.Attention
    ma = build_memory_attention(SAM21)
    cross = ma.layers[0].cross_attn_image
    assert isinstance(ma.layers[0].self_attn, layers.Attention) and isinstance(cross, layers.Attention)
    assert cross.k_proj.in_features == 64 and cross.q_proj.in_features == 256
    assert sorted(k for k, _ in cross.named_parameters()) == [
        "k_proj.bias", "k_proj.weight", "out_proj.bias", "out_proj.weight", "q_proj.bias", "q_proj.weight",
        "v_proj.bias", "v_proj.weight"]


def test_attention_kv_in_dim_and_downsample():
    torch.manual_seed(0)
    attn = layers.Attention(32, 2, downsample_rate=2, kv_in_dim=8)
    q, kv = torch.randn(2, 5, 32), torch.randn(2, 7, 8)
    out = attn(q, kv, kv)
    assert out.shape == (2, 5, 32)
    # by hand: heads of width 8, softmax(q k^T / sqrt(8)) v
    qh = attn.q_proj(q).view(2, 5, 2, 8).transpose(1, 2)
    kh = attn.k_proj(kv).view(2, 7, 2, 8).transpose(1, 2)
    vh = attn.v_proj(kv).view(2, 7, 2, 8).transpose(1, 2)
    ref = torch.softmax(qh @ kh.transpose(-1, -2) / 8 ** 0.5, -1) @ vh
    torch.testing.assert_close(out, attn.out_proj(ref.transpose(1, 2).reshape(2, 5, 16)))
    with pytest.raises(ValueError, match="num_heads"):
        layers.Attention(30, 4)


# ------------------------------------------------------------------------------ sine encodings
def test_one_sine_encoding_for_necks_memory_and_perceiver():
    import samkit.memory.modules as modules
    import samkit.memory.perceiver as perceiver
    import samkit.video.memory_tracker as memory_tracker
    from samkit.backbones import fpn_neck, vitdet

    assert modules.sine_encoding_2d is sine_encoding_2d is perceiver.sine_encoding_2d
    assert memory_tracker.sine_encoding_1d is layers.sine_encoding_1d
    assert fpn_neck.PositionEmbeddingSine is vitdet.PositionEmbeddingSine is layers.PositionEmbeddingSine
    x = torch.zeros(3, 64, 5, 7)
    pos = layers.PositionEmbeddingSine(64)(x)
    grid = sine_encoding_2d(5, 7, 64, torch.device("cpu"))
    assert pos.shape == (3, 64, 5, 7) and torch.equal(pos[2], grid[0])
    assert pos.data_ptr() == grid.data_ptr()  # one cache: the neck's encoding is the shared grid
    # channels alternate sin / cos; the first half encodes y (constant along x)
    assert torch.equal(grid[0, :32, :, 0:1].expand(-1, -1, 7), grid[0, :32])
    assert torch.equal(grid[0, 32:, 0:1, :].expand(-1, 5, -1), grid[0, 32:])
    assert pos.dtype == torch.float32 and layers.PositionEmbeddingSine(64)(x.half()).dtype == torch.float16


def test_sine_cache_keeps_inference_tensors_out_of_autograd():
    """A grid first built under inference mode must not be handed to autograd later (the memory
    encoder's old cache did: ``x * pos`` then failed in backward)."""
    _SINE_2D.clear()
    with torch.inference_mode():
        inf = sine_encoding_2d(6, 6, 16, torch.device("cpu"))
    assert inf.is_inference()
    pos = sine_encoding_2d(6, 6, 16, torch.device("cpu"))
    assert not pos.is_inference() and not pos.requires_grad
    x = torch.randn(1, 16, 6, 6, requires_grad=True)
    (x * pos).sum().backward()
    torch.testing.assert_close(x.grad, pos)


def test_sine_cache_is_bounded_and_checks_arguments():
    for n in range(_SINE_2D_MAX + 5):
        sine_encoding_2d(1, n + 1, 4)
    assert 0 < len(_SINE_2D) <= _SINE_2D_MAX
    with pytest.raises(ValueError, match="even"):
        sine_encoding_2d(2, 2, 5)
    with pytest.raises(ValueError, match="normalize"):
        layers.PositionEmbeddingSine(8, normalize=False, scale=1.0)
    raw = sine_encoding_2d(3, 2, 4, normalize=False)
    torch.testing.assert_close(raw[0, 0, :, 0], torch.arange(1.0, 4.0).sin())  # row index, no scaling


# ------------------------------------------------------------------------------ embeddings, stem, neck
def _encoders():
    from samkit.backbones.hiera import Hiera
    from samkit.backbones.rep_vit import RepViT
    from samkit.backbones.tiny_vit import TinyViT
    from samkit.backbones.vit_efficient_sam import EfficientSamViT
    from samkit.backbones.vit_sam import ImageEncoderViT
    from samkit.backbones.vitdet import ViT, ViTDetNeck

    with torch.device("meta"):
        return dict(
            vit_sam=ImageEncoderViT(img_size=64, embed_dim=32, depth=1, num_heads=2, out_chans=16),
            efficient_sam=EfficientSamViT(dim=32, num_heads=2, depth=1, img_size=64, out_chans=16),
            hiera=Hiera(embed_dim=16, stages=(1, 1, 1, 1), global_att_blocks=()),
            vitdet=ViT(embed_dim=32, depth=1, num_heads=2),
            vitdet_neck=ViTDetNeck(16, [32]),
            tiny_vit=TinyViT(embed_dims=(16, 32, 40, 48), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2), out_chans=16),
            rep_vit=RepViT(((3, 2, 16, 1, 0, 1), (3, 2, 32, 0, 0, 2), (3, 2, 48, 0, 1, 2), (3, 2, 64, 1, 1, 2)),
                           out_chans=16),
        )


def test_one_patch_embed_with_official_keys():
    enc = _encoders()
    for name in ("vit_sam", "efficient_sam", "hiera", "vitdet"):
        pe = enc[name].patch_embed
        assert type(pe) is layers.PatchEmbed, name
        assert sorted(n for n, _ in pe.named_parameters()) == ["proj.bias", "proj.weight"], name
    assert enc["hiera"].patch_embed.proj.stride == (4, 4) and enc["hiera"].patch_embed.proj.padding == (3, 3)
    pe = layers.PatchEmbed(3, 8, kernel=4)
    x = torch.randn(2, 3, 16, 12)
    out = pe(x)
    assert out.shape == (2, 4, 3, 8)
    assert torch.equal(out, pe.proj(x).permute(0, 2, 3, 1))


def test_one_conv_stem_for_tiny_vit_and_rep_vit():
    enc = _encoders()
    tiny_stem, rep_stem = enc["tiny_vit"].patch_embed["seq"], enc["rep_vit"].features[0]
    assert type(tiny_stem) is layers.ConvStem and type(rep_stem) is layers.ConvStem
    assert {k for k in enc["tiny_vit"].state_dict() if k.startswith("patch_embed.")} >= {
        "patch_embed.seq.0.c.weight", "patch_embed.seq.0.bn.running_var", "patch_embed.seq.2.c.weight"}
    stem = layers.ConvStem(3, 8).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = stem[2](nn.functional.gelu(stem[0](x)))
        assert stem(x).shape == (1, 8, 4, 4) and torch.equal(stem(x), ref)


def test_one_sam_neck():
    enc = _encoders()
    for name in ("vit_sam", "efficient_sam", "tiny_vit", "rep_vit"):
        neck = enc[name].neck
        assert [type(m) for m in neck] == [nn.Conv2d, layers.LayerNorm2d, nn.Conv2d, layers.LayerNorm2d], name
        assert sorted(neck.state_dict()) == ["0.weight", "1.bias", "1.weight", "2.weight", "3.bias", "3.weight"]
        assert neck[0].kernel_size == (1, 1) and neck[2].kernel_size == (3, 3) and neck[2].padding == (1, 1)
    vitdet = enc["vitdet_neck"].convs[0]
    assert [n for n, _ in vitdet.named_children()] == ["conv_1x1", "norm_0", "conv_3x3", "norm_1"]
    bare = layers.sam_neck(8, 4, norm=False, names=("conv_1x1", "norm_0", "conv_3x3", "norm_1"))
    assert [n for n, _ in bare.named_children()] == ["conv_1x1", "conv_3x3"]
    assert bare.conv_1x1.bias is not None and bare.conv_3x3.bias is not None
    with pytest.raises(ValueError, match="4 children"):
        layers.sam_neck(8, 4, names=("a", "b"))


def test_abs_pos_resize_shared_by_the_plain_vits():
    from samkit.backbones import vit_efficient_sam, vitdet
    from samkit.layers.position import resize_abs_pos

    assert vitdet.resize_abs_pos is resize_abs_pos is vit_efficient_sam.resize_abs_pos
    pos = torch.randn(1, 1 + 16, 8)
    assert torch.equal(resize_abs_pos(pos, True, (4, 4)), pos[:, 1:].reshape(1, 4, 4, 8))
    assert resize_abs_pos(pos, True, (6, 5)).shape == (1, 6, 5, 8)
    with pytest.raises(ValueError, match="square"):
        resize_abs_pos(pos, False, (4, 4))


# ------------------------------------------------------------------------------ one RepViT
def test_edge_sam_m1_is_timm_m1_flattened():
    from samkit.backbones.rep_vit import M1_CFGS, timm_layout

    cfgs, outs = timm_layout((48, 96, 192, 384), (2, 2, 14, 2))
    drop_hs = [c[:4] + c[5:] for c in M1_CFGS]  # the hard-swish flag is unused by both models
    assert [c[:4] + c[5:] for c in cfgs] == drop_hs
    assert outs == (2, 6, 22, 26)


def _timm_keys(manifest_name: str, prefix: str) -> dict:
    from parity import manifest

    return {k[len(prefix):]: torch.empty(s, device="meta") for k, s, _ in manifest(manifest_name)
            if k.startswith(prefix)}


def test_both_official_layouts_load_into_one_repvit():
    """EdgeTAM's timm keys (remapped) and EdgeSAM's keys name the same modules with the same shapes."""
    from samkit.backbones.rep_vit import RepViT, RepViTTrunk, remap_timm_repvit

    timm_sd = _timm_keys("edgetam", "image_encoder.trunk.body.")
    assert any(k.startswith("stages_3.downsample.pre_block.") for k in timm_sd)
    with torch.device("meta"):
        trunk, edge_sam = RepViTTrunk.timm_m1(), RepViT.edge_sam()
    ours = {k: tuple(v.shape) for k, v in trunk.state_dict().items()}
    remapped = {k: tuple(v.shape) for k, v in remap_timm_repvit(timm_sd).items()}
    assert remapped == ours
    edge_sam_sd = _timm_keys("edge_sam", "image_encoder.")
    edge_features = {k: tuple(v.shape) for k, v in edge_sam_sd.items() if k.startswith("features.")}
    assert edge_features == ours
    assert set(edge_sam.state_dict()) == set(edge_sam_sd)


def test_remap_timm_repvit_examples_and_purity():
    from samkit.backbones.rep_vit import remap_timm_repvit

    t = torch.zeros(1)
    sd = {
        "stem.conv1.c.weight": t, "stem.conv2.bn.num_batches_tracked": t,
        "stages_0.blocks.0.token_mixer.conv1.bn.bias": t, "stages_0.blocks.1.se.fc2.weight": t,
        "stages_1.downsample.pre_block.channel_mixer.conv2.c.weight": t,
        "stages_1.downsample.spatial_downsample.bn.weight": t,
        "stages_1.downsample.channel_downsample.c.weight": t,
        "stages_1.downsample.ffn.conv1.c.weight": t, "stages_1.blocks.0.token_mixer.conv.c.weight": t,
        "stages_1.blocks.0.channel_mixer.conv1.bn.running_mean": t,
        "stages_0.blocks.0.token_mixer.bn.weight": t,  # not legacy RepViT: passed through
        "head.fc.weight": t,
    }
    before = dict(sd)
    out = remap_timm_repvit(sd)
    assert sd == before  # the input is not modified
    assert list(out) == [
        "features.0.0.c.weight", "features.0.2.bn.num_batches_tracked",
        "features.1.token_mixer.0.conv1.bn.bias", "features.2.token_mixer.1.fc2.weight",
        "features.3.channel_mixer.m.2.c.weight",
        "features.4.token_mixer.0.bn.weight", "features.4.token_mixer.2.c.weight",
        "features.4.channel_mixer.m.0.c.weight", "features.5.token_mixer.0.conv.c.weight",
        "features.5.channel_mixer.m.0.bn.running_mean",
        "stages_0.blocks.0.token_mixer.bn.weight", "head.fc.weight",
    ]


def test_edgetam_remap_composes_sam2_and_timm_renames():
    from samkit.models.edgetam import remap_edgetam

    t = torch.zeros(1)
    out = remap_edgetam({"image_encoder.trunk.body.stem.conv1.c.weight": t,
                         "image_encoder.neck.convs.0.conv.weight": t,
                         "sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight": t,
                         "spatial_perceiver.latents": t})
    assert set(out) == {"image_encoder.trunk.features.0.0.c.weight", "image_encoder.neck.convs.0.conv.weight",
                        "mask_decoder.transformer.layers.0.mlp.lin1.weight", "spatial_perceiver.latents"}


def test_repvit_trunk_taps_and_checks():
    from samkit.backbones.rep_vit import RepViT, RepViTTrunk, timm_layout

    cfgs, outs = timm_layout((8, 16, 24, 32), (1, 1, 2, 1))
    torch.manual_seed(0)
    trunk = RepViTTrunk(cfgs, outs).eval()
    assert trunk.channel_list == [32, 24, 16, 8]
    with torch.no_grad():
        feats = trunk(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 24, 4, 4), (1, 32, 2, 2)]
    assert all(f.is_contiguous() for f in feats)
    with pytest.raises(ValueError, match="increasing"):
        RepViTTrunk(cfgs, (3, 2))
    with pytest.raises(ValueError, match="4 widths"):
        RepViT(cfgs[:3])
    with pytest.raises(ValueError, match="mlp_ratio"):
        timm_layout((8, 16), (1, 1), mlp_ratio=3)
