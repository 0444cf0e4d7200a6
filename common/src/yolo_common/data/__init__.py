"""Dataset records and the COCO / YOLO / VOC readers and writers.

Every reader returns a ``DatasetSplit`` of ``ImageRecord``s (pixel xyxy boxes, dataset category ids);
every writer takes one, so converting is ``write_yolo(read_coco(...), ...)``.
"""

from ._files import list_images, output_names
from .categories import (
    COCO80_TO_COCO91,
    COCO91_TO_COCO80,
    COCO_CATEGORIES,
    COCO_CLASSES,
    VOC_CLASSES,
    coco80_to_coco91,
    coco91_to_coco80,
)
from .coco import read_coco, to_coco_dict, verify_images, write_coco
from .load import detect_layout, load_split
from .provenance import provenance, write_provenance
from .records import DatasetSplit, ImageRecord, SkipCounter
from .robust import SkipUnreadable, UnreadableImage, drop_none
from .voc import read_voc, write_voc
from .yolo import read_yolo, write_yolo

__all__ = [
    "COCO80_TO_COCO91",
    "COCO91_TO_COCO80",
    "COCO_CATEGORIES",
    "COCO_CLASSES",
    "VOC_CLASSES",
    "DatasetSplit",
    "ImageRecord",
    "SkipCounter",
    "SkipUnreadable",
    "UnreadableImage",
    "coco80_to_coco91",
    "coco91_to_coco80",
    "detect_layout",
    "drop_none",
    "list_images",
    "output_names",
    "load_split",
    "provenance",
    "read_coco",
    "read_voc",
    "read_yolo",
    "to_coco_dict",
    "verify_images",
    "write_coco",
    "write_provenance",
    "write_voc",
    "write_yolo",
]
