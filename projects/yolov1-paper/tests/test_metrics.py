"""VOC AP on hand-computed cases (11-point and all-point, difficult ignored), decode + NMS, top-k."""

from __future__ import annotations

import pytest
import torch

from yolo_common.data import DatasetSplit, ImageRecord
from yolov1.loss import encode_prediction
from yolov1.metrics import detection_metrics, topk_correct
from yolov1.postprocess import decode, to_image_coords


def _split():
    recs = [
        ImageRecord(path="a.jpg", width=100, height=100, boxes=[[10, 10, 50, 50], [60, 60, 90, 90]],
                    category_ids=[0, 0], difficult=[False, True], image_id=1),
        ImageRecord(path="b.jpg", width=100, height=100, boxes=[[20, 20, 70, 70]], category_ids=[0], image_id=2),
    ]
    return DatasetSplit(records=recs, categories=[{"id": 0, "name": "thing"}, {"id": 1, "name": "other"}],
                        root=".", split="val", layout="voc")


def test_voc_ap_by_hand_difficult_ignored():
    dets = [
        {"image_id": 1, "category_id": 0, "bbox": [10, 10, 50, 50], "score": 0.9},  # TP
        {"image_id": 2, "category_id": 0, "bbox": [80, 0, 100, 10], "score": 0.8},  # FP (no overlap)
        {"image_id": 1, "category_id": 0, "bbox": [60, 60, 90, 90], "score": 0.7},  # on the difficult box: ignored
        {"image_id": 2, "category_id": 0, "bbox": [21, 21, 70, 70], "score": 0.6},  # TP
    ]
    m = detection_metrics(_split(), dets)
    # ranked TP, FP, TP over npos = 2: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    all_point = 0.5 * 1.0 + 0.5 * (2 / 3)
    eleven = (6 * 1.0 + 5 * (2 / 3)) / 11  # t = 0..0.5 -> 1; t = 0.6..1 -> 2/3
    assert m["voc_mAP"] == pytest.approx(all_point, abs=1e-9)
    assert m["voc07_mAP"] == pytest.approx(eleven, abs=1e-9)
    assert m["per_class_voc07"]["other"] is None  # no GT: NaN in common, None here, left out of the mean
    assert 0 <= m["coco_AP"] <= m["coco_AP50"] <= 1
    # counting the difficult match as an FP (what a COCO-style metric does) would change the number
    dets[2]["bbox"] = [0, 90, 5, 100]
    assert detection_metrics(_split(), dets)["voc_mAP"] < all_point


def test_decode_nms_threshold_and_classes():
    S, B, C = 2, 2, 2
    pred = encode_prediction(S, B, C, {
        (0, 0): {"boxes": [(0.25, 0.25, 0.4, 0.4, 0.9), (0.26, 0.25, 0.4, 0.4, 0.8)], "classes": [1.0, 0.0]},
        (1, 1): {"boxes": [(0.75, 0.75, 0.2, 0.2, 0.5), (0.75, 0.75, 0.2, 0.2, 0.001)], "classes": [0.5, 0.5]},
    })
    (det,) = decode(pred, B, conf_threshold=0.01, nms_iou=0.5)
    # cell (0,0): the two overlapping class-0 boxes -> one after NMS (score 0.9); cell (1,1): one box kept for
    # both classes (per-class NMS), score 0.25 each; the 0.001-confidence box is under the threshold
    assert det["scores"].tolist() == pytest.approx([0.9, 0.25, 0.25])
    assert sorted(det["labels"].tolist()[1:]) == [0, 1] and det["labels"][0] == 0
    assert det["boxes"][0].tolist() == pytest.approx([0.05, 0.05, 0.45, 0.45], abs=1e-6)
    px = to_image_coords(det, 200, 100)
    assert px[0].tolist() == pytest.approx([10, 5, 90, 45], abs=1e-4)
    # without NMS-worthy overlap both boxes survive
    (det2,) = decode(pred, B, conf_threshold=0.01, nms_iou=0.99)
    assert len(det2["scores"]) == 4


def test_decode_empty_and_max_detections():
    pred = torch.zeros(3, 7, 7, 30)
    assert all(len(d["scores"]) == 0 for d in decode(pred, 2))
    pred = torch.rand(1, 7, 7, 30)
    (d,) = decode(pred, 2, conf_threshold=0.0, nms_iou=1.0, max_detections=10)
    assert len(d["scores"]) == 10 and (d["scores"][:-1] >= d["scores"][1:]).all()


def test_topk():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    hits = topk_correct(logits, torch.tensor([1, 1, 0]), (1, 2))
    assert hits == {1: 1, 2: 2}
    assert topk_correct(logits, torch.tensor([1, 1, 0]), (1, 5))[5] == 3  # k capped at the class count
