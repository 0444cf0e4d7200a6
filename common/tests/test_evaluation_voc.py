"""VOC AP against cases worked out by hand."""

import math

import numpy as np
import pytest

from yolo_common.data.records import ImageRecord
from yolo_common.evaluation import voc_ap, voc_map


def rec(image_id, boxes, cats=None, difficult=None):
    cats = [0] * len(boxes) if cats is None else cats
    return ImageRecord(path=f"{image_id}.jpg", width=100, height=100, boxes=np.array(boxes, np.float32).reshape(-1, 4),
                       category_ids=cats, difficult=difficult, image_id=image_id)


def det(image_id, box, score, cat=0):
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


# Three GT of one class over two images, five detections (xyxy).
GT3 = [rec(1, [[0, 0, 10, 10], [20, 20, 30, 30]]), rec(2, [[0, 0, 10, 10]])]
DETS5 = [
    det(1, [0, 0, 10, 10], 0.9),      # TP on image 1 box A
    det(1, [50, 50, 60, 60], 0.8),    # FP: overlaps nothing
    det(1, [0, 0, 10, 10], 0.7),      # FP: duplicate on A, already taken
    det(2, [0, 0, 10, 10], 0.6),      # TP on image 2 box C
    det(1, [21, 21, 31, 31], 0.5),    # TP on B: IoU = 81 / (100 + 100 - 81) = 0.68
]
# Ranked:  TP  FP  FP  TP  TP
# cum TP:   1   1   1   2   3      recall    = 1/3 1/3 1/3 2/3 1
# cum FP:   0   1   2   2   2      precision = 1   1/2 1/3 1/2 3/5
# All-point: envelope (running max from the right) = 1, 3/5, 3/5, 3/5, 3/5; recall steps of 1/3 at
#   1/3 (p=1), 2/3 (p=3/5), 1 (p=3/5) -> AP = (1 + 3/5 + 3/5) / 3 = 11/15 = 0.7333...
# 11-point: t = 0, .1, .2, .3 -> max p at recall >= t = 1; t = .4 .. 1.0 (7 points) -> 3/5
#   -> AP = (4 * 1 + 7 * 3/5) / 11 = 8.2 / 11 = 41/55 = 0.74545...


def test_tiny_case_by_hand():
    r = voc_map(GT3, DETS5, class_names=["thing"])
    assert r["per_class"]["thing"] == pytest.approx(11 / 15, abs=1e-12)
    assert r["mAP"] == pytest.approx(11 / 15, abs=1e-12)
    assert r["num_gt"] == {"thing": 3}
    r07 = voc_map(GT3, DETS5, class_names=["thing"], use_07_metric=True)
    assert r07["mAP"] == pytest.approx(41 / 55, abs=1e-12)
    # Input order must not matter: ranking is by score.
    assert voc_map(GT3, DETS5[::-1], class_names=["thing"])["mAP"] == pytest.approx(11 / 15, abs=1e-12)


def test_voc_ap_on_curves():
    # The same curve as the tiny case, given directly.
    recall = np.array([1, 1, 1, 2, 3]) / 3
    precision = np.array([1, 1 / 2, 1 / 3, 1 / 2, 3 / 5])
    assert voc_ap(recall, precision) == pytest.approx(11 / 15, abs=1e-12)
    assert voc_ap(recall, precision, use_07_metric=True) == pytest.approx(41 / 55, abs=1e-12)
    # Recall stops at exactly 0.3: the 11-point threshold t=0.3 must still see it (the devkit's
    # arange(0, 1.1, 0.1) has t = 0.30000000000000004 and would drop it): 4 points of 1 -> 4/11.
    assert voc_ap([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], use_07_metric=True) == pytest.approx(4 / 11, abs=1e-12)
    assert voc_ap([], []) == 0.0
    with pytest.raises(ValueError):
        voc_ap([0.5, 1.0], [1.0])


def test_07_and_all_point_differ():
    # Two GT, one perfect detection: recall 1/2 at precision 1. All-point: area = 1/2.
    # 11-point: t = 0, .1, .., .5 (6 thresholds) reach recall 1/2 at precision 1 -> 6/11 = 0.5454.
    gt = [rec(1, [[0, 0, 10, 10], [50, 50, 60, 60]])]
    dets = [det(1, [0, 0, 10, 10], 0.9)]
    assert voc_map(gt, dets)["mAP"] == pytest.approx(0.5, abs=1e-12)
    assert voc_map(gt, dets, use_07_metric=True)["mAP"] == pytest.approx(6 / 11, abs=1e-12)


