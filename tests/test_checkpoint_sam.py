"""Checkpoint identification and strict loading with the real SAM builders (meta device only:
no weights are allocated and nothing is downloaded)."""
from __future__ import annotations

import pytest
import torch

from samkit import checkpoint as ck
from samkit.errors import CheckpointError
from samkit.models.sam import build_sam_vit_b, build_sam_vit_l


def _meta(build):
    with torch.device("meta"):
        return build()


def test_sam_vit_l_file_given_to_sam_vit_b_is_named():
    large_sd = _meta(build_sam_vit_l).state_dict()
    base = _meta(build_sam_vit_b)
    with pytest.raises(CheckpointError) as err:
        ck.load_into(base, large_sd, "sam_vit_b", source="sam_vit_l_0b3195.pth")
    msg = str(err.value)
    assert "does not fit model 'sam_vit_b'" in msg
    assert "unexpected (" in msg and "image_encoder.blocks.12." in msg  # ViT-L has 24 blocks
    assert "shape mismatch (" in msg
    assert "This looks like a checkpoint of sam_vit_l; call load_model('sam_vit_l'" in msg


def test_identify_sam_sizes_exactly():
    for name, build in (("sam_vit_b", build_sam_vit_b), ("sam_vit_l", build_sam_vit_l)):
        assert ck.identify(_meta(build).state_dict()) == [name]


def test_official_sam_keys_load_strictly():
    """The official segment-anything module tree (the oracle) has exactly samkit's keys/shapes."""
    from oracle_shims import import_oracle

    sa = import_oracle("segment_anything")
    with torch.device("meta"):
        official = sa.sam_model_registry["vit_b"]()
    sd = official.state_dict()
    report = ck.load_into(_meta(build_sam_vit_b), sd, "sam_vit_b")
    assert report == {"missing": [], "unexpected": [], "mismatched": []}
