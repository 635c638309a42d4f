"""Key/shape equality between the official SAM 2-family state dicts (manifests) and samkit's
models after ``remap_<format>``, for every released size; large models are built on the meta
device (no memory, no time)."""
from __future__ import annotations

import pytest
import torch

from parity import manifest

MANIFESTS = ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "edgetam",
             "efficienttam_ti", "efficienttam_s", "efficienttam_ti_1", "efficienttam_ti_2"]
# SAM 2.0 differs from 2.1 only by two memory entries (configs: no no_obj_embed_spatial, no
# projected temporal encoding of object pointers); the 512 EfficientTAM files have the
# layout of their 1024 siblings (the ViT position embedding keeps its 224-px 14 x 14 grid).
DERIVED = {
    "sam2_hiera_t": ("sam2.1_hiera_t", ("no_obj_embed_spatial", "obj_ptr_tpos_proj.")),
    "sam2_hiera_s": ("sam2.1_hiera_s", ("no_obj_embed_spatial", "obj_ptr_tpos_proj.")),
    "sam2_hiera_b+": ("sam2.1_hiera_b+", ("no_obj_embed_spatial", "obj_ptr_tpos_proj.")),
    "sam2_hiera_l": ("sam2.1_hiera_l", ("no_obj_embed_spatial", "obj_ptr_tpos_proj.")),
    "efficienttam_ti_512": ("efficienttam_ti", ()),
    "efficienttam_s_512": ("efficienttam_s", ()),
    "efficienttam_s_1": ("efficienttam_s", ()),
    "efficienttam_s_2": ("efficienttam_s", ()),
}


def _official(name: str) -> dict:
    if name in DERIVED:
        base, dropped = DERIVED[name]
        return {k: s for k, s, _ in manifest(base) if not k.startswith(dropped)}
    return {k: s for k, s, _ in manifest(name)}


def _check(name: str) -> None:
    from samkit.checkpoint import remap
    from samkit.registry import build_model

    official = _official(name)
    meta_sd = {k: torch.empty(shape, device="meta") for k, shape in official.items()}
    remapped = remap(meta_sd, name)
    assert len(remapped) == len(official)
    with torch.device("meta"):
        model = build_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: list(v.shape) for k, v in remapped.items()}
    missing = sorted(set(ours) - set(theirs))
    unexpected = sorted(set(theirs) - set(ours))
    assert not missing and not unexpected, (missing[:8], unexpected[:8])
    bad = [(k, ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]]
    assert not bad, bad[:8]


@pytest.mark.parametrize("name", MANIFESTS)
def test_remapped_manifest_equals_state_dict(name):
    _check(name)


@pytest.mark.parametrize("name", sorted(DERIVED))
def test_derived_layouts_equal_state_dict(name):
    _check(name)


def test_every_sam2_family_spec_builds():
    from samkit.specs import list_models

    names = [n for f in ("sam2", "edgetam", "efficienttam") for n in list_models(f)]
    assert len(names) == 17
    assert set(names) <= set(MANIFESTS) | set(DERIVED)


def test_remap_renames_only_the_heads():
    from samkit.models.sam2 import remap_sam2

    t = torch.zeros(1)
    sd = {
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": t,
        "sam_mask_decoder.transformer.layers.1.mlp.layers.0.weight": t,
        "sam_mask_decoder.transformer.layers.0.mlp.layers.1.bias": t,
        "sam_mask_decoder.pred_obj_score_head.layers.2.bias": t,
        "sam_mask_decoder.output_hypernetworks_mlps.0.layers.1.weight": t,
        "image_encoder.trunk.blocks.0.mlp.layers.0.weight": t,
        "memory_attention.layers.0.linear1.weight": t,
        "obj_ptr_proj.layers.0.weight": t,
        "no_mem_embed": t,
    }
    before = dict(sd)
    out = remap_sam2(sd)
    assert sd == before  # pure
    assert list(out) == [
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "mask_decoder.transformer.layers.1.mlp.lin1.weight",
        "mask_decoder.transformer.layers.0.mlp.lin2.bias",
        "mask_decoder.pred_obj_score_head.layers.2.bias",
        "mask_decoder.output_hypernetworks_mlps.0.layers.1.weight",
        "image_encoder.trunk.blocks.0.mlp.layers.0.weight",
        "memory_attention.layers.0.linear1.weight",
        "obj_ptr_proj.layers.0.weight",
        "no_mem_embed",
    ]


def test_hiera_configurations():
    """Stage layout of the four Hiera sizes (dims, q-pool blocks, global blocks, windows)."""
    from samkit.backbones.hiera import build_hiera

    expect = {  # size: (channel_list, stage ends, global blocks, first window sizes per stage)
        "tiny": ([768, 384, 192, 96], [0, 2, 9, 11], {5, 7, 9}),
        "small": ([768, 384, 192, 96], [0, 2, 13, 15], {7, 10, 13}),
        "base_plus": ([896, 448, 224, 112], [1, 4, 20, 23], {12, 16, 20}),
        "large": ([1152, 576, 288, 144], [1, 7, 43, 47], {23, 33, 43}),
    }
    for size, (channels, ends, global_blocks) in expect.items():
        with torch.device("meta"):
            h = build_hiera(size)
        assert h.channel_list == channels and h.stage_ends == ends, size
        assert {i for i, b in enumerate(h.blocks) if b.window_size == 0} == global_blocks, size
        assert [i for i, b in enumerate(h.blocks) if b.q_stride] == [e + 1 for e in ends[:-1]], size
