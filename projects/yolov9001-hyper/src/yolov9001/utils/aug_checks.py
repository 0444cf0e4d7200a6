"""The augmentation validator's machine check and pictures (``tools/validate_augmentations.py``).

**The check works on any dataset.** The real pixels cannot say where an object is, but its ground-truth box
can. ``BoxMaskDataset`` replaces every image with a mask of the same size: 255 inside the image's boxes and
0 elsewhere, with a pad value of 0. The same augmentation (same seed, epoch and index, so the same random
draws; HSV drawn but not applied) runs on the mask, and then each output box is tested against the warped
mask (``check_boxes``):

- **fill**: at least ``min_fill`` of the box's pixels are mask. A rotated, sheared or perspective box is the
  hull of the warped rectangle, so its fill falls with the angle and the aspect ratio (1/2 for a square at
  45 degrees, 0.19 for an 8:1 bar at 30). The suite therefore asks 0.1 there and 0.7 elsewhere, and leaves
  the rest to the edge test;
- **tight**: each of the four edge strips (``edge`` px wide) touches the mask. A box that is shifted, scaled
  or flipped away from its object leaves at least one strip empty. A box that touches the canvas border is
  judged on fill only: it is the clipped hull of the whole warped object, and the vertex that made one of its
  sides may lie outside the canvas (the CPU ops and ultralytics' clip the same way).

- **recall**: the share of mask pixels that lie in some kept box (``edge`` px of slack). A box dropped by
  mistake leaves its object uncovered; an object that the box rules drop (under ``min_visible_frac`` visible)
  leaves at most that fraction of itself, so a correct op keeps recall high.

Boxes under ``min_check`` px on a side are counted but not judged, because bilinear edges decide their fill.
A case passes when it judged at least one box, at least ``pass_fraction`` of the judged boxes pass and the
recall is at least ``min_recall`` (``tools/validate_augmentations.py``). What it cannot see: shifts under the
edge strip (3 px), and a box moved onto another object of the mask.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap

import numpy as np
from PIL import Image, ImageDraw

from .dataset import DetectionDataset

MASK_THRESHOLD = 64   # a mixup blend (r ~ 0.5) of mask and background is ~128: still "object"


class BoxMaskDataset(DetectionDataset):
    """``DetectionDataset`` whose images are box masks (255 in the boxes), padded with 0."""

    def __init__(self, split, cfg, *args, **kwargs):
        super().__init__(split, dataclasses.replace(cfg, pad_value=0), *args, **kwargs)
        self.colour = False

    def load(self, i: int):
        img, boxes, cls = super().load(i)
        mask = np.zeros_like(img)
        for x1, y1, x2, y2 in boxes:
            # the pixels whose centres lie in the box (the continuous convention of augment)
            mask[max(math.ceil(y1 - 0.5), 0):math.ceil(y2 - 0.5), max(math.ceil(x1 - 0.5), 0):math.ceil(x2 - 0.5)] = 255
        return mask, boxes, cls


@dataclasses.dataclass
class BoxCheck:
    boxes: int = 0        # every output box
    judged: int = 0       # those at least min_check px on both sides
    ok: int = 0
    mask_px: int = 0      # object pixels in the augmented masks
    covered_px: int = 0   # ... of them inside some kept box

    def add(self, other: BoxCheck) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def fraction(self) -> float:
        """Share of judged boxes on their objects (0 when nothing was judged: a case must judge something)."""
        return self.ok / self.judged if self.judged else 0.0

    @property
    def recall(self) -> float:
        return self.covered_px / self.mask_px if self.mask_px else 1.0


def check_boxes(mask: np.ndarray, boxes: np.ndarray, min_fill: float, edge: int = 3, min_check: float = 6.0) -> BoxCheck:
    """mask HxW (or HxWx3, 0..255) after augmentation, boxes [n, 4] xyxy px -> how many stay on their objects."""
    m = (mask.max(-1) if mask.ndim == 3 else mask) > MASK_THRESHOLD
    hgt, wid = m.shape
    out = BoxCheck(boxes=len(boxes))
    covered = np.zeros_like(m)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64):
        covered[max(int(y1) - edge, 0):math.ceil(y2) + edge, max(int(x1) - edge, 0):math.ceil(x2) + edge] = True
    out.mask_px, out.covered_px = int(m.sum()), int((m & covered).sum())
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64):
        if x2 - x1 < min_check or y2 - y1 < min_check:
            continue
        out.judged += 1
        # the pixels whose centres lie in the box, as BoxMaskDataset paints them
        xa, xb = max(math.ceil(x1 - 0.5), 0), math.ceil(x2 - 0.5)
        ya, yb = max(math.ceil(y1 - 0.5), 0), math.ceil(y2 - 0.5)
        sub = m[ya:yb, xa:xb]
        if not sub.size:
            continue
        fill = sub.mean()
        e = min(edge, sub.shape[0], sub.shape[1])
        border = x1 <= 0.5 or y1 <= 0.5 or x2 >= wid - 0.5 or y2 >= hgt - 0.5
        tight = border or (sub[:, :e].any() and sub[:, -e:].any() and sub[:e].any() and sub[-e:].any())
        out.ok += bool(fill >= min_fill and tight)
    return out


def to_yolo(boxes: np.ndarray, size: int) -> np.ndarray:
    """xyxy px -> YOLO-normalised cx, cy, w, h (what a label file holds)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack(((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1) / size


def from_yolo(yolo: np.ndarray, size: int) -> np.ndarray:
    cx, cy, w, h = (yolo * size).T
    return np.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)


def annotate(img: np.ndarray, boxes: np.ndarray, labels, names, lines: list[str]) -> Image.Image:
    """The canvas with its boxes drawn back from YOLO-normalised coordinates, under a header of text lines."""
    from yolo_common.draw import draw_boxes

    size = img.shape[0]
    drawn = draw_boxes(img, from_yolo(to_yolo(boxes, size), size).tolist(), list(labels), names)
    scale = max(1, 320 // size)   # small canvases are upscaled so the text stays readable
    if scale > 1:
        drawn = drawn.resize((drawn.width * scale, drawn.height * scale), Image.NEAREST)
    lines = [part for line in lines for part in textwrap.wrap(line, max(20, drawn.width // 6))]
    head = 12 * len(lines) + 4
    out = Image.new("RGB", (drawn.width, drawn.height + head), (255, 255, 255))
    out.paste(drawn, (0, head))
    d = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        d.text((3, 2 + 12 * k), line, fill=(0, 0, 0))
    return out


def grid(tiles: list[Image.Image], cols: int | None = None) -> Image.Image:
    cols = cols or int(math.ceil(math.sqrt(len(tiles))))
    rows = int(math.ceil(len(tiles) / cols))
    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    out = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        out.paste(t, (c * w, r * h))
    return out
