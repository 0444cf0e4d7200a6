"""Class lists and the COCO 80 <-> 91 id maps.

COCO's annotation files use sparse category ids out of 1..90 (the paper's 91 minus the unused ones);
detectors train on the 80 that have boxes as contiguous indices 0..79. Results submitted to COCO eval
must carry the sparse ids again, so every project needs the same two maps.
"""

from __future__ import annotations

COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

# COCO category id of contiguous class k (k = 0..79); the gaps (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
# are ids defined in the paper that never got annotations.
COCO80_TO_COCO91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31,
    32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57,
    58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87,
    88, 89, 90,
)
COCO91_TO_COCO80: dict[int, int] = {cid: k for k, cid in enumerate(COCO80_TO_COCO91)}

# The categories block of instances_*2017.json (without the supercategory field).
COCO_CATEGORIES: tuple[dict, ...] = tuple(
    {"id": cid, "name": name} for cid, name in zip(COCO80_TO_COCO91, COCO_CLASSES)
)

# Pascal VOC's 20 classes in the standard (alphabetical) order; VOC category id k == index k.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)


def coco80_to_coco91(k: int) -> int:
    """COCO category id (1..90) of contiguous class index ``k`` (0..79).

    Raises:
        IndexError: ``k`` is outside 0..79.
    """
    if not 0 <= int(k) < len(COCO80_TO_COCO91):
        raise IndexError(f"COCO class index {k} outside 0..{len(COCO80_TO_COCO91) - 1}")
    return COCO80_TO_COCO91[int(k)]


def coco91_to_coco80(category_id: int) -> int:
    """Contiguous class index (0..79) of COCO category id ``category_id``.

    Raises:
        KeyError: the id is one of COCO's unused ids or outside 1..90.
    """
    try:
        return COCO91_TO_COCO80[int(category_id)]
    except KeyError:
        raise KeyError(f"{category_id} is not one of the 80 used COCO category ids") from None
