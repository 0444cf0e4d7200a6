"""Pascal VOC detection data: common's reader (official ``ImageSets/Main`` splits, ``difficult``) + targets.

The paper trains on VOC 2007 trainval + 2012 trainval and tests on VOC 2007 test, so a split here is
a list of ``(root, year, image_set)`` parts, concatenated. Only ``ImageSets/Main/<image_set>.txt`` ids
are read: the starting code took every xml in ``Annotations/`` (17,125 for 2012, including the
action / person-layout ones with incomplete object labels) and split them 70/30 itself.

``difficult`` objects are left out of the *training* targets (Darknet's ``voc_label.py`` does the same)
and kept in the evaluation records, where VOC AP ignores them.

Batches carry only tensors (image, targets, record index): paths and PIL images never go through
``collate`` (the starting code's per-batch slowdown).

    python -m yolov1.voc                     # self-check on a generated synthetic VOC tree
    python -m yolov1.voc --root data --split 2012:val
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from yolo_common.data import DatasetSplit, UnreadableImage, read_voc, verify_images
from yolo_common.preprocess import open_rgb

from .augment import DetectionTransform
from .targets import collate_targets, encode_targets


def parse_parts(spec: str) -> list[tuple[str, str]]:
    """``"2007:trainval,2012:trainval"`` -> ``[("2007", "trainval"), ("2012", "trainval")]``."""
    parts = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if ":" not in item:
            raise ValueError(f"VOC split part {item!r} is not YEAR:IMAGE_SET (e.g. 2012:trainval)")
        year, image_set = item.split(":", 1)
        parts.append((year.strip(), image_set.strip()))
    if not parts:
        raise ValueError(f"empty VOC split spec {spec!r}")
    return parts


def read_voc_parts(root: str | Path, spec: str, *, class_names: Sequence[str] | None = None,
                   verify: bool = False) -> list[DatasetSplit]:
    """Reads every ``YEAR:IMAGE_SET`` part of ``spec`` under ``root`` (the folder holding ``VOCdevkit``).

    Args:
        verify: fully decode every image and drop (and count) the ones that fail (costs a full decode
            per image, ~1 min for VOC07+12 on 8 threads); without it a corrupt image fails when loaded,
            naming the file.

    Raises:
        FileNotFoundError / ValueError from ``read_voc``: missing split file or xml, unknown class name
        (the message names the xml and the class).
    """
    splits = []
    for year, image_set in parse_parts(spec):
        split = read_voc(root, image_set, year, class_names=class_names)
        if verify:
            split = verify_images(split)
        splits.append(split)
    names = {tuple(s.class_names) for s in splits}
    if len(names) > 1:
        raise ValueError(f"VOC parts of {spec!r} under {root} disagree on the class list: {names}")
    return splits


class VOCDetection(Dataset):
    """Images + YOLO targets from one or more VOC splits.

    Args:
        splits: from ``read_voc_parts``; records are concatenated in order.
        transform: resize/augment; its ``size`` must be ``64 * S``.
        S, B: grid and predictors per cell (C = number of classes of the splits).
        use_difficult: train on difficult objects too (default off, as Darknet).
        seed: base seed for the augmentation RNG (combined with the epoch and index, so a worker's
            draws do not depend on which worker got the item).
    """

    def __init__(self, splits: Sequence[DatasetSplit], transform: DetectionTransform, S: int = 7, B: int = 2,
                 *, use_difficult: bool = False, seed: int = 0) -> None:
        self.splits = list(splits)
        self.records = [r for s in self.splits for r in s.records]
        self.class_names = self.splits[0].class_names
        self.index = [s.category_id_to_index for s in self.splits for _ in s.records]
        self.transform = transform
        self.S, self.B, self.C = S, B, len(self.class_names)
        self.use_difficult = use_difficult
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New augmentation draws every epoch (call before iterating)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
        """Image ``i`` as RGB and its (non-difficult unless asked) pixel xyxy boxes and class indices."""
        r = self.records[i]
        try:
            img = open_rgb(r.path)
        except OSError as e:  # open_rgb turns every decoder failure into an OSError naming the file
            # UnreadableImage: the loaders' SkipUnreadable counts and skips it (see training.make_loader)
            raise UnreadableImage(str(e)) from e   # open_rgb's message already names the file
        keep = np.ones(len(r), bool) if self.use_difficult else ~r.difficult
        labels = np.array([self.index[i][int(c)] for c in r.category_ids[keep]], np.int64)
        return img, r.boxes[keep], labels

    def describe(self, i: int) -> str:
        return str(self.records[i].path)

    def placeholder(self, i: int):
        """What evaluation gets for an unreadable image: a blank input with index ``-1 - i``, so
        ``evaluate_detection`` scores image ``i`` as "no detections" and leaves it out of the loss."""
        x = torch.zeros(3, self.transform.size, self.transform.size)
        empty = encode_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), self.S, self.B, self.C)
        return x, empty, -1 - i

    def __getitem__(self, i: int):
        img, boxes, labels = self.load(i)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        x, cxcywh, labels = self.transform(img, boxes, labels, rng)
        target = encode_targets(torch.from_numpy(cxcywh), torch.from_numpy(labels), self.S, self.B, self.C)
        return x, target, i


def collate(batch):
    """``(images (N,3,H,W), targets dict of stacked tensors, indices (N,))``."""
    images, targets, idx = zip(*batch)
    return torch.stack(images), collate_targets(list(targets)), torch.tensor(idx, dtype=torch.int64)


def main(argv: Sequence[str] | None = None) -> None:
    """Prints shapes for one batch; without ``--root`` it generates a small synthetic VOC tree first."""
    ap = argparse.ArgumentParser(prog="python -m yolov1.voc", description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="folder holding VOCdevkit/ (default: synthetic)")
    ap.add_argument("--split", default=None, help="YEAR:IMAGE_SET[,...] (default 2012:train)")
    ap.add_argument("--size", type=int, default=448)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root, spec = a.root, a.split or "2012:train"
        if root is None:
            from yolo_common.synthetic import make_synthetic

            root = make_synthetic(tmp, layouts=("voc",), num_train=8, num_val=4, image_size=160)["voc"]
        splits = read_voc_parts(root, spec)
        ds = VOCDetection(splits, DetectionTransform(a.size, train=True), S=a.size // 64)
        x, t, idx = collate([ds[i] for i in range(min(4, len(ds)))])
        n_obj = int(t["slots"].sum()) + int(t["dropped"].sum())
        print(f"{len(ds)} images, classes {ds.class_names}")
        print(f"batch: images {tuple(x.shape)}, target boxes {tuple(t['boxes'].shape)}, "
              f"slots {tuple(t['slots'].shape)}, classes {tuple(t['classes'].shape)}, objects {n_obj}")
        ok = x.shape[-1] == a.size and torch.isfinite(x).all() and t["classes"].shape[-1] == ds.C
        print("self-check:", "OK" if ok else "FAILED")
        if not ok:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
