"""COCO mask AP through pycocotools: perfect = 1.0, hand-made cases, reader."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from samkit.errors import InputError  # noqa: E402
from samkit.eval.coco import CocoInstances, coco_mask_ap, detection, encode_mask, evaluate_box_prompts  # noqa: E402

H = W = 40


def sq(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


GT_MASKS = {1: [sq(2, 12, 2, 12), sq(20, 30, 20, 30)], 2: [sq(5, 15, 20, 35)]}   # image id -> masks


def gt_dict():
    anns, aid = [], 1
    for img, masks in GT_MASKS.items():
        for m in masks:
            ys, xs = np.nonzero(m)
            anns.append({"id": aid, "image_id": img, "category_id": 1, "segmentation": encode_mask(m),
                         "area": float(m.sum()), "iscrowd": 0,
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]})
            aid += 1
    return {"images": [{"id": i, "width": W, "height": H, "file_name": f"{i}.png"} for i in GT_MASKS],
            "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def test_perfect_predictions_ap_one():
    dets = [detection(img, 1, m, 0.9) for img, ms in GT_MASKS.items() for m in ms]
    s = coco_mask_ap(gt_dict(), dets)
    assert s["AP"] == pytest.approx(1.0) and s["AP50"] == pytest.approx(1.0) and s["AP75"] == pytest.approx(1.0)
    assert s["AR100"] == pytest.approx(1.0)
    assert s["APs"] == pytest.approx(1.0) and s["APm"] == -1.0        # all objects < 32^2: no medium ones


def test_partial_overlap_half_the_thresholds():
    # one image, one object: a prediction with IoU 0.72 matches at IoU thresholds 0.50..0.70
    # (5 of the 10) with precision 1 -> AP = 0.5, AP50 = 1, AP75 = 0
    gt = gt_dict()
    gt["images"] = gt["images"][:1]
    gt["annotations"] = gt["annotations"][:1]
    pred = sq(2, 10, 2, 11)                                            # 8 x 9 = 72 of 100
    s = coco_mask_ap(gt, [detection(1, 1, pred, 0.8)])
    assert s["AP"] == pytest.approx(0.5) and s["AP50"] == pytest.approx(1.0) and s["AP75"] == 0.0


def test_false_positive_ranked_first():
    # image 1: 2 objects; detections: a miss scored 0.95, then a perfect one scored 0.9.
    # Ranked: FP, TP -> recall 0.5 at precision 0.5; the 101-point interpolated precision is
    # 0.5 for recall 0.00..0.50 (51 points) and 0 beyond -> AP = 51 * 0.5 / 101 at every threshold
    gt = gt_dict()
    gt["images"] = gt["images"][:1]
    gt["annotations"] = gt["annotations"][:2]
    dets = [detection(1, 1, sq(32, 38, 0, 6), 0.95), detection(1, 1, GT_MASKS[1][0], 0.9)]
    s = coco_mask_ap(gt, dets)
    assert s["AP"] == pytest.approx(51 * 0.5 / 101) and s["AR100"] == pytest.approx(0.5)


def test_no_detections_and_bad_input(tmp_path):
    assert coco_mask_ap(gt_dict(), [])["AP"] == 0.0
    with pytest.raises(InputError, match="Fix"):
        coco_mask_ap(gt_dict(), [{"image_id": 1}])
    with pytest.raises(InputError, match="image ids"):
        coco_mask_ap(gt_dict(), [detection(99, 1, sq(0, 2, 0, 2), 0.5)])
    with pytest.raises(InputError, match="Fix"):
        coco_mask_ap(tmp_path / "missing.json", [])
    with pytest.raises(InputError, match="annotations"):
        coco_mask_ap({"images": []}, [])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_reader_and_box_prompt_ap(tmp_path):
    from PIL import Image

    path = tmp_path / "inst.json"
    path.write_text(json.dumps(gt_dict()))
    for img, ms in GT_MASKS.items():
        white = np.any(np.stack(ms), axis=0)
        Image.fromarray(np.repeat(white[..., None], 3, 2).astype(np.uint8) * 255).save(tmp_path / f"{img}.png")
    data = CocoInstances(path, tmp_path)
    assert data.image_ids == [1, 2]
    inst = data.instances(1)
    assert len(inst) == 2 and inst[0].bbox == [2.0, 2.0, 10.0, 10.0]
    np.testing.assert_array_equal(inst[1].mask, GT_MASKS[1][1])
    assert data.image(2).shape == (H, W, 3)

    class BoxWhite:
        def set_image(self, img):
            self.white = img[..., 0] > 127

        def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=False):
            x0, y0, x1, y1 = [int(v) for v in box]
            m = np.zeros_like(self.white)
            m[y0:y1, x0:x1] = self.white[y0:y1, x0:x1]              # xyxy with exclusive x1 = x + w
            return SimpleNamespace(masks=m[None], scores=np.array([0.7]))

    assert evaluate_box_prompts(BoxWhite(), data)["AP"] == pytest.approx(1.0)
