"""Segment-everything speed paths: exact mode through the factored decoder equals the decoder's
other paths, and the opt-in fast mode (coarse-to-fine grids that skip points inside masks
already found) returns valid, deterministic masks that cover the objects the exact mode finds."""
from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from samkit.auto import AutoMaskGenerator
from samkit.auto.grid import coarse_to_fine_levels, point_grid
from samkit.errors import InputError
from samkit.models.base import ImageFeatures
from samkit.ops import mask_iou
from test_auto import ColorRegion, _cli_setup, official_color_sam, official_generate, rectangles_image, truck_image
from test_factored_decoder import plans_built
from tiny import tiny_sam


@contextlib.contextmanager
def _unfactored(model):
    """The decoder path before the factored one (``MaskDecoder.factored = False``)."""
    model.mask_decoder.factored = False
    try:
        yield
    finally:
        model.mask_decoder.factored = True


def _full_size_heads_sam():
    """SAM's real-size prompt encoder and mask decoder (default init) behind a stub encoder."""
    from samkit.models.sam import SamModel, sam_heads

    torch.manual_seed(3)
    return SamModel(nn.Identity(), *sam_heads()).eval()


# ----------------------------------------------------------------------------- exact mode
@pytest.mark.parametrize("multimask", [True, False])
def test_factored_decoder_equals_the_low_rank_path_at_full_size(multimask):
    model = _full_size_heads_sam()
    g = torch.Generator().manual_seed(0)
    embed = torch.randn(1, 256, 64, 64, generator=g)
    pts = torch.rand(3, 2, generator=g) * 1000
    labels = torch.ones(3, 1, dtype=torch.int)
    with torch.inference_mode():
        with _unfactored(model):
            ref = model.decode(ImageFeatures(embed), pts[:, None], labels, None, None, multimask)
        with plans_built() as built:
            got = model.decode(ImageFeatures(embed), pts[:, None], labels, None, None, multimask)
    assert built == [1]
    assert got.low_res.shape == ref.low_res.shape == (3, 3 if multimask else 1, 256, 256)
    torch.testing.assert_close(got.low_res, ref.low_res, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(got.iou, ref.iou, atol=2e-5, rtol=1e-5)


def test_exact_mode_equals_the_unfactored_path_on_tiny_sam():
    model = tiny_sam(seed=1)
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    kw = dict(points_per_side=3, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0,
              nms_thresh=1.0)
    with _unfactored(model), plans_built() as none:
        ref, ref_info = AutoMaskGenerator(model, **kw).generate_with_info(img)
    with plans_built() as built:
        got, info = AutoMaskGenerator(model, **kw).generate_with_info(img)
    assert none == [] and built == [1]  # one plan for the image, shared by every point
    assert len(got) == len(ref) == 27  # 9 points x 3 masks, nothing filtered
    ious = mask_iou(torch.from_numpy(ref.masks), torch.from_numpy(got.masks)).diagonal()
    assert float(ious.min()) >= 0.99
    np.testing.assert_allclose(got.scores, ref.scores, atol=1e-5)
    np.testing.assert_allclose(got.stability, ref.stability, atol=1e-4)
    np.testing.assert_array_equal(info.boxes, ref_info.boxes)
    np.testing.assert_array_equal(info.point_coords, ref_info.point_coords)
    np.testing.assert_allclose(got.low_res_logits, ref.low_res_logits, atol=1e-4)


def test_training_decoder_takes_the_reference_path():
    model = tiny_sam()
    g = torch.Generator().manual_seed(1)
    feats = ImageFeatures(torch.randn(1, 32, 8, 8, generator=g))
    model.train()
    with plans_built() as built:
        model.decode(feats, torch.rand(2, 1, 2) * 100, torch.ones(2, 1, dtype=torch.int), None, None, True)
    assert built == []


# ----------------------------------------------------------------------------- fast mode
def test_coarse_to_fine_levels_are_sub_grids_of_the_exact_grid():
    levels = coarse_to_fine_levels(16)
    assert [int(l.sum()) for l in levels] == [4, 16, 64, 256] and all(l.shape == (256,) for l in levels)
    np.testing.assert_allclose(point_grid(16)[levels[0]], [[0.28125, 0.28125], [0.78125, 0.28125],
                                                          [0.28125, 0.78125], [0.78125, 0.78125]])
    seen = np.zeros(256, bool)  # the coarse levels never select a point twice
    for level in levels[:-1]:
        assert not (seen & level).any()
        seen |= level
    assert [int(l.sum()) for l in coarse_to_fine_levels(3)] == [9]


def _region_bests(img, masks):
    colours = {tuple(c) for c in img.reshape(-1, 3)} - {(20, 20, 20)}
    bests = []
    for c in colours:
        region = np.all(img == np.array(c, np.uint8), axis=-1)
        bests.append(max(float((m & region).sum() / (m | region).sum()) for m in masks.masks))
    return bests


def test_fast_mode_finds_the_objects_with_fewer_decodes():
    img = rectangles_image(h=120, w=160, n=4, seed=1)  # four visible rectangles
    exact, exact_info = AutoMaskGenerator(ColorRegion(), points_per_side=10).generate_with_info(img)
    fast, info = AutoMaskGenerator(ColorRegion(), points_per_side=10, mode="fast").generate_with_info(img)
    assert exact_info.stats["points_decoded"] == 100
    assert info.stats["points_decoded"] < 50  # the coarse grids decide most of the image
    assert min(_region_bests(img, exact)) > 0.9 and min(_region_bests(img, fast)) > 0.9
    # every mask of the exact mode is found again
    iou = mask_iou(torch.from_numpy(exact.masks), torch.from_numpy(fast.masks))
    assert float(iou.max(dim=1).values.min()) >= 0.9


@pytest.mark.oracle
def test_fast_mode_finds_the_official_masks_on_a_photo():
    """The connected-region stand-in on the bundled photograph: the fast mode decodes under half
    the grid and finds the official generator's masks (IoU >= 0.9). A stand-in, not SAM: it
    checks the skipping logic on nested, connected regions, not the match rate of real weights."""
    img = truck_image()
    records = official_generate(official_color_sam(connected=True), img, points_per_side=16)
    fast, info = AutoMaskGenerator(ColorRegion(connected=True), points_per_side=16,
                                   mode="fast").generate_with_info(img)
    assert len(records) >= 8 and info.stats["points_decoded"] < 128
    official = torch.from_numpy(np.stack([r["segmentation"] for r in records]))
    found = mask_iou(official, torch.from_numpy(fast.masks)).max(dim=1).values >= 0.9
    assert float(found.float().mean()) >= 0.9


def test_fast_mode_is_deterministic_and_valid():
    img = rectangles_image(seed=3)
    calls = []
    gen = AutoMaskGenerator(ColorRegion(), points_per_side=8, points_per_batch=5, mode="fast")
    a, ai = gen.generate_with_info(img, progress=lambda d, t: calls.append((d, t)))
    b, bi = gen.generate_with_info(img)
    assert len(a) == len(b) >= 3
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(ai.point_coords, bi.point_coords)
    assert a.masks.dtype == bool and a.masks.shape[1:] == img.shape[:2]
    assert np.all(np.diff(a.scores) <= 0) and len(ai.boxes) == len(a) == len(ai.areas)
    assert ai.areas.tolist() == a.masks.reshape(len(a), -1).sum(1).tolist()
    # progress: one call per decoded batch, ending at done == total
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1)) and calls[-1][0] == calls[-1][1]
    assert calls[-1][1] == ai.stats["point_batches"]


