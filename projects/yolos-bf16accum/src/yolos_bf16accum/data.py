"""Datasets: COCO 2017 and synthetic through yolo_common's COCO reader, CPPE-5 through ``datasets``.

Every split becomes a :class:`DetectionDataset` yielding ``(pixel_values, target)`` with
``target = {"class_labels", "boxes" (cx, cy, w, h normalised), "image_id", "orig_size" (h, w)}`` (the
label format of transformers' DETR-style loss) plus a COCO ground-truth dict for ``coco_map``.

Images are resized to one fixed ``(h, w)`` without padding. That distorts the aspect ratio a little
(as upstream's 512 x 512 evaluation does) but keeps normalised boxes identical before and after the
resize, so predictions map back to original pixels by one multiplication: no padded-canvas offsets (the
HF image processor's ``do_pad=True`` skews boxes when images in a batch differ in size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from yolo_common.data import UnreadableImage

from yolos_bf16accum.config import TrainConfig

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Sample:
    """One image's annotations in pixel xyxy; ``load`` returns the RGB image."""

    image_id: int
    width: int
    height: int
    boxes: np.ndarray          # (n, 4) xyxy pixels
    category_ids: np.ndarray   # (n,) dataset ids
    load: Callable[[], Image.Image]
    source: str = ""           # the file (or "dataset row i") behind it, for error messages


@dataclass
class LabelSpace:
    """Dataset category ids <-> model label indices.

    ``coco_ids=True`` uses the category id itself as the label (DETR/YOLOS convention for COCO, so the
    pretrained 91-way head is reused); otherwise labels are 0..C-1 in category-id order.
    """

    categories: list[dict]
    coco_ids: bool = False

    @property
    def cat_to_label(self) -> dict[int, int]:
        if self.coco_ids:
            return {c["id"]: c["id"] for c in self.categories}
        return {c["id"]: k for k, c in enumerate(self.categories)}

    @property
    def label_to_cat(self) -> dict[int, int]:
        return {v: k for k, v in self.cat_to_label.items()}

    @property
    def num_labels(self) -> int:
        return max(self.cat_to_label.values()) + 1

    @property
    def id2label(self) -> dict[int, str]:
        names = {self.cat_to_label[c["id"]]: c["name"] for c in self.categories}
        return {i: names.get(i, "N/A") for i in range(self.num_labels)}