def test_difficult_gt_is_ignored():
    gt = [rec(1, [[0, 0, 10, 10], [20, 20, 30, 30]]),
          rec(2, [[0, 0, 10, 10], [40, 40, 50, 50]], difficult=[False, True])]
    hit_difficult = det(2, [40, 40, 50, 50], 0.95)  # ranked first
    with_d = voc_map(gt, DETS5 + [hit_difficult])
    without_d = voc_map(gt, DETS5)
    # Neither TP nor FP, and not a positive: exactly the tiny case's 11/15 and 3 positives.
    assert with_d["num_gt"] == {"0": 3}
    assert with_d["mAP"] == pytest.approx(11 / 15, abs=1e-12)
    assert without_d["mAP"] == pytest.approx(11 / 15, abs=1e-12)
    # Were it an ordinary box, the same detection would be a TP and there would be 4 positives.
    gt_plain = [gt[0], rec(2, [[0, 0, 10, 10], [40, 40, 50, 50]])]
    assert voc_map(gt_plain, DETS5 + [hit_difficult])["num_gt"] == {"0": 4}
    assert voc_map(gt_plain, DETS5 + [hit_difficult])["mAP"] != pytest.approx(11 / 15, abs=1e-6)


def test_duplicate_detection_is_false_positive():
    # Two GT; ranked: TP on g1, duplicate on g1 (FP), TP on g2.
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> envelope 1 at 1/2, 2/3 at 1 -> AP = 1/2 + 1/3 = 5/6.
    # (Counting the duplicate as nothing would give 1.0.)
    gt = [rec(1, [[0, 0, 10, 10], [50, 50, 60, 60]])]
    dets = [det(1, [0, 0, 10, 10], 0.9), det(1, [0, 0, 10, 10], 0.8), det(1, [50, 50, 60, 60], 0.7)]
    assert voc_map(gt, dets)["mAP"] == pytest.approx(5 / 6, abs=1e-12)


def test_iou_threshold_is_strict_and_continuous():
    # IoU = 100 / 200 = 0.5 exactly with continuous areas (the +1 convention would give 121/231).
    gt = [rec(1, [[0, 0, 10, 10]])]
    dets = [det(1, [0, 0, 10, 20], 0.9)]
    assert voc_map(gt, dets)["mAP"] == 0.0
    assert voc_map(gt, dets, iou_threshold=0.49)["mAP"] == pytest.approx(1.0)


def test_classes_without_gt_are_nan_and_excluded():
    gt = [rec(1, [[0, 0, 10, 10], [20, 20, 40, 40]], cats=[0, 2]), rec(2, [])]
    dets = [det(1, [0, 0, 10, 10], 0.9, cat=0),
            det(1, [20, 20, 40, 40], 0.8, cat=1),   # class 1 has no GT anywhere: FP, but no AP defined
            det(2, [0, 0, 5, 5], 0.7, cat=2),       # FP: image 2 has no GT
            det(1, [20, 20, 40, 40], 0.6, cat=2)]   # TP, ranked below that FP
    # class 2 ranked: FP (0.7, image 2), TP (0.6) -> precision 1/2 at recall 1 -> AP 1/2.
    r = voc_map(gt, dets, class_names=["cat", "dog", "cow"])
    assert r["per_class"]["cat"] == pytest.approx(1.0)
    assert math.isnan(r["per_class"]["dog"]) and r["num_gt"]["dog"] == 0
    assert r["per_class"]["cow"] == pytest.approx(0.5)
    assert r["mAP"] == pytest.approx(0.75)  # mean of cat and cow only
    assert math.isnan(voc_map([rec(1, [])], [], class_names=["cat"])["mAP"])
    # With no class_names, classes are the ids seen, named by str(id).
    assert set(voc_map(gt, dets)["per_class"]) == {"0", "1", "2"}


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="not in gt_records"):
        voc_map(GT3, DETS5 + [det(77, [0, 0, 1, 1], 0.1)])
    with pytest.raises(ValueError, match="class_names"):
        voc_map(GT3, DETS5 + [det(1, [0, 0, 1, 1], 0.1, cat=5)], class_names=["thing"])
    with pytest.raises(ValueError, match="duplicate image_id"):
        voc_map(GT3 + [rec(1, [])], DETS5)


def test_legacy_devkit_thresholds_miss_a_recall_of_exactly_three_tenths():
    """py-faster-rcnn's np.arange(0, 1.1, 0.1) gives 0.30000000000000004: a recall of exactly 3/10 no longer
    reaches "0.3", so the best precision there comes from later (worse) points. Hand-computed both ways."""
    # 10 positives; ranks: TP TP TP (recall .3 at precision 1) then FP FP, then TP (recall .4, precision 4/6)
    recall = np.array([0.1, 0.2, 0.3, 0.3, 0.3, 0.4])
    precision = np.array([1.0, 1.0, 1.0, 0.75, 0.6, 4 / 6])
    exact = voc_ap(recall, precision, use_07_metric=True)
    legacy = voc_ap(recall, precision, use_07_metric=True, legacy_devkit=True)
    assert exact == pytest.approx((4 * 1.0 + 4 / 6) / 11)         # t = 0 .. .3 reach precision 1, t = .4: 4/6
    assert legacy == pytest.approx((3 * 1.0 + 2 * 4 / 6) / 11)    # "0.3" only sees the recall-.4 point
    # all-point AP does not use thresholds: unchanged
    assert voc_ap(recall, precision, legacy_devkit=True) == voc_ap(recall, precision)
