"""Pre/post-processing rules of samkit.models.base against their plain definitions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samkit.models.base import (ImageTransform, postprocess_crop_upscale, preprocess_longest_side,
                                resize_longest_side_pil)


@pytest.mark.parametrize("hw", [(267, 400), (320, 240), (1000, 1000), (1200, 1799), (7, 1000), (1000, 3)])
def test_crop_upscale_matches_the_two_interpolations(hw):
    h, w = hw
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(h * w))
    s = 1024 / max(h, w)
    t = ImageTransform((h, w), (int(h * s + 0.5), int(w * s + 0.5)), 1024)
    full = F.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)
    ref = F.interpolate(full[..., : t.input_size[0], : t.input_size[1]], (h, w), mode="bilinear", align_corners=False)
    got = postprocess_crop_upscale(x, t)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 2e-5 * x.abs().max().item()  # float rounding only


@pytest.mark.parametrize("hw, new_hw", [((267, 400), (684, 1024)), ((1200, 1800), (683, 1024)),
                                        ((10, 3000), (3, 1024))])
def test_longest_side_rounding(hw, new_hw):
    img = np.zeros((*hw, 3), np.uint8)
    assert resize_longest_side_pil(img, 1024).shape[:2] == new_hw


def test_longest_side_normalises_and_pads_with_zero():
    img = np.full((50, 100, 3), 200, np.uint8)
    x, t = preprocess_longest_side(img, 64, (100.0, 100.0, 100.0), (50.0, 50.0, 50.0), torch.device("cpu"))
    assert t.input_size == (32, 64) and x.shape == (1, 3, 64, 64)
    assert torch.allclose(x[..., :32, :], torch.full((1, 3, 32, 64), 2.0))
    assert torch.count_nonzero(x[..., 32:, :]) == 0


def test_transform_scales_points_and_boxes():
    t = ImageTransform((100, 200), (512, 1024), 1024)
    pts = t.coords_to_frame(torch.tensor([[200.0, 100.0], [10.0, 20.0]]))
    assert torch.allclose(pts, torch.tensor([[1024.0, 512.0], [51.2, 102.4]]))
    assert torch.allclose(t.boxes_to_frame(torch.tensor([[0.0, 0.0, 200.0, 100.0]])),
                          torch.tensor([[0.0, 0.0, 1024.0, 512.0]]))