def aspect_size(h: int, w: int, shortest: int = 512, longest: int = 864, multiple: int = 16) -> tuple[int, int]:
    """YOLOS's evaluation size: shortest edge ``shortest`` unless the longest would pass ``longest``,
    aspect kept, each side rounded to a multiple of the patch size (so no partial patch is dropped; the
    rounding changes each side by < 1 patch and never takes it past ``longest``; boxes still map back
    exactly since they are normalised to the resized image)."""
    scale = min(shortest / min(h, w), longest / max(h, w))

    def side(x: float) -> int:
        r = max(multiple, int(x / multiple + 0.5) * multiple)
        return r if r <= longest else max(multiple, int(x // multiple) * multiple)   # never past longest

    return side(h * scale), side(w * scale)


def build_transforms(image_size: tuple[int, int] | None, train: bool, augment: bool = True):
    """torchvision v2 pipeline: (train) augmentations as in the HF detection example, then resize.

    The HF example uses albumentations; these are the torchvision equivalents (no OpenCV dependency):
    horizontal flip p=0.5, brightness/contrast p=0.5, hue/saturation p=0.1, blur p=0.1, perspective
    p=0.1, then boxes under 25 px² are dropped. Eval gets the resize and normalisation only.
    """
    from torchvision.transforms import v2

    ops = [v2.ToImage()]
    if train and augment:
        ops += [
            v2.RandomHorizontalFlip(0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5),
            v2.RandomApply([v2.ColorJitter(saturation=0.2, hue=0.05)], p=0.1),
            v2.RandomApply([v2.GaussianBlur(7, sigma=(0.1, 2.0))], p=0.1),
            v2.RandomPerspective(distortion_scale=0.2, p=0.1),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(min_area=25.0),
        ]
    if image_size is not None:      # None: the caller resizes (aspect-preserving evaluation)
        ops.append(v2.Resize(tuple(image_size), antialias=True))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(ops)


class DetectionDataset(torch.utils.data.Dataset):
    """Samples -> ``(pixel_values [3, h, w], target)`` (see the module docstring)."""

    def __init__(self, samples: list[Sample], labels: LabelSpace, image_size: tuple[int, int],
                 train: bool, augment: bool = True, aspect: tuple[int, int] | None = None) -> None:
        """``aspect=(shortest, longest)``: resize each image with :func:`aspect_size` instead of to the
        fixed ``image_size`` (evaluation as YOLOS reports its AP; sizes then differ per image)."""
        self.samples = samples
        self.labels = labels
        self.cat_to_label = labels.cat_to_label
        self.aspect = aspect
        self.transforms = build_transforms(None if aspect else image_size, train, augment)

    def __len__(self) -> int:
        return len(self.samples)

    def describe(self, i: int) -> str:
        s = self.samples[i]
        return s.source or f"image_id {s.image_id}"

    def __getitem__(self, i: int):
        from torchvision import tv_tensors

        s = self.samples[i]
        try:
            image = s.load().convert("RGB")   # PIL decodes lazily: a truncated file fails here
        except Exception as e:  # PIL: OSError, SyntaxError, ValueError...; the loaders' SkipUnreadable counts it
            raise UnreadableImage(f"{self.describe(i)}: cannot decode image ({type(e).__name__}: {e})") from e
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(s.boxes, dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=(image.height, image.width))
        labels = torch.as_tensor([self.cat_to_label[int(c)] for c in s.category_ids], dtype=torch.int64)
        if self.aspect:
            from torchvision.transforms import v2

            size = aspect_size(image.height, image.width, *self.aspect)
            image, boxes = v2.Resize(size, antialias=True)(image, boxes)
        pixels, target = self.transforms(image, {"boxes": boxes, "labels": labels})
        h, w = pixels.shape[-2:]
        xyxy = target["boxes"].as_subclass(torch.Tensor).reshape(-1, 4)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        x1, y1, x2, y2 = (xyxy / scale).clamp(0, 1).unbind(-1)
        cxcywh = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)
        return pixels, {"class_labels": target["labels"], "boxes": cxcywh, "image_id": s.image_id,
                        "orig_size": torch.tensor([s.height, s.width])}


def collate(batch):
    """Stacks the (same-size) images; targets stay a list of dicts, as the YOLOS loss wants.
    ``None`` when every image of an evaluation batch was unreadable (``evaluate`` skips it)."""
    if not batch:
        return None
    pixels, targets = zip(*batch)
    return torch.stack(pixels), list(targets)


# ---- sources ---------------------------------------------------------------------------------------

def _samples_from_split(split, drop_crowd: bool) -> list[Sample]:
    out = []
    for r in split.records:
        keep = ~r.iscrowd if drop_crowd else np.ones(len(r), bool)
        out.append(Sample(r.image_id, r.width, r.height, r.boxes[keep], r.category_ids[keep],
                          load=lambda p=r.path: Image.open(p), source=str(r.path)))
    return out


def _coco_source(root: str | Path, split_name: str, max_samples: int | None, verify: bool = False):
    from yolo_common.data.coco import read_coco, to_coco_dict, verify_images

    split = read_coco(root, split_name)
    if max_samples is not None:
        split.records = split.records[:max_samples]
    if verify:  # drops undecodable images from training *and* from the eval ground truth (counted)
        split = verify_images(split)
    # Crowd regions are never trained on; COCO eval needs them in the GT (they are "ignore" areas).
    return split.categories, _samples_from_split(split, drop_crowd=True), to_coco_dict(split)


def _load_cppe5(path: str, split: str):
    try:
        import datasets
    except ImportError as e:
        raise ImportError("--dataset cppe5 needs the 'datasets' package: pip install 'yolos-bf16accum[cppe5]'") from e
    p = Path(path)
    if p.exists():
        files = sorted(p.rglob(f"*{split}*.parquet")) if p.is_dir() else [p]
        if not files:
            raise FileNotFoundError(f"no *{split}*.parquet under {p} (expected a local CPPE-5 parquet copy)")
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    return datasets.load_dataset(path, split=split)


CPPE5_CLASSES = ("Coverall", "Face_Shield", "Gloves", "Goggles", "Mask")


def _cppe5_names(features) -> list[str]:
    """Class names from the ``objects.category`` ClassLabel (CPPE-5's five when it is a plain int)."""
    if "objects" not in features:
        raise ValueError(f"not a CPPE-5 style dataset: no 'objects' column (columns: {list(features)})")
    obj = features["objects"]
    cat = obj["category"] if isinstance(obj, dict) else obj.feature["category"]
    names = getattr(getattr(cat, "feature", cat), "names", None)
    return list(names) if names else list(CPPE5_CLASSES)


def _cppe5_source(path: str, split: str, max_samples: int | None):
    ds = _load_cppe5(path, split)
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    names = _cppe5_names(ds.features)
    categories = [{"id": k, "name": n} for k, n in enumerate(names)]
    samples, images, annotations = [], [], []
    for i, row in enumerate(ds.select_columns(["image_id", "width", "height", "objects"])):
        objects = row["objects"]
        if isinstance(objects, list):  # stored as a list of dicts rather than a dict of lists
            objects = {"bbox": [o["bbox"] for o in objects], "category": [o["category"] for o in objects]}
        xywh = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
        w, h = int(row["width"]), int(row["height"])
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
        ok = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        cats = np.asarray(objects["category"], np.int64)
        image_id = int(row["image_id"])
        samples.append(Sample(image_id, w, h, xyxy[ok], cats[ok], load=lambda i=i: ds[i]["image"],
                              source=f"{path} ({split} row {i}, image_id {image_id})"))
        images.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id}.jpg"})
        for (x1, y1, x2, y2), c in zip(xyxy[ok].tolist(), cats[ok].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(c),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                "iscrowd": 0})
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return categories, samples, gt


