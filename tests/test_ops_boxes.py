"""Box ops: areas, pairwise IoU, mask -> box (SAM's inclusive convention), deltas, crop edges."""
import numpy as np
import pytest
import torch

from samkit.errors import InputError
from samkit.ops import box_area, box_iou, box_xyxy_to_xywh, encode_box_deltas, is_box_near_crop_edge, masks_to_boxes

T = torch.tensor

IOU_TABLE = [
    ("identical", [0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ("half", [0, 0, 10, 10], [0, 0, 10, 5], 0.5),
    ("disjoint", [0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ("touching edges", [0, 0, 10, 10], [10, 0, 20, 10], 0.0),
    ("shifted", [0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ("contained", [0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),
]


@pytest.mark.parametrize("name,a,b,expected", IOU_TABLE, ids=[r[0] for r in IOU_TABLE])
def test_box_iou_table(name, a, b, expected):
    got = box_iou(T([a], dtype=torch.float32), T([b], dtype=torch.float32))
    assert got.shape == (1, 1) and float(got) == pytest.approx(expected, abs=1e-7)
    assert float(box_iou(T([b]), T([a]))) == pytest.approx(expected, abs=1e-7)  # symmetric, int input


def test_box_iou_matrix_and_area():
    a = T([[0, 0, 2, 2], [1, 1, 3, 3]], dtype=torch.float32)
    b = T([[0, 0, 2, 2], [0, 0, 1, 1], [5, 5, 6, 6]], dtype=torch.float32)
    m = box_iou(a, b)
    assert m.shape == (2, 3)
    assert torch.allclose(m, T([[1.0, 0.25, 0.0], [1 / 7, 0.0, 0.0]]))
    assert box_area(T([[0, 0, 3, 4], [1, 1, 1, 5]])).tolist() == [12, 0]
    assert box_xyxy_to_xywh(T([[1, 2, 4, 6]])).tolist() == [[1, 2, 3, 4]]


@pytest.mark.oracle
def test_masks_to_boxes_matches_official():
    from oracle_shims import import_oracle

    amg = import_oracle("segment_anything.utils.amg")
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 5, 17, 23, generator=g) > 0.97
    masks[0, 0] = False  # an empty mask
    masks[1, 1] = False
    masks[1, 1, 4, 7] = True  # a single pixel
    ours = masks_to_boxes(masks)
    ref = amg.batched_mask_to_box(masks)
    assert ours.shape == (2, 5, 4) and torch.equal(ours, ref.to(ours.dtype))
    assert ours[0, 0].tolist() == [0, 0, 0, 0] and ours[1, 1].tolist() == [7, 4, 7, 4]


def test_masks_to_boxes_inclusive_and_errors():
    m = torch.zeros(1, 6, 8, dtype=torch.bool)
    m[0, 1:4, 2:7] = True
    assert masks_to_boxes(m).tolist() == [[2, 1, 6, 3]]
    assert masks_to_boxes(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4)
    with pytest.raises(InputError, match="H x W"):
        masks_to_boxes(torch.zeros(3, dtype=torch.bool))
    with pytest.raises(InputError, match="N x 4"):
        box_iou(T([[0, 0, 1]]), T([[0, 0, 1, 1]]))


def test_encode_box_deltas():
    ref = T([[0.0, 0.0, 10.0, 20.0]])
    d = encode_box_deltas(T([[5.0, 0.0, 15.0, 20.0], [0.0, 0.0, 20.0, 10.0]]), ref)
    assert torch.allclose(d[0], T([0.5, 0.0, 0.0, 0.0], dtype=d.dtype))
    assert torch.allclose(d[1], T([0.5, -0.25, np.log(2.0), np.log(0.5)], dtype=d.dtype))


@pytest.mark.oracle
def test_near_crop_edge_matches_official():
    from oracle_shims import import_oracle

    amg = import_oracle("segment_anything.utils.amg")
    g = torch.Generator().manual_seed(1)
    xy = torch.randint(0, 150, (200, 2), generator=g)
    boxes = torch.cat([xy, xy + torch.randint(0, 60, (200, 2), generator=g)], 1)
    for crop in ([0, 0, 200, 150], [50, 0, 200, 110], [30, 40, 140, 150]):
        assert torch.equal(is_box_near_crop_edge(boxes, crop, [0, 0, 200, 150]),
                           amg.is_box_near_crop_edge(boxes, crop, [0, 0, 200, 150]))
