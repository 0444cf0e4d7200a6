"""PASCAL VOC average precision, written here because no maintained library ships it.

The rules are the VOC devkit's (``VOCevaldet`` / the widely copied ``voc_eval.py``):

- detections of a class are ranked by score over the whole set; each one is matched to the GT box of
  its image and class with the highest IoU, and counts as a true positive when that IoU is
  ``> iou_threshold`` (strictly) and that GT is not yet taken. If the best GT is taken the detection
  is a false positive: it does not fall back to the second-best GT (COCO does; VOC does not).
- ``difficult`` GT boxes are not counted in the number of positives, and a detection whose best match
  is difficult is dropped (neither TP nor FP). COCO-style ``iscrowd`` boxes, if a record has them, are
  treated the same way.
- IoU is continuous (``(x2 - x1) * (y2 - y1)``), not the devkit's ``+1`` pixel convention: the readers
  already turned VOC's 1-based inclusive pixel coordinates into continuous ones. This shifts AP by a
  hair on tiny boxes against devkit numbers, and keeps every metric in the repo on one IoU.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np


def voc_ap(recall, precision, *, use_07_metric: bool = False, legacy_devkit: bool = False) -> float:
    """Area under one class's precision/recall curve, the VOC way.

    Args:
        recall, precision: cumulative values at each detection in descending-score order (same length).
        use_07_metric: VOC2007's 11-point interpolation, the mean over t in {0, 0.1, ..., 1} of the
            best precision at recall >= t. Otherwise VOC2010+: the exact area under the monotone
            (right-to-left running max) precision envelope, summed where recall changes.
        legacy_devkit: the 11-point thresholds exactly as py-faster-rcnn's ``voc_eval`` computes them
            (``np.arange(0, 1.1, 0.1)``, whose 0.30000000000000004 and 0.7000000000000001 miss a recall of
            exactly 3/10 or 7/10), to reproduce numbers published with that code.

    Returns:
        AP in [0, 1]; 0.0 for empty input.
    """
    rec = np.asarray(recall, dtype=np.float64).ravel()
    prec = np.asarray(precision, dtype=np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision differ in length: {rec.shape} vs {prec.shape}")
    if rec.size == 0:
        return 0.0
    if use_07_metric:
        # k / 10, not the devkit's arange(0, 1.1, 0.1): that gives 0.30000000000000004, so a recall of
        # exactly 3/10 would miss its own threshold. Division rounds correctly, so tp/npos == k/10 as
        # reals means equal doubles.
        ap = 0.0
        for t in (np.arange(0.0, 1.1, 0.1) if legacy_devkit else np.arange(11) / 10.0):
            above = prec[rec >= t]
            ap += float(above.max()) if above.size else 0.0
        return ap / 11.0
    # Sentinels: recall runs 0 -> 1, precision falls to 0 past the last detection.
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # envelope: best precision at any recall >= r
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou_xyxy(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box against (n, 4) boxes, continuous coordinates (no +1)."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _class_names(class_names, cat_ids: set[int]) -> dict[int, str]:
    if class_names is None:
        return {c: str(c) for c in sorted(cat_ids)}
    if isinstance(class_names, Mapping):
        return {int(k): str(v) for k, v in class_names.items()}
    if isinstance(class_names, Sequence) and not isinstance(class_names, str):
        return {i: str(n) for i, n in enumerate(class_names)}
    raise TypeError("class_names must be None, a list indexed by category id, or a {category_id: name} dict")


def voc_map(
    gt_records,
    detections: list[dict],
    *,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    legacy_devkit: bool = False,
) -> dict:
    """PASCAL VOC mAP over a set of images (rules in the module docstring).

    Args:
        gt_records: :class:`~yolo_common.data.records.ImageRecord` list (``boxes`` pixel xyxy,
            ``category_ids``, ``difficult``, ``iscrowd``, ``image_id`` unique per record).
        detections: dicts ``{"image_id", "category_id", "bbox": [x1, y1, x2, y2], "score"}``. Note the
            box is pixel **xyxy** here, while COCO results (:func:`coco_map`) use **xywh**.
        iou_threshold: a match needs IoU strictly above this (VOC: 0.5).
        use_07_metric: VOC2007 11-point AP instead of the VOC2010+ all-point AP.
        class_names: the classes to evaluate and what to call them: a list indexed by category id
            (VOC's ``VOC_CLASSES``), a ``{category_id: name}`` dict, or None for every category id
            seen in GT or detections, named by ``str(id)``.
        legacy_devkit: py-faster-rcnn's 11-point thresholds (see ``voc_ap``). Its tie order is NOT
            reproduced: it used numpy's default unstable ``argsort``, whose order among equal scores
            depends on the numpy version and CPU (AVX-512 sorts differ); ties keep input order here.

    Returns:
        ``{"mAP": float, "per_class": {name: AP}, "num_gt": {name: int}}``. ``num_gt`` counts
        non-difficult, non-crowd boxes. A class with no such GT has AP **NaN** and is left out of
        the mAP (its detections can only be false positives, and VOC defines no AP there); mAP is NaN
        when no class has GT.

    Raises:
        ValueError: duplicate record ``image_id``s, detections naming unknown images, or (with
            ``class_names``) categories outside it.
    """
    # GT per (image, class): boxes and an "ignore" flag (difficult or crowd).
    gt: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    npos: dict[int, int] = defaultdict(int)
    image_ids: set[int] = set()
    gt_cats: set[int] = set()
    for r in gt_records:
        iid = int(r.image_id)
        if iid in image_ids:
            raise ValueError(f"duplicate image_id {iid} in gt_records")
        image_ids.add(iid)
        ignore = np.asarray(r.difficult, bool) | np.asarray(r.iscrowd, bool)
        cats = np.asarray(r.category_ids, np.int64)
        boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        for c in np.unique(cats):
            m = cats == c
            gt[iid, int(c)] = (boxes[m], ignore[m])
            npos[int(c)] += int((~ignore[m]).sum())
            gt_cats.add(int(c))

    det_cats = {int(d["category_id"]) for d in detections}
    unknown = sorted({int(d["image_id"]) for d in detections} - image_ids)
    if unknown:
        raise ValueError(f"detections reference {len(unknown)} image id(s) not in gt_records: {unknown[:10]}")
    names = _class_names(class_names, gt_cats | det_cats)
    if class_names is not None:
        outside = sorted((gt_cats | det_cats) - names.keys())
        if outside:
            raise ValueError(f"category ids {outside} are not in class_names")

    # Rank each class's detections by score; mergesort keeps input order among ties, so results are
    # deterministic for a given detection list.
    by_cat: dict[int, list[int]] = defaultdict(list)
    for i, d in enumerate(detections):
        by_cat[int(d["category_id"])].append(i)

    per_class, num_gt = {}, {}
    for c, name in names.items():
        num_gt[name] = npos.get(c, 0)
        if num_gt[name] == 0:
            per_class[name] = math.nan
            continue
        idx = by_cat.get(c, [])
        scores = np.array([float(detections[i]["score"]) for i in idx], np.float64)
        order = np.argsort(-scores, kind="mergesort")
        taken = {}  # image_id -> bool array of matched GT, made on first use
        tp = np.zeros(len(order), bool)
        keep = np.ones(len(order), bool)  # False = matched a difficult box: dropped from the curve
        for rank, j in enumerate(order):
            d = detections[idx[j]]
            key = (int(d["image_id"]), c)
            if key not in gt:
                continue  # FP: no GT of this class in the image
            boxes, ignore = gt[key]
            ious = _iou_xyxy(np.asarray(d["bbox"], np.float64), boxes)
            best = int(np.argmax(ious))
            if ious[best] <= iou_threshold:
                continue  # FP: poor localisation
            if ignore[best]:
                keep[rank] = False
                continue
            used = taken.setdefault(key[0], np.zeros(len(boxes), bool))
            if not used[best]:
                used[best] = True
                tp[rank] = True
            # else FP: a duplicate on an already-matched box
        tp = tp[keep]
        ctp = np.cumsum(tp)
        cfp = np.cumsum(~tp)
        recall = ctp / num_gt[name]
        precision = ctp / np.maximum(ctp + cfp, 1)
        per_class[name] = voc_ap(recall, precision, use_07_metric=use_07_metric, legacy_devkit=legacy_devkit)

    valid = [v for v in per_class.values() if not math.isnan(v)]
    return {
        "mAP": float(np.mean(valid)) if valid else math.nan,
        "per_class": per_class,
        "num_gt": num_gt,
    }