def build_datasets(cfg: TrainConfig, generate: bool = True):
    """Train and eval datasets, the eval COCO ground truth and the label space.

    Returns:
        ``(train_ds, eval_ds, eval_gt, labels)``.

    Raises:
        FileNotFoundError: a missing COCO root / split / annotation file (named in the message).
    """
    if cfg.dataset == "synthetic":
        from yolo_common.synthetic import make_synthetic

        out = Path(cfg.synthetic_dir or Path(cfg.output_dir) / "data")
        h, w = cfg.image_size
        # generate=False: another rank wrote it (make_synthetic empties the folder first: one writer only)
        root = out / "coco"
        if generate:
            root = make_synthetic(out, layouts=("coco",), num_train=cfg.synthetic_train,
                                  num_val=cfg.synthetic_val, image_size=(max(w, 32), max(h, 32)),
                                  seed=cfg.seed)["coco"]
        train_src = _coco_source(root, "train2017", cfg.max_train_samples, cfg.verify_images)
        eval_src = _coco_source(root, "val2017", cfg.max_eval_samples, cfg.verify_images)
        coco_ids = False
    elif cfg.dataset == "coco2017":
        train_src = _coco_source(cfg.coco_dir, "train2017", cfg.max_train_samples, cfg.verify_images)
        eval_src = _coco_source(cfg.coco_dir, "val2017", cfg.max_eval_samples, cfg.verify_images)
        coco_ids = True  # hustvl/yolos-* predict COCO category ids directly (91 + no-object)
    else:
        train_src = _cppe5_source(cfg.cppe5_path, "train", cfg.max_train_samples)
        eval_src = _cppe5_source(cfg.cppe5_path, "test", cfg.max_eval_samples)
        coco_ids = False
    labels = LabelSpace(train_src[0], coco_ids=coco_ids)
    train_ds = DetectionDataset(train_src[1], labels, cfg.image_size, train=True, augment=cfg.augment)
    eval_ds = DetectionDataset(eval_src[1], labels, cfg.image_size, train=False)
    if len(train_ds) == 0 or len(eval_ds) == 0:
        raise ValueError(f"empty split: {len(train_ds)} train / {len(eval_ds)} eval images for {cfg.dataset}")
    return train_ds, eval_ds, eval_src[2], labels
