"""The RITM click simulator and the per-sample protocol."""
from types import SimpleNamespace

import numpy as np
import pytest

from samkit.errors import InputError
from samkit.eval.clicks import Click, box_iou_sample, centre_point, next_click, run_clicks


def sq(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_first_click_is_object_centre_positive():
    gt = sq(10, 10, 2, 5, 2, 5)
    c = next_click(gt, np.zeros_like(gt))
    assert c == Click(3, 3, True) and c.label == 1
    assert centre_point(gt) == (3, 3)


def test_centre_of_nonconvex_object_is_inside():
    gt = np.zeros((30, 30), bool)
    gt[2:28, 2:8] = True                                  # an L: the centroid lies outside it
    gt[22:28, 2:28] = True
    x, y = centre_point(gt)
    assert gt[y, x]


def test_false_positive_region_gives_negative_click():
    gt = sq(10, 10, 0, 10, 0, 5)                          # left half
    pred = np.ones((10, 10), bool)                        # right half is a false positive
    c = next_click(gt, pred)
    # distance 3 (to column 4 and to the padded border) holds for rows 2..7 of column 7;
    # the first in row-major order is chosen
    assert c == Click(7, 2, False) and c.label == 0


@pytest.mark.parametrize("fn_side, fp_side, positive", [(3, 5, False), (7, 5, True), (5, 3, True)])
def test_larger_error_region_wins_with_sign(fn_side, fp_side, positive):
    gt = np.zeros((40, 40), bool)
    pred = np.zeros((40, 40), bool)
    gt[2:2 + fn_side, 2:2 + fn_side] = True               # missed object part -> false negative
    pred[20:20 + fp_side, 20:20 + fp_side] = True         # spurious blob -> false positive
    c = next_click(gt, pred)
    assert c.positive is positive
    side, off = (fn_side, 2) if positive else (fp_side, 20)
    assert (c.x, c.y) == (off + side // 2, off + side // 2)


def test_largest_of_two_missed_regions():
    gt = np.zeros((40, 40), bool)
    gt[1:4, 1:4] = True                                   # small miss
    gt[10:17, 20:27] = True                               # large miss
    c = next_click(gt, np.zeros_like(gt))
    assert c == Click(23, 13, True)


def test_clicked_pixels_are_not_clicked_again():
    gt = sq(9, 9, 0, 9, 0, 9)
    pred = np.zeros_like(gt)
    first = next_click(gt, pred)
    assert first == Click(4, 4, True)
    second = next_click(gt, pred, [first])
    assert (second.x, second.y) != (4, 4) and second.positive


def test_no_error_no_click():
    gt = sq(5, 5, 1, 3, 1, 3)
    assert next_click(gt, gt.copy()) is None


def test_void_pixels_are_not_errors():
    gt = sq(10, 10, 0, 10, 0, 5)
    pred = np.ones((10, 10), bool)
    void = sq(10, 10, 0, 10, 5, 10)
    assert next_click(gt, pred, void=void) is None


class ComponentPredictor:
    """Fake: the union of ground-truth components under positive clicks; three candidates on
    multimask with the top score on the requested index; logits tagged with the call number."""

    def __init__(self, gt, top_index=0, wrong_top=False, supports_mask_input=True):
        import cv2
        self.gt = gt
        _, self.lab = cv2.connectedComponents(gt.astype(np.uint8), connectivity=4)
        self.calls = []
        self.wrong_top = wrong_top
        self.model = SimpleNamespace(supports_mask_input=supports_mask_input)

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=True):
        self.calls.append(dict(points=[list(p) for p in points], labels=list(labels), mask_input=mask_input,
                               multimask=multimask))
        m = np.zeros_like(self.gt)
        for (x, y), l in zip(points, labels):
            if l == 1 and self.lab[y, x]:
                m |= self.lab == self.lab[y, x]
        k = 3 if multimask else 1
        masks = np.stack([m] * k)
        scores = np.array([0.9, 0.5, 0.4][:k])
        if multimask and self.wrong_top:
            masks[0] = False                               # top-scored candidate is empty
        logits = np.full((k, 256, 256), float(len(self.calls)), np.float32)
        logits[:, 0, 0] = np.arange(k)
        return SimpleNamespace(masks=masks, scores=scores, low_res_logits=logits)


def two_objects():
    gt = np.zeros((40, 40), bool)
    gt[5:12, 5:12] = True                                 # 7x7 = 49, the larger: clicked first
    gt[25:30, 25:30] = True                               # 5x5 = 25
    return gt


def test_protocol_clicks_ious_noc_and_prompts():
    gt = two_objects()
    pred = ComponentPredictor(gt)
    res = run_clicks(pred, gt, max_clicks=20, min_clicks=5)
    assert res.ious[0] == pytest.approx(49 / 74)
    assert res.ious[1] == 1.0 and len(res.ious) == 20 and res.ious[-1] == 1.0
    assert res.noc(0.85) == 2 and res.noc(0.90) == 2
    assert res.iou_at(1) == pytest.approx(49 / 74) and res.iou_at(5) == 1.0
    assert [(c.x, c.y, c.positive) for c in res.clicks] == [(8, 8, True), (27, 27, True)]
    first, second = pred.calls[0], pred.calls[1]
    assert first["multimask"] is True and first["mask_input"] is None
    assert second["multimask"] is False
    assert second["points"] == [[8, 8], [27, 27]] and second["labels"] == [1, 1]
    # the kept candidate's low-res logits of the previous call are fed back (1 x 256 x 256)
    assert second["mask_input"].shape == (1, 256, 256)
    assert second["mask_input"][0, 1, 1] == 1.0 and second["mask_input"][0, 0, 0] == 0.0
    assert len(pred.calls) == 2                           # nothing left to correct afterwards


def test_top_score_vs_oracle_selection():
    gt = two_objects()
    res = run_clicks(ComponentPredictor(gt, wrong_top=True), gt, max_clicks=3, min_clicks=3)
    assert res.ious[0] == 0.0                             # kept the (empty) top-scored candidate
    res = run_clicks(ComponentPredictor(gt, wrong_top=True), gt, max_clicks=3, min_clicks=3, oracle=True)
    assert res.ious[0] == pytest.approx(49 / 74)


def test_no_mask_feedback_when_model_lacks_it():
    gt = two_objects()
    pred = ComponentPredictor(gt, supports_mask_input=False)
    run_clicks(pred, gt, max_clicks=3, min_clicks=3)
    assert all(c["mask_input"] is None for c in pred.calls)


def test_failure_counts_max_clicks():
    gt = two_objects()

    class Blind(ComponentPredictor):
        def predict(self, **kw):
            out = super().predict(**kw)
            out.masks[:] = False
            return out

    res = run_clicks(Blind(gt), gt, max_clicks=20, min_clicks=5)
    assert res.noc(0.85, 20) == 20 and max(res.ious) == 0.0
    assert len(res.clicks) == 20                          # the budget was spent


def test_empty_gt_rejected():
    with pytest.raises(InputError, match="Fix"):
        run_clicks(ComponentPredictor(np.zeros((5, 5), bool)), np.zeros((5, 5), bool))


def test_box_prompt_iou():
    gt = np.zeros((20, 20), bool)
    gt[2:12, 2:6] = True
    gt[8:12, 2:14] = True                                 # an L: 40 + 32 = 72 pixels in a 10x12 box

    class BoxFill:
        def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=False):
            x0, y0, x1, y1 = [int(v) for v in box]
            m = np.zeros((20, 20), bool)
            m[y0:y1 + 1, x0:x1 + 1] = True
            self.box = box
            return SimpleNamespace(masks=m[None], scores=np.ones(1), low_res_logits=None)

    p = BoxFill()
    assert box_iou_sample(p, gt) == pytest.approx(72 / 120)
    assert p.box == [2.0, 2.0, 13.0, 11.0]


@pytest.mark.parametrize("gt_box, prompt", [
    ((3, 4, 2, 9), [2.0, 3.0, 8.0, 4.0]),     # one row high: the box gets 1 px of height
    ((0, 6, 19, 20), [19.0, 0.0, 20.0, 5.0]),  # one column wide at the right edge: ends at x = W
])
def test_box_prompt_of_a_one_pixel_thin_object_is_a_valid_prompt(gt_box, prompt):
    """A 1-px thin object's inclusive tight box has zero width or height, which the prompt
    contract refuses; the evaluation makes that side 1 px long, inside the image."""
    from samkit import ImagePredictor
    from samkit.models.classic import GrabCutModel

    pytest.importorskip("cv2")
    gt = sq(20, 20, *gt_box)
    image = np.where(gt[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    seen = {}

    class Spy(ImagePredictor):
        def predict(self, **kw):
            seen["box"] = list(kw["box"])
            return super().predict(**kw)

    predictor = Spy(GrabCutModel()).set_image(image)
    iou = box_iou_sample(predictor, gt)
    assert seen["box"] == prompt and 0.0 <= iou <= 1.0
