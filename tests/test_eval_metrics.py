"""Metric definitions against hand-computed cases and brute-force re-statements of the
DAVIS definitions."""
import math

import numpy as np
import pytest

from samkit.errors import InputError
from samkit.eval.metrics import (boundary_f, boundary_map, boundary_prf, boundary_tolerance, disk, mask_to_box,
                                 number_of_clicks, region_similarity, sequence_statistics)


def box_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------- J
def test_j_hand_cases():
    gt = box_mask(4, 4, 0, 2, 0, 2)                      # 4 pixels
    pred = box_mask(4, 4, 0, 2, 1, 3)                    # 4 pixels, 2 shared
    assert region_similarity(gt, pred) == pytest.approx(2 / 6)
    assert region_similarity(gt, gt) == 1.0
    empty = np.zeros((4, 4), bool)
    assert region_similarity(empty, empty) == 1.0        # DAVIS: both empty = 1
    assert region_similarity(gt, empty) == 0.0
    assert region_similarity(empty, pred) == 0.0


def test_j_void_pixels_ignored():
    gt = box_mask(4, 4, 0, 2, 0, 2)
    pred = box_mask(4, 4, 0, 2, 1, 3)
    void = box_mask(4, 4, 0, 4, 2, 4)                    # hides pred's extra column
    assert region_similarity(gt, pred, void) == pytest.approx(2 / 4)


def test_j_shape_mismatch_names_fix():
    with pytest.raises(InputError, match="Fix"):
        region_similarity(np.zeros((3, 3)), np.zeros((3, 4)))


# ----------------------------------------------------------------------------- boundaries
def test_boundary_map_square_hand():
    b = boundary_map(box_mask(6, 6, 2, 4, 2, 4))
    expected = np.zeros((6, 6), bool)
    expected[1:4, 1:4] = True
    expected[2, 2] = False                              # the ring offset half a pixel to the origin
    np.testing.assert_array_equal(b, expected)


def test_boundary_map_bottom_right_corner_rules():
    b = boundary_map(box_mask(4, 4, 2, 4, 2, 4))
    got = {tuple(p) for p in np.argwhere(b)}
    assert got == {(1, 1), (1, 2), (2, 1), (1, 3), (3, 1)}


def test_boundary_map_full_and_empty():
    assert not boundary_map(np.ones((5, 7), bool)).any()   # the image border is no boundary
    assert not boundary_map(np.zeros((5, 7), bool)).any()


def test_tolerance_and_disk():
    assert boundary_tolerance((480, 854)) == 8              # ceil(0.008 * 979.6)
    assert boundary_tolerance((20, 20)) == 1
    assert boundary_tolerance((20, 20), bound_th=3) == 3
    d = disk(2)
    assert d.shape == (5, 5) and d.sum() == 13 and d[0, 2] == 1 and d[0, 1] == 0


@pytest.mark.parametrize("shift, expected_f", [(0, 1.0), (1, 1.0), (2, 0.6)])
def test_f_hand_cases(shift, expected_f):
    # 20x20 image -> tolerance 1 (plus-shaped disk). Boundaries are 20-pixel rings; a shift
    # of 2 leaves 12 of 20 pixels of each ring within 1 pixel of the other (counted by hand).
    gt = box_mask(20, 20, 5, 10, 5, 10)
    pred = box_mask(20, 20, 5, 10, 5 + shift, 10 + shift)
    p, r, f = boundary_prf(gt, pred)
    assert f == pytest.approx(expected_f)
    if shift == 2:
        assert (p, r) == (pytest.approx(0.6), pytest.approx(0.6))
    assert boundary_f(gt, pred, bound_th=2) == 1.0          # a 2-pixel tolerance forgives the shift


def test_f_empty_conventions():
    z = np.zeros((10, 10), bool)
    m = box_mask(10, 10, 2, 5, 2, 5)
    assert boundary_prf(z, z) == (1.0, 1.0, 1.0)
    assert boundary_prf(m, z) == (1.0, 0.0, 0.0)           # nothing predicted
    assert boundary_prf(z, m) == (0.0, 1.0, 0.0)           # nothing to find


