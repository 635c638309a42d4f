"""``samkit.ops.resample``: mask upsampling as banded products against ``F.interpolate``."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from samkit.ops.resample import axis_matrix, resample, resample_mask

CASES = [  # (low h, low w), output (H, W), mode
    ((256, 256), (1200, 1800), "bilinear"),
    ((256, 256), (1200, 1800), "bicubic"),
    ((256, 256), (480, 854), "bicubic"),
    ((256, 256), (100, 150), "bilinear"),  # downsampling (no antialias, as the models do)
    ((256, 256), (37, 999), "bicubic"),
    ((64, 80), (1000, 3), "bilinear"),
    ((256, 256), (256, 256), "bilinear"),
]


@pytest.mark.parametrize("low_hw, size, mode", CASES)
def test_resample_is_interpolate(low_hw, size, mode):
    g = torch.Generator().manual_seed(sum(size))
    low = torch.randn(2, 3, *low_hw, generator=g) * 8
    ref = F.interpolate(low, size, mode=mode, align_corners=False)
    got = resample(low, size, mode)
    assert got.shape == ref.shape and got.dtype == low.dtype
    assert (got - ref).abs().max().item() <= 2e-5 * 8 * 4
    # a mask pixel may only flip where the logit is float noise away from 0
    flips = (got > 0) != (ref > 0)
    assert ref[flips].abs().max().item() < 1e-4 if flips.any() else True


@pytest.mark.parametrize("frame, valid, size", [(1024, (683, 1024), (1200, 1800)), (1024, (1024, 7), (1000, 7)),
                                                (1008, (560, 1008), (480, 864))])
def test_resample_sam_rule(frame, valid, size):
    low = torch.randn(1, 2, frame // 4, frame // 4, generator=torch.Generator().manual_seed(frame)) * 8
    full = F.interpolate(low, (frame, frame), mode="bilinear", align_corners=False)[..., : valid[0], : valid[1]]
    ref = F.interpolate(full, size, mode="bilinear", align_corners=False)
    got = resample(low, size, "bilinear", frame=frame, valid=valid)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 2e-5 * 8 * 4


def test_axis_matrix_carries_float32_weights():
    """The per-axis map is built by the reference op in float32, so its weights are the ones the
    reference applies to the logits (float64 source positions would differ by ~1e-5 here)."""
    m = axis_matrix(256, 1800, "bilinear")
    x = torch.randn(256, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x[None, None, None], (1, 1800), mode="bilinear", align_corners=False)[0, 0, 0]
    assert (m.float() @ x - ref).abs().max().item() < 1e-5
    assert m.shape == (1800, 256) and torch.allclose(m.sum(1), torch.ones(1800, dtype=m.dtype))


def test_resample_rejects_unknown_mode():
    with pytest.raises(ValueError, match="bilinear"):
        resample(torch.zeros(1, 1, 4, 4), (8, 8), "nearest")


MASK_CASES = [((256, 256), (1200, 1800), "bilinear", None, None), ((256, 256), (1200, 1800), "bicubic", None, None),
              ((256, 256), (1200, 1800), "bilinear", 1024, (683, 1024)), ((256, 256), (37, 999), "bicubic", None, None),
              ((64, 80), (1000, 3), "bilinear", None, None), ((256, 256), (100, 150), "bilinear", 1024, (683, 1024))]


@pytest.mark.parametrize("low_hw, size, mode, frame, valid", MASK_CASES)
@pytest.mark.parametrize("kind", ["blobs", "noise"])
def test_resample_mask_is_the_thresholded_resample(low_hw, size, mode, frame, valid, kind):
    """Tiles decided by the sign of their input window give the same mask as thresholding the
    whole interpolation (smooth blobs: most tiles decided whole; noise: nearly none)."""
    g = torch.Generator().manual_seed(7)
    if kind == "blobs":
        low = F.interpolate(torch.randn(2, 2, 8, 8, generator=g), low_hw, mode="bilinear", align_corners=False) * 10
    else:
        low = torch.randn(2, 2, *low_hw, generator=g)
    logits = resample(low, size, mode, frame=frame, valid=valid)
    got = resample_mask(low, size, mode, frame=frame, valid=valid)
    assert got.dtype == torch.bool and got.shape == logits.shape
    differ = got != (logits > 0)
    assert not differ.any() or logits[differ].abs().max().item() < 1e-4
    if frame is None:
        ref = F.interpolate(low, size, mode=mode, align_corners=False)
        differ = got != (ref > 0)
        assert not differ.any() or ref[differ].abs().max().item() < 1e-4
