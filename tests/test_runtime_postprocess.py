"""``samkit.runtime.imageops.sam_postprocess`` (the runtime's segment-anything mask
postprocessing, a band of taps per axis) against torch's two steps: bilinear to the model frame,
crop, bilinear to the image size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samkit.runtime import imageops


def _torch_two_steps(low, input_size, input_hw, size):
    x = F.interpolate(torch.from_numpy(low), (input_size, input_size), mode="bilinear", align_corners=False)
    x = x[..., :input_hw[0], :input_hw[1]]
    return F.interpolate(x, tuple(size), mode="bilinear", align_corners=False).numpy()


@pytest.mark.parametrize("input_hw, size", [((171, 256), (267, 400)), ((256, 192), (600, 450)),
                                            ((256, 15), (500, 29)), ((3, 256), (5, 430))])
def test_sam_postprocess_equals_the_two_bilinear_steps(input_hw, size):
    rng = np.random.default_rng(0)
    low = (rng.standard_normal((2, 3, 64, 64)) * 4).astype(np.float32)
    ref = _torch_two_steps(low, 256, input_hw, size)
    got = imageops.sam_postprocess(low, 256, input_hw, size)
    assert got.shape == ref.shape and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-5)
    assert ((got > 0) != (ref > 0)).sum() == ((got > 0) != (ref > 0))[np.abs(ref) < 1e-4].sum()
