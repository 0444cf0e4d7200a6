"""ImageNet-100 (Kaggle ``ambityga/imagenet100``) in its usual folder layout, for backbone pretraining.

    <root>/Labels.json            {"n01440764": "tench, Tinca tinca", ...}: class id = position in this file
    <root>/train.X1 .. train.X4/  <wnid>/*.JPEG (the 100 class folders split over four folders)
    <root>/val.X/                 <wnid>/*.JPEG (50 per class)

The flattened variant (``train/`` and ``val/``) is read too. The class order is that of ``Labels.json``
(JSON objects keep their order), fixed for the run and saved with every checkpoint (``classes.json``),
because a reordered file would silently permute the labels of a resumed run.

Bad input: a missing ``Labels.json`` / split folder raises ``FileNotFoundError`` naming it; a class
folder not listed in ``Labels.json`` raises ``ValueError`` naming the folder; non-image files are
skipped and counted; with ``verify=True`` undecodable images are skipped and counted (one warning).

    python -m yolov1.imagenet100                 # self-check on a generated tiny tree
    python -m yolov1.imagenet100 --root data/imagenet100
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from yolo_common.data import SkipCounter, UnreadableImage
from yolo_common.preprocess import open_rgb

from .augment import MEAN, STD

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


@dataclass
class ClassificationSplit:
    """One split: ``(path, class index)`` samples, the class order, and what was skipped."""

    samples: list[tuple[Path, int]]
    wnids: list[str]
    names: list[str]
    root: Path
    split: str
    skipped: SkipCounter = field(default_factory=SkipCounter)

    def __len__(self) -> int:
        return len(self.samples)

    def classes_json(self) -> dict:
        """What is saved next to every checkpoint: the class order and where it came from."""
        return {"wnids": self.wnids, "names": self.names, "source": str(self.root / "Labels.json")}


def read_labels(root: Path) -> tuple[list[str], list[str]]:
    """``(wnids, names)`` in ``Labels.json`` order."""
    path = root / "Labels.json"
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet-100 class file {path} does not exist "
                                f"(expected <root>/Labels.json, see scripts/download_imagenet_100.bash)")
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{path}: expected a non-empty {{wnid: name}} object")
    return list(labels), [str(v).split(",")[0].strip() for v in labels.values()]


def _split_dirs(root: Path, split: str) -> list[Path]:
    if split == "train":
        dirs = sorted(d for d in root.glob("train.X*") if d.is_dir())
    elif split == "val":
        dirs = sorted(d for d in root.glob("val.X*") if d.is_dir())
    else:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not dirs and (root / split).is_dir():
        dirs = [root / split]  # the flattened layout
    if not dirs:
        raise FileNotFoundError(f"no {split} folders under {root} (expected {split}.X*/ or {split}/)")
    return dirs


def _decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # truncated, corrupt, not an image: the loader would fail the same way
        return False


def read_imagenet100(root: str | Path, split: str = "train", *, verify: bool = False,
                     workers: int = 8) -> ClassificationSplit:
    """Lists one split of an ImageNet-100 folder.

    Args:
        root: the folder holding ``Labels.json``.
        split: "train" (every ``train.X*``) or "val" (``val.X``).
        verify: decode every image, skipping and counting failures (costs one full decode per image,
            a few minutes for the 126k training images on 8 threads).
        workers: threads for ``verify``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet-100 root {root} does not exist")
    wnids, names = read_labels(root)
    index = {w: k for k, w in enumerate(wnids)}
    skipped = SkipCounter()
    samples: list[tuple[Path, int]] = []
    for d in _split_dirs(root, split):
        for cls_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            if cls_dir.name not in index:
                raise ValueError(f"class folder {cls_dir} is not listed in {root / 'Labels.json'}")
            for f in sorted(cls_dir.iterdir()):
                if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
                    skipped.add("not an image file", str(f))
                    continue
                samples.append((f, index[cls_dir.name]))
    if verify and samples:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            ok = list(pool.map(_decodes, [p for p, _ in samples]))
        for (p, _), good in zip(samples, ok):
            if not good:
                skipped.add("image does not decode", str(p))
        samples = [s for s, good in zip(samples, ok) if good]
    present = {c for _, c in samples}
    missing = [wnids[k] for k in range(len(wnids)) if k not in present]
    if missing:
        skipped.add("class without images", missing[0], len(missing))
    if skipped.counts:
        log.warning("ImageNet-100 %s split of %s: skipped %s", split, root, skipped.summary())
    if not samples:
        raise FileNotFoundError(f"no images found in the {split} split of {root}")
    return ClassificationSplit(samples, wnids, names, root, split, skipped)


