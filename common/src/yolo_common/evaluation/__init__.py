"""Detection metrics: COCO mAP through a maintained library, VOC AP written here.

- :func:`coco_map` runs the COCO protocol with faster-coco-eval (default, C++) or pycocotools (the
  reference); both give the same 12 stats to <= 1e-6 (tested). Results are COCO dicts, bbox **xywh**.
- :func:`voc_ap` / :func:`voc_map`: PASCAL VOC AP (2007 11-point or 2010+ all-point) over
  :class:`~yolo_common.data.records.ImageRecord` ground truth; detections are bbox **xyxy**.

Importing this package imports neither backend; they load on the first ``coco_map`` call.
"""

from yolo_common.evaluation.coco import COCO_STAT_NAMES, coco_map
from yolo_common.evaluation.voc import voc_ap, voc_map

__all__ = ["COCO_STAT_NAMES", "coco_map", "voc_ap", "voc_map"]
