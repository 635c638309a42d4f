"""Mask ops: pairwise mask IoU, stability score, small-region clean-up, RLE."""
import numpy as np
import pytest
import torch

from samkit.errors import InputError
from samkit.ops import (coco_to_mask, mask_iou, mask_to_rle, masks_to_coco_rle, remove_small_regions, rle_area,
                        rle_to_mask, stability_score)


def test_mask_iou_exact_counts_and_chunks():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 33, 47, generator=g) > 0.5
    b = torch.rand(3, 33, 47, generator=g) > 0.7
    b[2] = False
    ref = np.zeros((4, 3))
    for i in range(4):
        for j in range(3):
            inter = (a[i] & b[j]).sum().item()
            union = (a[i] | b[j]).sum().item()
            ref[i, j] = inter / union
    for chunk in (0, 100, 7):
        got = mask_iou(a, b, chunk_pixels=chunk)
        assert got.shape == (4, 3) and np.allclose(got.numpy(), ref, atol=1e-6)
    assert float(mask_iou(b[2:], b[2:])) == 0.0  # two empty masks: 0, not NaN
    with pytest.raises(InputError, match="differ in size"):
        mask_iou(a, b[:, :10])


@pytest.mark.oracle
@pytest.mark.parametrize("offset", [1.0, 0.5])
def test_stability_score_matches_official(offset):
    from oracle_shims import import_oracle

    amg = import_oracle("segment_anything.utils.amg")
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 40, 50, generator=g) * 3
    ours = stability_score(logits, 0.0, offset)
    ref = amg.calculate_stability_score(logits, 0.0, offset)
    assert torch.equal(ours, ref)


def test_stability_score_values():
    logits = torch.tensor([[[3.0, 0.5], [-0.5, -3.0]]])
    # > +1: one pixel; > -1: three pixels
    assert float(stability_score(logits, 0.0, 1.0)) == pytest.approx(1 / 3)
    # an empty low mask (no logit above threshold - offset): 0.0, the one documented answer
    empty = stability_score(torch.full((3, 2, 2), -9.0), 0.0, 1.0)
    assert empty.dtype == torch.float32 and torch.equal(empty, torch.zeros(3))
    # only the empty masks of a batch get 0
    mixed = stability_score(torch.stack([logits[0], torch.full((2, 2), -1.0)]), 0.0, 0.75)
    assert mixed.tolist() == [pytest.approx(1 / 3), 0.0]


@pytest.mark.oracle
@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_matches_official(mode):
    pytest.importorskip("cv2")
    from oracle_shims import import_oracle

    amg = import_oracle("segment_anything.utils.amg")
    m = np.zeros((40, 40), bool)
    m[5:30, 5:30] = True
    m[10:12, 10:12] = False  # small hole
    m[35:37, 35:37] = True  # small island
    for thresh in (3, 10, 1000):
        ours, changed = remove_small_regions(m, thresh, mode)
        ref, ref_changed = amg.remove_small_regions(m, thresh, mode)
        assert changed == ref_changed and np.array_equal(ours, ref)
    filled, changed = remove_small_regions(m, 10, "holes")
    assert changed and filled[10:12, 10:12].all()
    with pytest.raises(InputError, match="holes"):
        remove_small_regions(m, 10, "both")


@pytest.mark.oracle
def test_rle_matches_official_and_pycocotools():
    pytest.importorskip("pycocotools")
    from oracle_shims import import_oracle

    amg = import_oracle("segment_anything.utils.amg")
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(5, 13, 9, generator=g) > 0.6
    masks[0] = True  # starts with foreground: counts begin with 0
    masks[1] = False
    ours = mask_to_rle(masks)
    assert ours == amg.mask_to_rle_pytorch(masks)
    assert ours[0]["counts"][0] == 0
    for r, m in zip(ours, masks):
        assert np.array_equal(rle_to_mask(r), m.numpy())
        assert rle_area(r) == int(m.sum())
    for c, m in zip(masks_to_coco_rle(masks), masks):
        assert isinstance(c["counts"], str) and np.array_equal(coco_to_mask(c), m.numpy())


def test_rle_bad_counts():
    with pytest.raises(InputError, match="counts sum"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
