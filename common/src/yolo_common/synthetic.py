"""A seeded shapes detection set, written in the COCO, YOLO and VOC layouts (seconds, no downloads).

Filled shapes of random colour and size on a noisy gradient; every box is the tight pixel extent of its
shape's mask, so a detector can in principle reach mAP ~1. Same seed -> byte-identical annotation files.
Used by tests and smoke runs of every project:

    python -m yolo_common.synthetic --out runs/shapes --num-train 64 --num-val 16
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Shapes by name; a class whose name is not here gets the next unused shape, so any class list up to
# len(_SHAPES) long works and no two classes share a shape (which would make them unlearnable).
_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring", "bar")
_MARKER = ".yolo_common_synthetic"  # lets a re-run wipe its own output, and only its own
_DIFFICULT_MAX_SIDE = 12  # boxes with both sides under this many px are VOC "difficult"


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, s: float) -> np.ndarray:
    """Boolean mask of ``shape`` of size ``s`` centred at ``(cx, cy)`` (pixel-centre grids xx, yy)."""
    dx, dy, r = xx - cx, yy - cy, s / 2
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":  # apex up: half-width grows from 0 at the top to r at the base
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "cross":
        arm = max(r / 3, 1.0)
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
        return inside & ((np.abs(dx) <= arm) | (np.abs(dy) <= arm))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "bar":  # wide, flat rectangle
        return (np.abs(dx) <= r) & (np.abs(dy) <= max(r / 3, 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def _assign_shapes(class_names: Sequence[str]) -> list[str]:
    if len(class_names) > len(_SHAPES):
        raise ValueError(f"at most {len(_SHAPES)} classes (one distinct shape each), got {len(class_names)}")
    free = [s for s in _SHAPES if s not in class_names]
    return [n if n in _SHAPES else free.pop(0) for n in class_names]


def _overlap_of_smaller(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _draw(rng: np.random.Generator, w: int, h: int, shapes: list[str], max_objects: int):
    """One image: ``(uint8 HxWx3, boxes [[x1,y1,x2,y2]], class indices, difficult flags)``."""
    # Background: a gradient between two random colours in a random direction, plus pixel noise, so the
    # model cannot find objects by "anything that is not flat".
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    t = (xx * np.cos(angle) + yy * np.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0 + (c1 - c0) * t[..., None] + rng.normal(0, 8, (h, w, 3))

    boxes, classes, difficult = [], [], []
    side = min(w, h)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        k = int(rng.integers(len(shapes)))
        colour = rng.uniform(0, 255, 3)
        tiny = rng.random() < 0.12
        for _attempt in range(20):  # re-place rather than let a new shape hide an earlier one
            s = rng.uniform(6, 10) if tiny else rng.uniform(0.12, 0.45) * side
            s = min(s, side - 2)
            cx, cy = rng.uniform(s / 2 + 1, w - s / 2 - 1), rng.uniform(s / 2 + 1, h - s / 2 - 1)
            mask = _shape_mask(shapes[k], xx, yy, cx, cy, s)
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]  # tight pixel extent
            if all(_overlap_of_smaller(box, b) < 0.4 for b in boxes):
                img[mask] = colour
                boxes.append(box)
                classes.append(k)
                difficult.append(max(box[2] - box[0], box[3] - box[1]) < _DIFFICULT_MAX_SIDE)
                break
    return np.clip(img, 0, 255).astype(np.uint8), boxes, classes, difficult


def _prepare(d: Path) -> None:
    """Empty a layout folder we wrote before; refuse to touch one we did not."""
    if d.exists():
        if not (d / _MARKER).is_file() and any(d.iterdir()):
            raise FileExistsError(f"{d} exists and was not written by make_synthetic; refusing to overwrite")
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / _MARKER).write_text("written by yolo_common.synthetic.make_synthetic\n")


def make_synthetic(out_dir: str | Path, *, layouts: Sequence[str] = ("coco", "yolo", "voc"), num_train: int = 32,
                   num_val: int = 16, image_size: int | tuple[int, int] = 160,
                   class_names: Sequence[str] = ("circle", "square", "triangle"), max_objects: int = 4,
                   seed: int = 0) -> dict[str, Path]:
    """Generate the shapes set and write it in the requested layouts.

    Args:
        out_dir: output folder; layouts go to ``<out_dir>/coco``, ``<out_dir>/yolo``, ``<out_dir>/voc``
            (each emptied first if an earlier call wrote it).
        layouts: any of "coco", "yolo", "voc".
        num_train, num_val: images per split (COCO: train2017/val2017; YOLO and VOC: train/val).
        image_size: side in pixels, or ``(width, height)``.
        class_names: up to 7 classes; names out of circle/square/triangle/diamond/cross/ring/bar get
            that shape, others the next unused one.
        max_objects: objects per image are 1..max_objects (fewer if they do not fit without hiding others).
        seed: same seed -> identical images and annotation files.

    Returns:
        ``{"coco": root, "yolo": data.yaml, "voc": root}`` for the layouts written (each readable by
        ``load_split``; VOC boxes of at most 11 px are marked difficult, COCO and YOLO have no such flag).
    """
    from PIL import Image

    from .data.coco import write_coco
    from .data.records import DatasetSplit, ImageRecord
    from .data.voc import write_voc
    from .data.yolo import write_yolo

    layouts = tuple(layouts)
    unknown = set(layouts) - {"coco", "yolo", "voc"}
    if unknown or not layouts:
        raise ValueError(f"layouts must be a non-empty subset of coco, yolo, voc; got {layouts}")
    w, h = (image_size, image_size) if isinstance(image_size, int) else map(int, image_size)
    if min(w, h) < 32 or max_objects < 1:
        raise ValueError(f"need image_size >= 32 and max_objects >= 1, got {(w, h)}, {max_objects}")
    shapes = _assign_shapes(class_names)
    out = Path(out_dir)
    for layout in layouts:
        _prepare(out / layout)
    # Images are encoded once, into the COCO tree when it is wanted (else a scratch folder), and
    # hardlinked into the other layouts: no extra disk, and every layout sees the same pixels.
    stage = out / "coco" if "coco" in layouts else out / ".synthetic_images"
    if stage.name != "coco":
        _prepare(stage)
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]  # COCO ids start at 1

    rng = np.random.default_rng(seed)
    splits, image_id = {}, 0
    for name, count in (("train", num_train), ("val", num_val)):
        img_dir = stage / f"{name}2017"
        img_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for _ in range(count):
            image_id += 1  # unique across splits, so VOC's shared JPEGImages/ folder has no clashes
            pixels, boxes, classes, difficult = _draw(rng, w, h, shapes, max_objects)
            path = img_dir / f"{image_id:012d}.jpg"
            Image.fromarray(pixels).save(path, quality=95)
            records.append(ImageRecord(path=path, width=w, height=h, boxes=boxes,
                                       category_ids=[c + 1 for c in classes], difficult=difficult,
                                       image_id=image_id))
        splits[name] = DatasetSplit(records=records, categories=categories, root=stage, split=f"{name}2017",
                                    layout="coco")

    paths: dict[str, Path] = {}
    for name, split in splits.items():
        if "coco" in layouts:
            write_coco(split, out / "coco", f"{name}2017")
            paths["coco"] = out / "coco"
        if "yolo" in layouts:
            paths["yolo"] = write_yolo(split, out / "yolo", name, list(class_names))
        if "voc" in layouts:
            write_voc(split, out / "voc", name)
            paths["voc"] = out / "voc"
    if stage.name != "coco":
        shutil.rmtree(stage)  # the hardlinks in the other layouts keep the files alive
    return {k: paths[k] for k in layouts}


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """CLI: ``python -m yolo_common.synthetic --out DIR [...]``; prints ``layout: path`` per layout."""
    ap = argparse.ArgumentParser(prog="python -m yolo_common.synthetic", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--num-train", type=int, default=32)
    ap.add_argument("--num-val", type=int, default=16)
    ap.add_argument("--image-size", default="160", help="N or WxH")
    ap.add_argument("--max-objects", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layouts", default="coco,yolo,voc", help="comma-separated subset of coco,yolo,voc")
    ap.add_argument("--class-names", default="circle,square,triangle", help="comma-separated")
    a = ap.parse_args(argv)
    size = tuple(int(v) for v in a.image_size.lower().split("x"))
    paths = make_synthetic(a.out, layouts=[s for s in a.layouts.split(",") if s], num_train=a.num_train,
                           num_val=a.num_val, image_size=size[0] if len(size) == 1 else size,
                           class_names=[s for s in a.class_names.split(",") if s],
                           max_objects=a.max_objects, seed=a.seed)
    for layout, p in paths.items():
        print(f"{layout}: {p}")
    return paths


if __name__ == "__main__":
    main()