def classification_transform(size: int, train: bool):
    """Pretraining transform: random-resized crop + flip (train), resize + centre crop (eval)."""
    from torchvision.transforms import v2 as T

    ops = ([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()] if train
           else [T.Resize(int(round(size * 256 / 224)), antialias=True), T.CenterCrop(size)])
    return T.Compose([T.PILToTensor(), *ops, T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


class ImageFolderDataset(Dataset):
    """``(image tensor, class index)`` pairs of a ``ClassificationSplit``."""

    def __init__(self, split: ClassificationSplit, transform) -> None:
        self.split = split
        self.transform = transform
        self.epoch = 0   # read by training.WorkerSeeder: the random transforms are seeded per epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        path, label = self.split.samples[i]
        try:
            img = open_rgb(path)
        except OSError as e:  # counted and skipped by SkipUnreadable (training.make_loader)
            raise UnreadableImage(str(e)) from e   # open_rgb's message already names the file
        return self.transform(img), label

    def describe(self, i: int) -> str:
        return str(self.split.samples[i][0])

    def placeholder(self, i: int):
        """Evaluation's stand-in for an unreadable image: label -1, left out of the accuracy."""
        return self.transform(Image.new("RGB", (8, 8))), -1   # the transform gives the input's shape


def write_tiny_imagenet(root: str | Path, class_wnids: Sequence[str], images_per_class: int = 4,
                        size: int = 64, seed: int = 0, val_per_class: int = 2) -> Path:
    """Writes a tiny ImageNet-100-style tree (``Labels.json``, ``train.X1..2``, ``val.X``) of solid-ish
    colour images, one hue per class: for self-checks and tests, never for real pretraining."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = {w: f"class {k}, synthetic" for k, w in enumerate(class_wnids)}
    root.mkdir(parents=True, exist_ok=True)
    (root / "Labels.json").write_text(json.dumps(labels, indent=1), encoding="utf-8")
    for k, w in enumerate(class_wnids):
        colour = np.array([(k * 97) % 256, (k * 181 + 60) % 256, (k * 43 + 120) % 256], np.float32)
        for split, n in ((f"train.X{1 + k % 2}", images_per_class), ("val.X", val_per_class)):
            d = root / split / w
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                px = np.clip(colour + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{w}_{i}.JPEG", quality=90)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Prints the split sizes and one batch's shapes; without ``--root`` it uses a generated tiny tree."""
    ap = argparse.ArgumentParser(prog="python -m yolov1.imagenet100", description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = a.root or write_tiny_imagenet(tmp, [f"n{k:08d}" for k in range(5)])
        train, val = read_imagenet100(root, "train"), read_imagenet100(root, "val")
        ds = ImageFolderDataset(train, classification_transform(a.size, train=True))
        x = torch.stack([ds[i][0] for i in range(min(4, len(ds)))])
        print(f"{len(train.wnids)} classes (first: {train.wnids[0]} {train.names[0]!r}); "
              f"train {len(train)} images, val {len(val)}")
        print(f"batch: images {tuple(x.shape)}")
        ok = x.shape[-1] == a.size and torch.isfinite(x).all()
        print("self-check:", "OK" if ok else "FAILED")
        if not ok:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
