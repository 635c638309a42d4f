"""Live parity with the official segment-anything package (test-only oracle, installed with
--no-deps) on new random prompts, including batched prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import official_import_path
from parity import golden, synth_state_dict

pytestmark = pytest.mark.oracle


@pytest.fixture(scope="module")
def official_predictor():
    with official_import_path():
        import segment_anything as sa  # installed by `make test` with --no-deps
    model = sa.sam_model_registry["vit_b"]()
    model.load_state_dict(synth_state_dict("sam_vit_b"), strict=True)
    model.eval()
    return sa.SamPredictor(model)


@pytest.fixture(scope="module")
def image():
    g, _ = golden("sam_vit_b")
    return g["image_1"].numpy()  # portrait 240 x 320


@pytest.fixture(scope="module")
def both(official_predictor, sam_vit_b, image):
    from samkit import ImagePredictor

    with torch.no_grad():
        official_predictor.set_image(image)
    ours = ImagePredictor(sam_vit_b).set_image(image)
    return official_predictor, ours


def _random_prompts(rng, h, w, n_points):
    pts = np.stack([rng.uniform(0, w, n_points), rng.uniform(0, h, n_points)], axis=1).astype(np.float32)
    labels = rng.integers(0, 2, n_points).astype(np.int32)
    labels[0] = 1
    x0, x1 = np.sort(rng.uniform(0, w, 2))
    y0, y1 = np.sort(rng.uniform(0, h, 2))
    return pts, labels, np.array([x0, y0, x1 + 1, y1 + 1], np.float32).clip(0, [w, h, w, h])


def test_embeddings_equal(both):
    official, ours = both
    diff = (official.features - ours.features.embed).abs().max().item()
    assert diff < 1e-4, diff


@pytest.mark.parametrize("seed", range(6))
def test_random_prompts_match(both, image, seed):
    official, ours = both
    rng = np.random.default_rng(1000 + seed)
    h, w = image.shape[:2]
    pts, labels, box = _random_prompts(rng, h, w, 1 + seed % 3)
    use_box = seed % 2 == 1
    multimask = seed % 3 != 2
    with torch.no_grad():
        ref_masks, ref_iou, ref_low = official.predict(pts, labels, box if use_box else None, None, multimask,
                                                      return_logits=True)
    got = ours.predict(points=pts, labels=labels, box=box if use_box else None, multimask=multimask)
    assert np.abs(got.scores - ref_iou).max() < 1e-4
    assert np.abs(got.low_res_logits - ref_low).max() < 1e-3
    confident = np.abs(ref_masks) > 1e-3
    assert np.array_equal(got.masks[confident], (ref_masks > 0)[confident])
    # refinement: feed the best low-res logits back with one more click
    best = int(np.argmax(got.scores))
    extra = np.concatenate([pts, pts[:1] + 3], 0).clip(0, [w - 1, h - 1])
    extra_labels = np.concatenate([labels, [1]]).astype(np.int32)
    with torch.no_grad():
        _, ref_iou2, ref_low2 = official.predict(extra, extra_labels, None, ref_low[best][None], False,
                                                 return_logits=True)
    got2 = ours.predict(points=extra, labels=extra_labels, mask_input=got.low_res_logits[best][None], multimask=False)
    assert np.abs(got2.low_res_logits - ref_low2).max() < 2e-3
    assert np.abs(got2.scores - ref_iou2).max() < 1e-4


def test_predict_batch_matches_official_predict_torch(both, image):
    official, ours = both
    rng = np.random.default_rng(7)
    h, w = image.shape[:2]
    n = 5
    boxes = np.stack([_random_prompts(rng, h, w, 1)[2] for _ in range(n)])
    pts = np.stack([_random_prompts(rng, h, w, 2)[0] for _ in range(n)])
    labels = np.ones((n, 2), np.int32)
    labels[:, 1] = 0
    with torch.no_grad():
        tb = official.transform.apply_boxes_torch(torch.from_numpy(boxes), image.shape[:2])
        tp = official.transform.apply_coords_torch(torch.from_numpy(pts), image.shape[:2])
        ref_masks, ref_iou, ref_low = official.predict_torch(tp, torch.from_numpy(labels), tb,
                                                             multimask_output=True, return_logits=True)
    got = ours.predict_batch(boxes=boxes, points=pts, labels=labels, multimask=True)
    assert len(got) == n
    for i in range(n):
        assert np.abs(got[i].scores - ref_iou[i].numpy()).max() < 1e-4
        assert np.abs(got[i].low_res_logits - ref_low[i].numpy()).max() < 1e-3
        ref = ref_masks[i].numpy()
        confident = np.abs(ref) > 1e-3
        assert np.array_equal(got[i].masks[confident], (ref > 0)[confident])
