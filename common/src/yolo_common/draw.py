"""Boxes drawn on an image, the same way in every project's detect / preview output."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]


def draw_boxes(img, boxes, labels, names: Sequence[str], scores=None) -> Image.Image:
    """RGB image (uint8 HxWx3 array or PIL) + pixel xyxy boxes -> a PIL image with one colour per class
    and a 'name score' tag above each box (a label outside ``names`` is drawn as its number)."""
    im = img.copy() if isinstance(img, Image.Image) else Image.fromarray(np.ascontiguousarray(img))
    d = ImageDraw.Draw(im)
    for k, (box, lab) in enumerate(zip(boxes, labels)):
        color = PALETTE[int(lab) % len(PALETTE)]
        d.rectangle([float(v) for v in box], outline=color, width=2)
        name = names[int(lab)] if 0 <= int(lab) < len(names) else str(int(lab))
        tag = name if scores is None else f"{name} {float(scores[k]):.2f}"
        x0, y0 = float(box[0]), max(float(box[1]) - 11, 0)
        d.rectangle([x0, y0, x0 + d.textlength(tag) + 4, y0 + 11], fill=color)
        d.text((x0 + 2, y0), tag, fill=(255, 255, 255))
    return im
