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


class DetectionWriter:
    """The output of a detect/demo CLI over a list of images: ``<out>/<name>.jpg`` with the boxes drawn and
    one ``<out>/detections.json`` (``{..meta, "images": [{"file", "output", "width", "height",
    "detections": [{"class", "score", "bbox": [x1, y1, x2, y2]}]}], "failed": [files]}``).

    Output names come from :func:`yolo_common.data.output_names` (unique when stems repeat). An unreadable
    input is named on stderr by :meth:`skip` and listed under ``failed``; the rest still run.
    """

    def __init__(self, out, files: Sequence, names: Sequence[str], tag: str):
        from pathlib import Path

        from .data import output_names

        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.names, self.tag = list(names), tag
        self._stems = output_names([Path(f) for f in files])
        self.images: list[dict] = []
        self.failed: list[str] = []

    def skip(self, file, error) -> None:
        import sys

        print(f"[{self.tag}] skipped {file}: {error}", file=sys.stderr)
        self.failed.append(str(file))

    def add(self, k: int, file, img, boxes, labels, scores=None) -> dict:
        """Draws and records image ``k`` (``img`` RGB array or PIL; pixel xyxy ``boxes``). ``scores=None``
        (boxes without a score, e.g. ground truth): drawn with the class name only, ``"score": null``."""
        name = self._stems[k]
        im = draw_boxes(img, boxes, labels, self.names, scores)
        im.save(self.out / f"{name}.jpg", quality=90)
        label = lambda c: self.names[c] if 0 <= c < len(self.names) else str(c)  # noqa: E731
        each = scores if scores is not None else [None] * len(labels)
        rec = {"file": str(file), "output": f"{name}.jpg", "width": im.width, "height": im.height,
               "detections": [{"class": label(int(c)), "score": None if s is None else float(s),
                               "bbox": [round(float(v), 2) for v in b]} for b, c, s in zip(boxes, labels, each)]}
        self.images.append(rec)
        return rec

    def close(self, **meta) -> dict:
        """Writes detections.json (atomically) and prints the one-line summary; returns the counts."""
        from .checkpoint import atomic_write_json

        atomic_write_json(self.out / "detections.json", {**meta, "images": self.images, "failed": self.failed})
        n = sum(len(r["detections"]) for r in self.images)
        print(f"[{self.tag}] {len(self.images)} images, {n} detections"
              f"{f', {len(self.failed)} unreadable skipped' if self.failed else ''} -> {self.out}")
        return {"images": len(self.images), "failed": self.failed, "out": str(self.out)}


def samples_grid(records, detections: list[dict], categories: Sequence[dict], out_png, *, n: int = 4,
                 score_threshold: float = 0.3, cell: int = 256) -> str:
    """A PNG of ``n`` validation images, ground truth (left) next to predictions (right), for a run's
    ``samples/`` folder.

    Args:
        records: the split's :class:`~yolo_common.data.ImageRecord` list (the first ``n`` that decode).
        detections: COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh in image pixels,
            ``score``), e.g. a run's ``detections.json`` or ``evaluate_onnx``'s.
        categories: ``[{"id", "name"}]`` of the split (names for the labels).
        out_png: where to write.
        score_threshold: predictions drawn (all GT boxes are).
        cell: side of each panel in pixels (images are letterboxed into it).

    Returns:
        The path written, as a string.
    """
    from pathlib import Path

    from .preprocess import read_image

    idx = {int(c["id"]): k for k, c in enumerate(categories)}
    names = [str(c["name"]) for c in categories]
    by_image: dict[int, list[dict]] = {}
    for d in detections:
        if d["score"] >= score_threshold:
            by_image.setdefault(int(d["image_id"]), []).append(d)
    panels = []
    for r in records:
        if len(panels) == n:
            break
        try:
            img = read_image(r.path)
        except OSError:
            continue
        gt = draw_boxes(img, r.boxes, [idx.get(int(c), -1) for c in r.category_ids], names)
        dets = sorted(by_image.get(int(r.image_id), []), key=lambda d: -d["score"])
        boxes = [[d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]] for d in dets]
        pred = draw_boxes(img, boxes, [idx.get(int(d["category_id"]), -1) for d in dets], names,
                          [d["score"] for d in dets])
        panels.append((gt, pred))
    rows = max(len(panels), 1)
    grid = Image.new("RGB", (2 * cell, rows * (cell + 14)), (255, 255, 255))
    d = ImageDraw.Draw(grid)
    for k, pair in enumerate(panels):
        for j, im in enumerate(pair):
            s = cell / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
            grid.paste(im, (j * cell, k * (cell + 14) + 14))
            d.text((j * cell + 2, k * (cell + 14)), "ground truth" if j == 0 else
                   f"predictions (score >= {score_threshold:g})", fill=(0, 0, 0))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return str(out)