def test_fast_mode_with_crop_layers_runs():
    img = rectangles_image(seed=4)
    masks, info = AutoMaskGenerator(ColorRegion(), points_per_side=4, crop_n_layers=1,
                                    mode="fast").generate_with_info(img)
    assert len(masks) >= 3 and info.stats["points_decoded"] < 5 * 16


@pytest.mark.parametrize("kw,fragment", [
    (dict(mode="quick"), "mode must be one of"),
    (dict(mode="fast", points_per_side=None, point_grids=[point_grid(4)]), "cannot use point_grids"),
])
def test_fast_mode_bad_options_name_the_fix(kw, fragment):
    with pytest.raises(InputError, match=fragment) as err:
        AutoMaskGenerator(ColorRegion(), **kw)
    assert "fix" in str(err.value).lower()


# ----------------------------------------------------------------------------- command line
def test_cli_everything_mode_fast_json(tmp_path, monkeypatch, capsys):
    from samkit.cli.main import main

    path = _cli_setup(tmp_path, monkeypatch)
    code = main(["everything", str(path), "--model", "sam_vit_b", "--out", str(tmp_path / "o"), "-q", "--json",
                 "--points-per-side", "8", "--mode", "fast", "--format", "png"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    direct = AutoMaskGenerator(ColorRegion(), points_per_side=8, mode="fast").generate(rectangles_image(seed=8))
    assert doc["mode"] == "fast" and doc["count"] == len(direct) >= 3
    assert doc["points_decoded"] < 64 and len(doc["masks"]) == doc["count"]


def test_cli_everything_unknown_mode_is_bad_input(tmp_path, monkeypatch, capsys):
    from samkit.cli.main import main

    path = _cli_setup(tmp_path, monkeypatch)
    assert main(["everything", str(path), "--model", "sam_vit_b", "--out", str(tmp_path / "o"), "-q",
                 "--mode", "quick"]) == 2
    assert "quick" in capsys.readouterr().err
