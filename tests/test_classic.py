"""The offline ``classic`` model (``GrabCutModel``): quality on synthetic scenes, output
contract, refinement through ``low_res_logits``, prompt validation (``samkit.prompts`` rules)
and numerical hygiene (no numpy warnings)."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from samkit.models.classic import GrabCutModel, build_classic  # noqa: E402
from samkit.errors import InputError  # noqa: E402

H, W = 240, 320
DISC = (200, 110, 45)  # cx, cy, r
DISC2 = (95, 120, 35)


def iou(a, b):
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


def disc_mask(cx, cy, r, h=H, w=W):
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


@pytest.fixture(scope="module")
def scene():
    """A bright orange disc on a textured dark-green background (noise + stripes)."""
    rng = np.random.default_rng(0)
    base = np.array([40, 90, 50], np.float64)
    img = base + rng.normal(0, 18, (H, W, 3))
    img += 15 * np.sin(np.arange(W) / 3.0)[None, :, None]
    m = disc_mask(*DISC)
    img[m] = np.array([235, 150, 60]) + rng.normal(0, 10, (int(m.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), m


@pytest.fixture(scope="module")
def two_discs():
    """Two touching-free discs of the same colour; the second at DISC2."""
    rng = np.random.default_rng(1)
    img = np.array([30, 40, 120], np.float64) + rng.normal(0, 12, (H, W, 3))
    a, b = disc_mask(*DISC), disc_mask(*DISC2)
    img[a | b] = np.array([240, 230, 90]) + rng.normal(0, 8, (int((a | b).sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), a, b


@pytest.fixture(scope="module")
def engine():
    return build_classic()


def _box_of(m, pad=4):
    ys, xs = np.nonzero(m)
    return [xs.min() - pad, ys.min() - pad, xs.max() + pad, ys.max() + pad]


def test_box_prompt_finds_the_disc(engine, scene):
    img, gt = scene
    masks, scores, low = engine.segment(img, box=_box_of(gt))
    assert masks.shape == (3, H, W) and masks.dtype == bool
    assert iou(masks[0], gt) > 0.8
    plain = np.zeros_like(gt)
    x0, y0, x1, y1 = _box_of(gt)
    plain[y0:y1 + 1, x0:x1 + 1] = True
    assert iou(masks[0], gt) > iou(plain, gt) + 0.1  # better than taking the box itself


def test_click_prompt_finds_the_disc(engine, scene):
    img, gt = scene
    masks, scores, _ = engine.segment(img, points=[[DISC[0], DISC[1]]], labels=[1])
    assert iou(masks[0], gt) > 0.8
    assert masks[0][DISC[1], DISC[0]]


def test_output_contract(engine, scene):
    img, gt = scene
    masks, scores, low = engine.segment(img, box=_box_of(gt), multimask=True)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert np.all(np.diff(scores) <= 0), "candidates must be sorted best first"
    assert np.all((scores >= 0) & (scores <= 1))
    assert low.shape == (3, 256, 256) and low.dtype == np.float32
    # low-res logits are in SAM's frame (longest side 256, padded bottom/right) and give the mask back
    nh = int(H * 256 / W + 0.5)
    assert np.all(low[:, nh:, :] < 0), "padding rows must be background"
    up = cv2.resize(np.ascontiguousarray(low[0, :nh, :]), (W, H), interpolation=cv2.INTER_LINEAR) > 0
    assert iou(up, masks[0]) > 0.9
    single, s1, l1 = engine.segment(img, box=_box_of(gt), multimask=False)
    assert single.shape == (1, H, W) and s1.shape == (1,) and l1.shape == (1, 256, 256)
    assert np.array_equal(single[0], masks[0]), "single-mask output is the best candidate"


def test_deterministic(engine, scene):
    img, gt = scene
    a = engine.segment(img, points=[[DISC[0], DISC[1]]], labels=[1])
    b = engine.segment(img, points=[[DISC[0], DISC[1]]], labels=[1])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_negative_point_excludes_second_disc(engine, two_discs):
    img, a, b = two_discs
    box = _box_of(a | b)
    both, _, _ = engine.segment(img, box=box)
    assert both[0][DISC2[1], DISC2[0]] and both[0][DISC[1], DISC[0]]
    only, _, _ = engine.segment(img, box=box, points=[[DISC[0], DISC[1]], [DISC2[0], DISC2[1]]], labels=[1, 0])
    assert iou(only[0], a) > 0.8
    assert not only[0][DISC2[1], DISC2[0]]


def test_refinement_with_mask_input(engine, two_discs):
    img, a, b = two_discs
    first, _, low = engine.segment(img, box=_box_of(a | b))
    refined, _, _ = engine.segment(img, points=[[DISC2[0], DISC2[1]]], labels=[0], mask_input=low[0])
    assert iou(refined[0], a) > 0.8, "a negative click on one disc of a two-disc mask keeps the other"
    # an image-size mask works as mask_input too
    again, _, _ = engine.segment(img, mask_input=a)
    assert iou(again[0], a) > 0.8


def test_through_registry_and_predictor(scene):
    from samkit.masks import Masks
    from samkit.predict.image import ImagePredictor
    from samkit.registry import load_model

    img, gt = scene
    model = load_model("classic")
    assert model.spec is not None and model.spec.name == "classic" and model.neural is False
    predictor = ImagePredictor(model)
    predictor.set_image(img)
    out = predictor.predict(points=[[DISC[0], DISC[1]]], labels=[1], box=None, mask_input=None, multimask=True)
    assert isinstance(out, Masks)
    assert out.masks.shape == (3, H, W) and out.low_res_logits.shape == (3, 256, 256)
    assert iou(out.masks[0], gt) > 0.8
    direct = model.predict_image(img, [[DISC[0], DISC[1]]], [1], None, None, False)
    assert isinstance(direct, Masks) and len(direct) == 1


BAD_PROMPTS = [
    (dict(points=[[400, 10]], labels=[1]), "outside the image"),
    (dict(points=[[-1, 10]], labels=[1]), "outside the image"),
    (dict(points=[[10, W + 0.5]], labels=[1]), "outside the image"),
    (dict(points=[[10, 10], [20, 20]], labels=[1]), "one label per point"),
    (dict(points=[[10, 10]]), "without labels"),
    (dict(points=[[10, 10]], labels=[2]), "labels must be 1"),
    (dict(points=[[10, 10], [5, 5]], labels=[1, -1]), "padding label -1"),
    (dict(points=[[10, 10, 1]], labels=[1]), "N x 2"),
    (dict(points=[10, 10], labels=[1]), "N x 2"),
    (dict(points=[[np.nan, 10]], labels=[1]), "NaN"),
    (dict(box=[100, 100, 50, 150]), "inverted"),
    (dict(box=[100, 100, 150, 100]), "inverted"),
    (dict(box=[500, 300, 600, 400]), "outside the image"),
    (dict(box=[-10, -5, 250, 80]), "box=[0, 0, 250, 80]"),
    (dict(box=[1, 2, 3]), "4 numbers"),
    (dict(labels=[1]), "without points"),
    (dict(), "no prompt given"),
    (dict(points=np.zeros((0, 2)), labels=[]), "no prompt given"),
    (dict(points=[[10, 10]], labels=[0]), "needs a box"),
    (dict(box=[10, 10, 50, 50], mask_input=np.zeros((3, 7, 7))), "mask_input"),
    (dict(box=[10, 10, 50, 50], mask_input=np.zeros((100, 100))), "mask_input"),
    (dict(box=[10, 10, 50, 50], mask_input=np.full((256, 256), np.nan)), "NaN"),
]


@pytest.mark.parametrize("kwargs,needle", BAD_PROMPTS)
def test_bad_prompts_raise_input_error(engine, scene, kwargs, needle):
    img, _ = scene
    with pytest.raises(InputError) as info:
        engine.segment(img, **kwargs)
    msg = str(info.value)
    assert needle in msg and "Fix:" in msg


@pytest.mark.parametrize("image", [np.zeros((20, 20), np.uint8), np.zeros((20, 20, 3), np.float32),
                                   np.zeros((20, 20, 4), np.uint8), "photo.jpg"])
def test_bad_images_raise_input_error(engine, image):
    with pytest.raises(InputError, match="Fix:"):
        engine.segment(image, points=[[5, 5]], labels=[1])


@pytest.mark.parametrize("kwargs", [
    dict(points=[[W, H]], labels=[1]),  # the far corner: valid continuous coordinates
    dict(points=[[W, H], [0, 0]], labels=[1, 0]),
    dict(box=[0, 0, W, H]),  # the whole image
    dict(box=[W - 0.5, H - 0.5, W, H]),  # inside the last pixel: clipped to a one-pixel ROI
])
def test_image_edges_are_valid(engine, scene, kwargs):
    img, _ = scene
    masks, scores, low = engine.segment(img, **kwargs)
    assert masks.shape == (3, H, W) and np.isfinite(scores).all() and np.isfinite(low).all()


def test_empty_points_with_a_box_is_a_box_prompt(engine, scene):
    img, gt = scene
    a = engine.segment(img, box=_box_of(gt))
    b = engine.segment(img, points=np.zeros((0, 2)), labels=np.zeros(0), box=_box_of(gt))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_many_points_give_no_numpy_warning(engine):
    """Regression: a mask that fills its whole crop (here from a grid of foreground clicks) had no
    boundary; OpenCV's distance of FLT_MAX overflowed when rescaled ("overflow encountered in
    multiply")."""
    import warnings

    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    ys, xs = np.mgrid[2:48:8, 2:64:8]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masks, scores, low = engine.segment(img, points=pts, labels=np.ones(len(pts), int))
    assert masks.all(axis=(1, 2)).any(), "the case under test: a candidate covers the whole image"
    assert np.isfinite(low).all() and low.max() == 20.0 and low.min() == -20.0  # clipped, padding is -20
    assert np.isfinite(scores).all()


def test_default_model_settings_are_documented():
    e = GrabCutModel()
    assert e.work_side == 512 and e.neural is False and "GrabCut" in (GrabCutModel.__doc__ or "")
    assert repr(e) == "GrabCutModel(work_side=512, iters=5)"