def _brute_bmap(seg):
    h, w = seg.shape
    out = np.zeros_like(seg)
    for y in range(h):
        for x in range(w):
            if y == h - 1 and x == w - 1:
                continue
            if y == h - 1:
                out[y, x] = seg[y, x] != seg[y, x + 1]
            elif x == w - 1:
                out[y, x] = seg[y, x] != seg[y + 1, x]
            else:
                out[y, x] = seg[y, x] != seg[y, x + 1] or seg[y, x] != seg[y + 1, x] or \
                    seg[y, x] != seg[y + 1, x + 1]
    return out


def _brute_prf(gt, pred, r):
    gb, pb = _brute_bmap(gt), _brute_bmap(pred)
    gp, pp = np.argwhere(gb), np.argwhere(pb)
    d2 = ((pp[:, None, :] - gp[None, :, :]) ** 2).sum(-1)
    precision = float((d2.min(1) <= r * r).mean())
    recall = float((d2.min(0) <= r * r).mean())
    return precision, recall


@pytest.mark.parametrize("seed", range(4))
def test_f_matches_brute_force_definition(seed):
    rng = np.random.default_rng(seed)
    h, w = 40, 60
    gt = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    gt[(yy - 20) ** 2 + (xx - 30) ** 2 < 12 ** 2] = True
    pred = gt.copy()
    noise = rng.random((h, w)) < 0.04
    pred ^= noise                                         # speckles far from and near the boundary
    pred[:, 40:] = np.roll(gt, 3, axis=1)[:, 40:]
    np.testing.assert_array_equal(boundary_map(pred), _brute_bmap(pred))
    for bound_th in (0.008, 3):
        r = boundary_tolerance((h, w), bound_th)
        bp, br = _brute_prf(gt, pred, r)
        p, rr, f = boundary_prf(gt, pred, bound_th=bound_th)
        assert (p, rr) == (pytest.approx(bp), pytest.approx(br))
        assert f == pytest.approx(2 * bp * br / (bp + br))
    assert boundary_prf(gt, pred)[2] < 1.0


# ----------------------------------------------------------------------------- statistics
def test_statistics_hand():
    m, r, d = sequence_statistics(list(range(1, 11)))
    assert (m, r, d) == (5.5, 1.0, -7.0)                  # bins [1,2,3] and [8,9,10]
    m, r, d = sequence_statistics([0.4, 0.6, 0.5, 0.9])
    assert m == pytest.approx(0.6)
    assert r == pytest.approx(0.5)                        # strictly above 0.5
    assert d == pytest.approx(0.5 - 0.7)                  # bins [0.4,0.6] and [0.5,0.9]
    m, r, d = sequence_statistics([1.0, 0.0, 1.0])
    assert (m, r, d) == (pytest.approx(2 / 3), pytest.approx(2 / 3), pytest.approx(-0.5))


def test_statistics_nan_and_empty():
    m, r, d = sequence_statistics([1.0, float("nan"), 0.0, 1.0])
    assert m == pytest.approx(2 / 3) and r == pytest.approx(0.5)
    with pytest.raises(InputError, match="Fix"):
        sequence_statistics([])


def test_noc():
    ious = [0.5, 0.86, 0.91, 0.95]
    assert number_of_clicks(ious, 0.85) == 2
    assert number_of_clicks(ious, 0.90) == 3
    assert number_of_clicks([0.1] * 20, 0.85) == 20       # never reached -> the budget
    assert number_of_clicks([0.1] * 25 + [0.99], 0.85, max_clicks=20) == 20
    assert number_of_clicks([0.9], 0.85) == 1


def test_mask_to_box():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert mask_to_box(m) == [3.0, 2.0, 8.0, 4.0]
    assert mask_to_box(np.zeros((3, 3))) is None
    assert math.isclose(sum(mask_to_box(np.ones((2, 2)))), 2.0)
