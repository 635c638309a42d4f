"""samkit.memory against the official sam2 modules (test-only oracle) and against the
definitions of the EfficientTAM / EdgeTAM variants."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import official_import_path
from parity import manifest
from samkit.memory import attach_memory
from samkit.memory.attention import RoPEAttention, RoPEAttentionV2, apply_rope, axial_rope_angles
from samkit.memory.config import SAM21, build_memory_attention
from samkit.layers.position import sine_encoding_1d, sine_encoding_2d
from samkit.memory.modules import MemoryEncoder
from samkit.memory.perceiver import PerceiverResampler


def config_for(name: str):
    """The memory config the builder of ``name`` passes to its model (built on the meta device)."""
    from samkit.registry import build_model

    with torch.device("meta"):
        return getattr(build_model(name), "memory_config", None)


def _official(module: str):
    with official_import_path():
        import importlib

        return importlib.import_module(module)


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.1))


# ----------------------------------------------------------------------------- keys
@pytest.mark.parametrize("name", ["sam2.1_hiera_t", "efficienttam_ti", "efficienttam_ti_1", "edgetam"])
def test_memory_keys_match_manifest(name):
    roots = ("memory_attention.", "memory_encoder.", "obj_ptr_proj.", "obj_ptr_tpos_proj.", "mask_downsample.",
             "spatial_perceiver.", "maskmem_tpos_enc", "no_mem_embed", "no_mem_pos_enc", "no_obj_ptr",
             "no_obj_embed_spatial")
    want = {k: tuple(s) for k, s, _ in manifest(name) if k.startswith(roots)}
    m = attach_memory(torch.nn.Module(), config_for(name))
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert got == want


# ----------------------------------------------------------------------------- encodings
def test_sine_encodings_match_official():
    pe = _official("sam2.modeling.position_encoding")
    utils = _official("sam2.modeling.sam2_utils")
    ref = pe.PositionEmbeddingSine(64, warmup_cache=False)(torch.zeros(1, 64, 64, 64))
    assert torch.allclose(sine_encoding_2d(64, 64, 64, torch.device("cpu")), ref, atol=1e-6)
    pos = torch.tensor([0.0, 1.0, 2.0, 5.0]) / 15
    assert torch.allclose(sine_encoding_1d(pos, 256), utils.get_1d_sine_pe(pos, 256), atol=1e-6)


def test_rope_real_arithmetic_matches_complex_official():
    pe = _official("sam2.modeling.position_encoding")
    q = torch.randn(2, 1, 64, 32)
    k = torch.randn(2, 1, 3 * 64, 32)
    cis = pe.compute_axial_cis(32, 8, 8)
    rq, rk = pe.apply_rotary_enc(q, k.clone(), cis, repeat_freqs_k=True)
    cos, sin = axial_rope_angles(32, 8, 8)
    assert torch.allclose(apply_rope(q, cos, sin), rq, atol=1e-5)
    assert torch.allclose(apply_rope(k, cos, sin), rk, atol=1e-5)


@pytest.mark.parametrize("n_frames,n_ptr", [(1, 0), (3, 8), (2, 4)])
def test_rope_attention_matches_official(n_frames, n_ptr):
    tr = _official("sam2.modeling.sam.transformer")
    ref = tr.RoPEAttention(embedding_dim=64, num_heads=1, kv_in_dim=16, rope_k_repeat=True, feat_sizes=(8, 8))
    ours = RoPEAttention(64, 1, kv_in_dim=16, rope_k_repeat=True)
    _randomize(ref)
    ours.load_state_dict(ref.state_dict())
    q, k, v = torch.randn(2, 64, 64), torch.randn(2, n_frames * 64 + n_ptr, 16), torch.randn(2, n_frames * 64 + n_ptr, 16)
    with torch.no_grad():
        assert torch.allclose(ours(q, k, v, num_k_exclude_rope=n_ptr), ref(q, k, v, num_k_exclude_rope=n_ptr), atol=1e-5)


def test_memory_attention_and_encoder_match_official():
    ma = _official("sam2.modeling.memory_attention")
    me = _official("sam2.modeling.memory_encoder")
    pe = _official("sam2.modeling.position_encoding")
    tr = _official("sam2.modeling.sam.transformer")
    layer = ma.MemoryAttentionLayer(
        activation="relu", d_model=64, dim_feedforward=128, dropout=0.0, pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        self_attention=tr.RoPEAttention(embedding_dim=64, num_heads=1, feat_sizes=(8, 8)),
        cross_attention=tr.RoPEAttention(embedding_dim=64, num_heads=1, kv_in_dim=16, rope_k_repeat=True,
                                         feat_sizes=(8, 8)))
    ref = ma.MemoryAttention(d_model=64, pos_enc_at_input=True, layer=layer, num_layers=2).eval()
    _randomize(ref, 1)
    cfg = SAM21.__class__(hidden_dim=64, mem_dim=16, attention_layers=2, image_size=128)
    ours = build_memory_attention(cfg)
    for lyr in ours.layers:  # feed-forward width of this small test
        lyr.linear1 = torch.nn.Linear(64, 128)
        lyr.linear2 = torch.nn.Linear(128, 64)
    ours.load_state_dict(ref.state_dict())
    curr, cpos = torch.randn(64, 2, 64), torch.randn(64, 2, 64)
    mem, mpos = torch.randn(2 * 64 + 8, 2, 16), torch.randn(2 * 64 + 8, 2, 16)
    with torch.no_grad():
        r = ref(curr=[curr], curr_pos=[cpos], memory=mem, memory_pos=mpos, num_obj_ptr_tokens=8)
        o = ours(curr.transpose(0, 1), cpos.transpose(0, 1), mem.transpose(0, 1), mpos.transpose(0, 1), 8, 2)
    assert torch.allclose(o.transpose(0, 1), r, atol=1e-4)

    enc_ref = me.MemoryEncoder(
        out_dim=64, in_dim=256, position_encoding=pe.PositionEmbeddingSine(64, warmup_cache=False),
        mask_downsampler=me.MaskDownSampler(kernel_size=3, stride=2, padding=1),
        fuser=me.Fuser(me.CXBlock(dim=256, kernel_size=7, padding=3, layer_scale_init_value=1e-6), num_layers=2)).eval()
    _randomize(enc_ref, 2)
    enc = MemoryEncoder(256, 64)
    enc.load_state_dict(enc_ref.state_dict())
    pix, mask = torch.randn(1, 256, 8, 8), torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        r = enc_ref(pix, mask, skip_mask_sigmoid=True)
        feats, pos = enc(pix, mask)
    assert torch.allclose(feats, r["vision_features"], atol=1e-4)
    assert torch.allclose(pos, r["vision_pos_enc"][0], atol=1e-6)


# ----------------------------------------------------------------------------- EfficientTAM
def _pooled_inputs(frames=3, ptr=8, grid=8, d=32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, grid * grid, d, generator=g)
    k = torch.randn(1, frames * grid * grid + ptr, 16, generator=g)
    v = torch.randn(1, frames * grid * grid + ptr, 16, generator=g)
    return q, k, v


def test_pooled_v1_equals_full_attention_on_block_constant_keys(monkeypatch):
    """With keys/values constant over each 2x2 block, 2x2 pooling plus the +2 ln 2 logit
    term is exact: v1 equals unpooled attention."""
    full = RoPEAttention(32, 1, kv_in_dim=16, rope_k_repeat=True)
    pooled = RoPEAttention(32, 1, kv_in_dim=16, rope_k_repeat=True, pool="v1")
    pooled.load_state_dict(full.state_dict())
    q, k, v = _pooled_inputs()
    # block-constant memory tokens per frame (8x8 grid -> 4x4 blocks)
    def blocky(x):
        sp = x[:, :48].reshape(1, 3, 4, 1, 4, 1, 16).expand(1, 3, 4, 2, 4, 2, 16).reshape(1, 192, 16)
        return torch.cat([sp, x[:, 192:]], dim=1)
    k, v = blocky(k), blocky(v)
    # RoPE breaks the block-constancy of the keys; compare with the rotation switched off
    import samkit.memory.attention as A

    monkeypatch.setattr(A, "rope_", lambda x, table: x)
    with torch.no_grad():
        assert torch.allclose(pooled(q, k, v, num_k_exclude_rope=8), full(q, k, v, num_k_exclude_rope=8), atol=1e-5)


def test_pooled_v1_v2_formulas():
    att = RoPEAttention(32, 1, kv_in_dim=16, rope_k_repeat=True, pool="v1")
    att2 = RoPEAttention(32, 1, kv_in_dim=16, rope_k_repeat=True, pool="v2")
    att2.load_state_dict(att.state_dict())
    q, k, v = _pooled_inputs()
    with torch.no_grad():
        qq = att._split(att.q_proj(q))
        kk, vv = att._split(att.k_proj(k)), att._split(att.v_proj(v))
        cos, sin = axial_rope_angles(32, 8, 8)
        qq = apply_rope(qq, cos, sin)
        ks = apply_rope(kk[:, :, :192], cos, sin)

        def pool(x):  # per frame 8x8 -> 4x4
            x = x.reshape(1, 1, 3, 8, 8, -1).permute(0, 1, 2, 5, 3, 4).reshape(3, -1, 8, 8)
            return F.avg_pool2d(x, 2).reshape(1, 1, 3, -1, 16).permute(0, 1, 2, 4, 3).reshape(1, 1, 48, -1)

        kp, vp = pool(ks), pool(vv[:, :, :192])
        s = 1 / math.sqrt(32)
        logits = torch.cat([qq @ kp.transpose(-1, -2) * s + 2 * math.log(2), qq @ kk[:, :, 192:].transpose(-1, -2) * s], -1)
        want1 = att.out_proj(att._merge(logits.softmax(-1) @ torch.cat([vp, vv[:, :, 192:]], 2)))
        want2 = att.out_proj(att._merge(F.scaled_dot_product_attention(
            qq, torch.cat([kp + 2 * math.log(2), kk[:, :, 192:]], 2), torch.cat([vp, vv[:, :, 192:]], 2))))
        assert torch.allclose(att(q, k, v, num_k_exclude_rope=8), want1, atol=1e-5)
        assert torch.allclose(att2(q, k, v, num_k_exclude_rope=8), want2, atol=1e-5)
        # a single memory frame is not pooled (upstream: num_k_rope <= nq)
        one = RoPEAttention(32, 1, kv_in_dim=16, rope_k_repeat=True)
        one.load_state_dict(att.state_dict())
        assert torch.allclose(att(q, k[:, :72], v[:, :72], num_k_exclude_rope=8),
                              one(q, k[:, :72], v[:, :72], num_k_exclude_rope=8), atol=1e-6)


# ----------------------------------------------------------------------------- EdgeTAM
def test_rope_v2_leaves_global_latents_and_pointers_unrotated():
    att = RoPEAttentionV2(32, 1, kv_in_dim=16, q_sizes=(8, 8), k_sizes=(4, 4))
    q = torch.randn(1, 64, 32)
    k = torch.randn(1, 2 * (5 + 16) + 4, 16)
    v = torch.randn_like(k)
    with torch.no_grad():
        kk = att._split(att.k_proj(k))
        cos, sin = axial_rope_angles(32, 4, 4)
        parts = []
        for f in range(2):
            base = f * 21
            parts += [kk[:, :, base:base + 5], apply_rope(kk[:, :, base + 5:base + 21], cos, sin)]
        parts.append(kk[:, :, 42:])
        kr = torch.cat(parts, 2)
        qc, qs = axial_rope_angles(32, 8, 8)
        qq = apply_rope(att._split(att.q_proj(q)), qc, qs)
        want = att.out_proj(att._merge(F.scaled_dot_product_attention(qq, kr, att._split(att.v_proj(v)))))
        assert torch.allclose(att(q, k, v, num_k_exclude_rope=4, rope_k_repeat=2), want, atol=1e-5)


def test_perceiver_batches_objects_and_shapes():
    p = PerceiverResampler(dim=16, depth=2, dim_head=16, num_latents=8, num_latents_2d=16).eval()
    _randomize(p, 3)
    x, pos = torch.randn(3, 16, 16, 16), torch.randn(3, 16, 16, 16)
    with torch.no_grad():
        lat, lpos = p(x, pos)
        one, _ = p(x[1:2], pos[1:2])
    assert lat.shape == (3, 24, 16) and lpos.shape == (3, 24, 16)
    assert torch.allclose(lat[1:2], one, atol=1e-5)
    assert torch.count_nonzero(lpos[:, :8]) == 0  # global latents carry no position
    assert torch.allclose(lpos[0, 8:], sine_encoding_2d(4, 4, 16, torch.device("cpu")).flatten(2)[0].T, atol=1e-6)
    # window i of the 2-D latents only sees its own 4x4 window
    x2 = x.clone()
    x2[:, :, :4, :4] += torch.randn(3, 16, 4, 4)
    with torch.no_grad():
        lat2, _ = p(x2, pos)
    changed = (lat2[0, 8:] - lat[0, 8:]).abs().sum(-1) > 1e-6
    assert changed.tolist() == [True] + [False] * 15


def test_builders_pass_their_memory_config():
    assert config_for("sam2.1_hiera_l").cross_attention == "rope" and config_for("sam2.1_hiera_l").no_obj_embed_spatial
    assert config_for("efficienttam_s_1").cross_attention == "pooled_v1"
    assert config_for("efficienttam_ti_2").cross_attention == "pooled_v2"
    assert config_for("efficienttam_ti_512").image_size == 512
    assert config_for("efficienttam_ti").cross_attention == "rope"
    e = config_for("edgetam")
    assert e.cross_attention == "rope_v2" and e.attention_layers == 2 and e.prompted_frames_condition_all
    assert config_for("sam2_hiera_t").family == "sam2.0" and not config_for("sam2_hiera_t").no_obj_embed_spatial
    assert config_for("sam_vit_b") is None


def test_inplace_rope_matches_reference_on_strided_views():
    """``rope_`` (complex, in place, table broadcast over memory frames) equals ``apply_rope``
    on a slice of a head-split projection, leaving the tokens after the slice untouched."""
    from samkit.memory.attention import rope_

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3 * 16 + 5, 2 * 8, generator=g).reshape(2, 53, 2, 8).transpose(1, 2)  # B x h x N x c
    cos, sin = axial_rope_angles(8, 4, 4)
    want = apply_rope(x[:, :, :48], cos, sin)
    tail = x[:, :, 48:].clone()
    rope_(x[:, :, :48], torch.complex(cos, sin))
    assert torch.allclose(x[:, :, :48], want, atol=1e-6)
    assert torch.equal(x[:, :, 48:], tail)


@pytest.mark.parametrize("batch", [1, 2])
def test_conv1x1_matches_conv2d(batch):
    from torch import nn

    from samkit.layers.conv import conv1x1

    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, kernel_size=1)
    x = torch.randn(batch, 16, 5, 7)
    with torch.no_grad():
        assert torch.allclose(conv1x1(x, conv), conv(x), atol=1e-5)
