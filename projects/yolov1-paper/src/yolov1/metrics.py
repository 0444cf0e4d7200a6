"""Metrics: top-1/top-5 for pretraining; VOC mAP@0.5 (2007 11-point and 2010+ all-point) and COCO mAP
for detection, all through ``yolo_common.evaluation``.

The number to compare with the paper's 63.4 is ``voc07_mAP`` (VOC2007 test, 11-point, difficult
ignored). ``coco_*`` are COCO-protocol numbers on the same detections (COCO has no "difficult": those
objects count as ordinary GT there), labelled as such and never mixed with the VOC ones. The starting
code's "mAP" scored only the cells that hold GT, without NMS: an oracle number, not a detection metric.
"""

from __future__ import annotations

import math

import torch

from yolo_common.data import DatasetSplit, to_coco_dict
from yolo_common.evaluation import coco_map, voc_map


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """How many samples have their label among the top-k logits, for each k (k capped at #classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return {k: int(hit[:, : min(k, kmax)].any(1).sum()) for k in ks}


def detection_metrics(split: DatasetSplit, detections: list[dict], *, legacy_devkit: bool = False) -> dict:
    """VOC and COCO mAP of ``detections`` on ``split``.

    Args:
        split: the evaluated records (``image_id`` unique, VOC category ids = class index).
        detections: ``{"image_id", "category_id", "bbox": [x1, y1, x2, y2] pixels, "score"}``.
        legacy_devkit: VOC AP with py-faster-rcnn's 11-point thresholds (see
            ``yolo_common.evaluation.voc_map``), to reproduce numbers published with that code.

    Returns:
        ``voc07_mAP``, ``voc_mAP`` (all-point), ``coco_AP`` (0.5:0.95), ``coco_AP50``, ``coco_AP75``,
        ``per_class_voc07`` {name: AP}, ``num_detections``.
    """
    names = {c["id"]: c["name"] for c in split.categories}
    v07 = voc_map(split.records, detections, use_07_metric=True, class_names=names, legacy_devkit=legacy_devkit)
    v12 = voc_map(split.records, detections, use_07_metric=False, class_names=names, legacy_devkit=legacy_devkit)
    coco_dets = [{"image_id": d["image_id"], "category_id": d["category_id"], "score": d["score"],
                  "bbox": [d["bbox"][0], d["bbox"][1], d["bbox"][2] - d["bbox"][0], d["bbox"][3] - d["bbox"][1]]}
                 for d in detections]
    coco = coco_map(to_coco_dict(split), coco_dets, per_class=False)
    return {
        "voc07_mAP": v07["mAP"], "voc_mAP": v12["mAP"],
        "coco_AP": coco["AP"], "coco_AP50": coco["AP50"], "coco_AP75": coco["AP75"],
        "per_class_voc07": {k: (None if math.isnan(v) else v) for k, v in v07["per_class"].items()},
        "per_class_voc": {k: (None if math.isnan(v) else v) for k, v in v12["per_class"].items()},
        "num_detections": len(detections),
    }
