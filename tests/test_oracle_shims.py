"""The test-only torchvision stand-in: the official oracles import through it, and its
batched NMS equals a brute-force greedy reference on both of torchvision's CPU paths."""
import numpy as np
import pytest
import torch
from PIL import Image

from oracle_shims import import_oracle

from test_nms import brute_greedy  # the one brute-force reference of greedy NMS

pytestmark = pytest.mark.oracle


def _tv():
    import_oracle("segment_anything")
    import torchvision

    assert torchvision.__version__.endswith("oracle_shim")
    return torchvision


@pytest.mark.parametrize("module", [
    "segment_anything",
    "segment_anything.automatic_mask_generator",
    "segment_anything.utils.transforms",
    "sam2.sam2_image_predictor",
    "sam2.sam2_video_predictor",
    "sam2.automatic_mask_generator",
    "sam2.build_sam",
])
def test_oracles_import_through_shim(module):
    mod = import_oracle(module)
    assert mod is not None
    sa = import_oracle("segment_anything")
    assert {"vit_b", "vit_l", "vit_h"} <= set(sa.sam_model_registry)


def _random_boxes(n, seed, int_coords=False):
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 100, (n, 2))
    wh = g.uniform(5, 40, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    if int_coords:
        boxes = np.round(boxes)
    return boxes.astype(np.float64), g.permutation(n).astype(np.float64) / n, g.integers(0, 3, n)


@pytest.mark.parametrize("n,thr,seed", [(30, 0.5, 0), (200, 0.3, 1), (200, 0.7, 2), (1200, 0.5, 3), (1500, 0.7, 4)])
def test_batched_nms_matches_brute_force(n, thr, seed):
    tv = _tv()
    boxes, scores, cats = _random_boxes(n, seed)
    expected = brute_greedy(boxes, scores, thr, cats)
    got = tv.ops.boxes.batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(cats), thr)
    # n > 1000 exercises torchvision's per-category path, n <= 1000 the coordinate-offset trick
    assert got.dtype == torch.int64
    assert got.tolist() == expected
    assert len(expected) < n  # the case really suppresses something


def test_nms_iou_equal_to_threshold_is_kept():
    tv = _tv()
    # the second box is the lower half of the first: IoU = 50 / 100 = 0.5 exactly
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])
    scores = torch.tensor([0.9, 0.8])
    assert tv.ops.nms(boxes, scores, 0.5).tolist() == [0, 1]  # IoU == 0.5 is not > 0.5
    assert tv.ops.nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_ties_follow_torch_sort_order():
    tv = _tv()
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    scores = torch.tensor([0.5, 0.5, 0.5])
    first = int(torch.sort(scores, descending=True)[1][0])
    keep = tv.ops.nms(boxes, scores, 0.3).tolist()
    assert keep[0] == first and len(keep) == 2 and 2 in keep


def test_box_area_upcasts_and_empty_inputs():
    tv = _tv()
    assert tv.ops.boxes.box_area(torch.tensor([[0, 0, 3, 4]], dtype=torch.int64)).tolist() == [12]
    empty = tv.ops.boxes.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64


@pytest.mark.parametrize("size,expected_wh", [((20, 30), (30, 20)), (24, (40, 24)), ([24], (40, 24))])
def test_resize_pil_semantics(size, expected_wh):
    tv = _tv()
    img = Image.fromarray((np.arange(50 * 30 * 3) % 251).astype(np.uint8).reshape(30, 50, 3))
    out = tv.transforms.functional.resize(img, size)
    assert out.size == expected_wh
    ref = img.resize(expected_wh, Image.BILINEAR)
    assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_resize_tensor_is_antialiased_bilinear():
    tv = _tv()
    x = torch.rand(3, 40, 60)
    out = tv.transforms.Resize((10, 15))(x)
    ref = torch.nn.functional.interpolate(x[None], (10, 15), mode="bilinear", antialias=True, align_corners=False)[0]
    assert torch.equal(out, ref)
    plain = torch.nn.functional.interpolate(x[None], (10, 15), mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(out, plain)
    scripted = torch.jit.script(torch.nn.Sequential(tv.transforms.Resize((10, 15)), tv.transforms.Normalize([0.5] * 3, [0.25] * 3)))
    assert torch.allclose(scripted(x), (ref - 0.5) / 0.25)


def test_to_pil_image_and_to_tensor_roundtrip():
    tv = _tv()
    arr = (np.random.default_rng(0).random((7, 9, 3)) * 255).astype(np.uint8)
    pil = tv.transforms.functional.to_pil_image(arr)
    assert pil.mode == "RGB" and np.array_equal(np.asarray(pil), arr)
    t = tv.transforms.ToTensor()(arr)
    assert t.shape == (3, 7, 9) and t.dtype == torch.float32
    assert np.array_equal(np.asarray(tv.transforms.functional.to_pil_image(torch.from_numpy(arr).permute(2, 0, 1))), arr)


def test_official_resize_longest_side_matches_samkit_rule():
    tr = import_oracle("segment_anything.utils.transforms")
    from samkit.models.base import resize_longest_side_pil

    img = (np.random.default_rng(1).random((37, 61, 3)) * 255).astype(np.uint8)
    ours = resize_longest_side_pil(img, 64)
    official = tr.ResizeLongestSide(64).apply_image(img)
    assert ours.shape == official.shape and np.array_equal(ours, official)


def test_open_clip_imports_through_the_shim_and_its_pieces_follow_torchvision():
    oc = import_oracle("open_clip")
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d
    from torchvision.transforms import CenterCrop, Compose

    assert torchvision.__version__.endswith("oracle_shim") and hasattr(oc, "tokenize")
    # FrozenBatchNorm2d computes BatchNorm2d in eval mode from a BatchNorm state dict
    bn = torch.nn.BatchNorm2d(3).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    frozen = FrozenBatchNorm2d(3)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(2, 3, 4, 5)
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)
    # CenterCrop: top = round((H - h) / 2), left = round((W - w) / 2), same on PIL and tensors
    arr = np.arange(7 * 10 * 3, dtype=np.uint8).reshape(7, 10, 3)
    crop = Compose([CenterCrop((4, 5))])
    assert np.array_equal(np.asarray(crop(Image.fromarray(arr))), arr[2:6, 2:7])
    assert torch.equal(crop(torch.from_numpy(arr).permute(2, 0, 1)), torch.from_numpy(arr[2:6, 2:7]).permute(2, 0, 1))
