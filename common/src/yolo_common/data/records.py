"""The one record type every reader returns and every writer takes.

Boxes are absolute pixel ``x1, y1, x2, y2`` in the image's own coordinates (float32). Category ids are
the dataset's own ids (COCO's sparse 1..90, YOLO's 0..nc-1, VOC's index into ``VOC_CLASSES``); a
model's contiguous class index ``k`` maps to ``split.categories[k]["id"]`` (categories sorted by id).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _as(arr, dtype, shape_tail=()) -> np.ndarray:
    a = np.asarray(arr if arr is not None else [], dtype=dtype)
    return a.reshape((-1, *shape_tail)) if a.size or shape_tail else a.reshape(0)


@dataclass
class ImageRecord:
    """One image and its annotations.

    Attributes:
        path: image file.
        width, height: image size in pixels (from the annotation file or the decoded image).
        boxes: ``(n, 4)`` float32 pixel xyxy.
        category_ids: ``(n,)`` int64 dataset category ids.
        iscrowd: ``(n,)`` bool, COCO crowd regions (ignored by COCO eval, never trained on by default).
        difficult: ``(n,)`` bool, VOC difficult flags (ignored by VOC AP).
        image_id: integer id, unique within a split (COCO's id, else the running index).
        area: ``(n,)`` float32, the annotation's own ``area`` (COCO: the *mask* area, which decides the
            S/M/L buckets of COCO eval), NaN where the source has none (YOLO, VOC, synthetic: box area).
        ignore: ``(n,)`` bool, COCO's optional ``ignore`` flag.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    category_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    iscrowd: np.ndarray | None = None
    difficult: np.ndarray | None = None
    image_id: int = 0
    area: np.ndarray | None = None
    ignore: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = _as(self.boxes, np.float32, (4,))
        self.category_ids = _as(self.category_ids, np.int64)
        n = len(self.boxes)
        if len(self.category_ids) != n:
            raise ValueError(f"{self.path}: {n} boxes but {len(self.category_ids)} category ids")
        self.iscrowd = np.zeros(n, bool) if self.iscrowd is None else _as(self.iscrowd, bool)
        self.difficult = np.zeros(n, bool) if self.difficult is None else _as(self.difficult, bool)
        self.area = np.full(n, np.nan, np.float32) if self.area is None else _as(self.area, np.float32)
        self.ignore = np.zeros(n, bool) if self.ignore is None else _as(self.ignore, bool)
        for name in ("iscrowd", "difficult", "area", "ignore"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.path}: {n} boxes but {len(getattr(self, name))} {name} values")

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class SkipCounter:
    """Counts what a reader skipped or repaired, reported once at the end (never per item)."""

    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def add(self, reason: str, example: str = "", n: int = 1) -> None:
        self.counts[reason] += n
        self.examples.setdefault(reason, example)

    def update(self, other: SkipCounter) -> None:
        """Adds ``other``'s counts (the first example seen per reason is kept)."""
        for reason, n in other.counts.items():
            self.add(reason, other.examples.get(reason, ""), n)

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        return "; ".join(f"{k}: {v} (e.g. {self.examples[k]})" for k, v in sorted(self.counts.items()))


@dataclass
class DatasetSplit:
    """One split of one dataset, in any layout.

    Attributes:
        records: the images.
        categories: ``[{"id": int, "name": str}, ...]`` sorted by id; the model's class k is ``categories[k]``.
        root: dataset root directory; ``split``: split name ("train", "val", "train2017", ...).
        layout: "coco", "yolo" or "voc"; ``annotation_files``: files the annotations came from (for provenance).
        skipped: what the reader dropped or repaired.
    """

    records: list[ImageRecord]
    categories: list[dict]
    root: Path
    split: str
    layout: str
    annotation_files: list[Path] = field(default_factory=list)
    skipped: SkipCounter = field(default_factory=SkipCounter)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.categories = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in self.categories),
                                 key=lambda c: c["id"])

    def __len__(self) -> int:
        return len(self.records)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def category_id_to_index(self) -> dict[int, int]:
        return {c["id"]: k for k, c in enumerate(self.categories)}

    @property
    def num_boxes(self) -> int:
        return sum(len(r) for r in self.records)
