"""The NMS family: greedy (torchvision semantics), Fast NMS, mask NMS and NOH-NMS.

Table-driven on synthetic boxes; the crowd test reports recall at a fixed number of false
positives for greedy NMS and NOH-NMS (oracle hallucinated boxes) at the same threshold.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from samkit.errors import InputError
from samkit.ops import box_iou, fast_nms, greedy_nms, mask_nms, noh_nms

T = torch.tensor


def brute_greedy(boxes, scores, thr, cats=None):
    """Plain-python greedy NMS: visit by descending score (stable), suppress IoU > thr."""
    b = np.asarray(boxes, np.float64)
    n = len(b)
    cats = np.zeros(n, int) if cats is None else np.asarray(cats)
    order = sorted(range(n), key=lambda i: -float(scores[i]))
    kept = []
    for i in order:
        ok = True
        for k in kept:
            if cats[k] != cats[i]:
                continue
            iw = max(0.0, min(b[i, 2], b[k, 2]) - max(b[i, 0], b[k, 0]))
            ih = max(0.0, min(b[i, 3], b[k, 3]) - max(b[i, 1], b[k, 1]))
            inter = iw * ih
            union = (b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]) + (b[k, 2] - b[k, 0]) * (b[k, 3] - b[k, 1]) - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def random_boxes(n, seed):
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 200, (n, 2))
    wh = g.uniform(4, 60, (n, 2))
    return T(np.concatenate([xy, xy + wh], 1), dtype=torch.float32), T(g.permutation(n) / n, dtype=torch.float32), \
        T(g.integers(0, 3, n))


# A > B > C in a chain: IoU(A,B) = IoU(B,C) = 70/130 ~ 0.54, IoU(A,C) = 40/160 = 0.25.
CHAIN = ([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], [0.9, 0.8, 0.7])

NMS_TABLE = [
    # name, boxes, scores, thr, greedy, fast
    ("chain: fast drops C, greedy keeps it", *CHAIN, 0.5, [0, 2], [0]),
    ("chain: loose threshold keeps all", *CHAIN, 0.6, [0, 1, 2], [0, 1, 2]),
    ("chain: tight threshold", *CHAIN, 0.2, [0], [0]),
    ("IoU exactly at threshold is kept", [[0, 0, 10, 10], [0, 0, 10, 5]], [0.9, 0.8], 0.5, [0, 1], [0, 1]),
    ("duplicate suppressed, score order", [[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], [0.5, 0.9, 0.7],
     0.7, [1, 2], [1, 2]),
    ("two empty boxes never suppress (0/0)", [[5, 5, 5, 5], [5, 5, 5, 5]], [0.9, 0.8], 0.1, [0, 1], [0, 1]),
    ("single box", [[0, 0, 1, 1]], [0.3], 0.5, [0], [0]),
]


@pytest.mark.parametrize("name,boxes,scores,thr,greedy,fast", NMS_TABLE, ids=[r[0] for r in NMS_TABLE])
def test_greedy_and_fast_table(name, boxes, scores, thr, greedy, fast):
    b, s = T(boxes, dtype=torch.float32), T(scores)
    assert greedy_nms(b, s, thr).tolist() == greedy
    assert fast_nms(b, s, thr).tolist() == fast
    assert brute_greedy(boxes, scores, thr) == greedy


@pytest.mark.parametrize("n,thr,seed", [(80, 0.2, 0), (300, 0.5, 1), (300, 0.7, 2), (1100, 0.5, 3)])
def test_greedy_equals_brute_force_with_categories(n, thr, seed):
    b, s, c = random_boxes(n, seed)
    for cats in (None, c):
        got = greedy_nms(b, s, thr, cats).tolist()
        assert got == brute_greedy(b.double(), s, thr, None if cats is None else cats.numpy())
        if cats is None:
            assert len(got) < n  # the case really suppresses something


@pytest.mark.parametrize("n,seed", [(60, 0), (400, 1), (1500, 2)])
def test_fast_nms_is_subset_of_greedy(n, seed):
    b, s, _ = random_boxes(n, seed)
    g, f = set(greedy_nms(b, s, 0.5).tolist()), fast_nms(b, s, 0.5).tolist()
    assert set(f) <= g
    # the definition: kept iff no higher-scoring box overlaps > thr
    order = torch.argsort(s, descending=True)
    iou = box_iou(b, b)
    for j in range(n):
        higher = order[: int((order == j).nonzero())]
        assert (j in f) == bool((iou[higher, j] <= 0.5).all())


def test_greedy_ties_follow_torch_sort_and_integer_boxes():
    boxes = T([[0, 0, 10, 10], [1, 1, 11, 11], [2, 2, 12, 12], [40, 40, 50, 50]])  # int64
    scores = T([0.5, 0.5, 0.5, 0.5])
    first = int(torch.sort(scores, descending=True)[1][0])
    keep = greedy_nms(boxes, scores, 0.3).tolist()
    assert keep[0] == first and 3 in keep and len(keep) == 2


@pytest.mark.oracle
@pytest.mark.parametrize("n,seed", [(200, 0), (1200, 1)])
def test_greedy_equals_official_batched_nms_with_ties(n, seed):
    from oracle_shims import import_oracle

    import_oracle("segment_anything.automatic_mask_generator")
    from torchvision.ops.boxes import batched_nms

    g = np.random.default_rng(seed)
    xy = g.integers(0, 100, (n, 2))
    boxes = T(np.concatenate([xy, xy + g.integers(0, 40, (n, 2))], 1)).float()
    scores = T(g.integers(0, 6, n)).float()  # many exact ties
    cats = T(g.integers(0, 2, n))
    assert torch.equal(greedy_nms(boxes, scores, 0.5, cats), batched_nms(boxes, scores, cats, 0.5))
    assert torch.equal(greedy_nms(boxes, scores, 0.7), batched_nms(boxes, scores, torch.zeros(n), 0.7))


def test_mask_nms_keeps_crossing_objects_that_box_nms_merges():
    h = w = 64
    yy, xx = np.mgrid[:h, :w]
    diag = torch.from_numpy(np.abs(yy - xx) <= 2)  # "\" stripe
    anti = torch.from_numpy(np.abs(yy + xx - (w - 1)) <= 2) & ~diag  # "/" stripe, disjoint from "\"
    dup = diag.clone()
    dup[:3] = False
    masks = torch.stack([diag, anti, dup])
    scores = T([0.9, 0.8, 0.7])
    boxes = T([[0, 0, 63, 63], [0, 0, 63, 63], [0, 3, 63, 63]], dtype=torch.float32)
    assert greedy_nms(boxes, scores, 0.5).tolist() == [0]  # boxes coincide: one object left
    assert mask_nms(masks, scores, 0.5).tolist() == [0, 1]  # masks: two objects, duplicate dropped
    assert mask_nms(masks, scores, 0.5, categories=T([0, 0, 1])).tolist() == [0, 1, 2]


def _noh(boxes, scores, thr, nearby, probs, sigma=0.2):
    return noh_nms(T(boxes, dtype=torch.float32), T(scores), thr, T(nearby, dtype=torch.float32), T(probs), sigma)


PAIR = [[0, 0, 40, 100], [12, 0, 52, 100]]  # IoU 28/52 ~ 0.54

NOH_TABLE = [
    # name, boxes, scores, nearby boxes, probs, thr, expected
    ("p = 0 is greedy", PAIR, [0.9, 0.8], [PAIR[1], PAIR[0]], [0.0, 0.0], 0.5, [0]),
    ("neighbour where hallucinated survives", PAIR, [0.9, 0.8], [PAIR[1], PAIR[0]], [1.0, 1.0], 0.5, [0, 1]),
    ("hallucinated on the other side: suppressed", PAIR, [0.9, 0.8], [[-12, 0, 28, 100], PAIR[0]], [1.0, 1.0],
     0.5, [0]),
    ("low probability does not ease", PAIR, [0.9, 0.8], [PAIR[1], PAIR[0]], [0.3, 0.3], 0.5, [0]),
    ("duplicate of the kept box still suppressed", [[0, 0, 40, 100], [1, 0, 41, 100]], [0.9, 0.8],
     [PAIR[1], PAIR[1]], [1.0, 1.0], 0.5, [0]),
    ("overlap above the eased limit suppresses", [[0, 0, 40, 100], [2, 0, 42, 100]], [0.9, 0.8],
     [[2, 0, 42, 100], PAIR[0]], [0.8, 0.8], 0.5, [0]),
]


@pytest.mark.parametrize("name,boxes,scores,nearby,probs,thr,expected", NOH_TABLE, ids=[r[0] for r in NOH_TABLE])
def test_noh_nms_table(name, boxes, scores, nearby, probs, thr, expected):
    assert _noh(boxes, scores, thr, nearby, probs).tolist() == expected


def test_noh_with_zero_probability_equals_greedy_on_random_boxes():
    b, s, _ = random_boxes(200, 7)
    assert noh_nms(b, s, 0.5, b, torch.zeros(200)).tolist() == greedy_nms(b, s, 0.5).tolist()


# ------------------------------------------------------------------ synthetic crowd
def crowd(seed=0, n_pairs=30, n_single=20, dups=3):
    """Pedestrian-like crowd: pairs of GT boxes overlapping at IoU 0.54-0.67, plus isolated ones.
    Each GT gets one accurate detection and ``dups`` noisier, lower-scored duplicates. The
    oracle hallucinated box of every detection is its GT's partner (p = 1), or itself (p = 0)."""
    g = np.random.default_rng(seed)
    gts, partner = [], []
    for i in range(n_pairs):
        x, y = (i % 6) * 160.0, (i // 6) * 150.0
        dx = g.choice([8.0, 10.0, 12.0])
        gts += [[x, y, x + 40, y + 100], [x + dx, y, x + dx + 40, y + 100]]
        partner += [len(gts) - 1, len(gts) - 2]
    for i in range(n_single):
        x, y = 1000.0 + (i % 4) * 90, (i // 4) * 150.0
        gts.append([x, y, x + 40, y + 100])
        partner.append(-1)
    gts = np.array(gts)
    boxes, scores, owner = [], [], []
    for k, gt in enumerate(gts):
        for d in range(1 + dups):
            jit = g.normal(0, 1.0 if d == 0 else 3.0, 4)
            boxes.append(gt + jit)
            scores.append(g.uniform(0.75, 1.0) if d == 0 else g.uniform(0.3, 0.74))
            owner.append(k)
    boxes = np.array(boxes)
    nearby = np.array([gts[partner[o]] if partner[o] >= 0 else gts[o] for o in owner])
    probs = np.array([1.0 if partner[o] >= 0 else 0.0 for o in owner])
    return gts, boxes, np.array(scores), nearby, probs


def recall_at_fp(gts, boxes, scores, keep, max_fp, iou_thr=0.5):
    """Walk the kept detections by score; match each to the best unmatched GT at IoU >= iou_thr.
    Returns the recall reached before the (max_fp + 1)-th false positive."""
    kept = sorted(keep, key=lambda i: -scores[i])
    iou = box_iou(T(boxes[kept]), T(gts)).numpy() if kept else np.zeros((0, len(gts)))
    matched = np.zeros(len(gts), bool)
    fp = tp = 0
    for r in range(len(kept)):
        cand = np.where(~matched & (iou[r] >= iou_thr))[0]
        if len(cand):
            matched[cand[np.argmax(iou[r, cand])]] = True
            tp += 1
        else:
            fp += 1
            if fp > max_fp:
                break
    return tp / len(gts)


def crowd_recalls(seed=0, thr=0.5, max_fp=5):
    gts, boxes, scores, nearby, probs = crowd(seed)
    b, s = T(boxes, dtype=torch.float32), T(scores, dtype=torch.float32)
    g = greedy_nms(b, s, thr).tolist()
    n = noh_nms(b, s, thr, T(nearby, dtype=torch.float32), T(probs)).tolist()
    return recall_at_fp(gts, boxes, scores, g, max_fp), recall_at_fp(gts, boxes, scores, n, max_fp), len(g), len(n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noh_nms_keeps_more_true_boxes_in_a_crowd(seed):
    r_greedy, r_noh, n_greedy, n_noh = crowd_recalls(seed, thr=0.5, max_fp=5)
    print(f"seed {seed}: recall@5FP greedy {r_greedy:.3f} ({n_greedy} kept), NOH {r_noh:.3f} ({n_noh} kept)")
    assert r_noh >= r_greedy + 0.15  # 60 of the 80 GTs sit in overlapping pairs
    assert r_noh >= 0.95


@pytest.mark.parametrize("call,fragment", [
    (lambda: greedy_nms(T([[0, 0, 1]]), T([1.0]), 0.5), "N x 4"),
    (lambda: greedy_nms(T([[0, 0, 1, 1]]), T([1.0, 2.0]), 0.5), "one score per box"),
    (lambda: greedy_nms(T([[0, 0, 1, 1]]), T([1.0]), float("nan")), "finite"),
    (lambda: fast_nms(T([[0, 0, 1, 1]]), T([[1.0]]), 0.5), "scores must have shape"),
    (lambda: mask_nms(torch.zeros(2, 4), T([1.0, 0.5]), 0.5), "N x H x W"),
    (lambda: _noh(PAIR, [0.9, 0.8], 0.5, [PAIR[0]], [1.0, 1.0]), "one hallucinated box per box"),
    (lambda: _noh(PAIR, [0.9, 0.8], 0.5, PAIR, [1.5, 1.0]), "sigmoid"),
    (lambda: _noh(PAIR, [0.9, 0.8], 0.5, PAIR, [1.0, 1.0], sigma=0.0), "positive"),
])
def test_bad_inputs_raise_input_error_with_fix(call, fragment):
    with pytest.raises(InputError, match=fragment) as err:
        call()
    assert "fix" in str(err.value).lower()


def test_empty_inputs():
    e = torch.zeros(0, 4)
    for fn in (greedy_nms, fast_nms):
        out = fn(e, torch.zeros(0), 0.5)
        assert out.shape == (0,) and out.dtype == torch.int64
    assert noh_nms(e, torch.zeros(0), 0.5, e, torch.zeros(0)).shape == (0,)
    assert mask_nms(torch.zeros(0, 3, 3, dtype=torch.bool), torch.zeros(0), 0.5).shape == (0,)
