"""``detect`` mode: an image, a folder or a glob -> annotated images + ``detections.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from yolo_common.data import list_images
from yolo_common.draw import draw_boxes
from yolo_common.preprocess import letterbox, read_image

from ..utils.progress import bar
from .export import letterbox_spec
from .validator import predict_batch, to_original


def list_sources(source: str) -> list[Path]:
    """Image files named by ``source`` (a file, a folder, or a glob pattern); a clear error when none."""
    try:
        return list_images(source)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--data {e}") from None


@torch.no_grad()
def detect(model, cfg, names: list[str], source: str, out_dir: Path, device, precision: str = "fp32") -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = letterbox_spec(cfg).with_size(cfg["imgsz"])
    model.eval()
    results, skipped = [], []
    for f in bar(list_sources(source), desc="detect", unit="img"):
        try:
            img = read_image(f)
        except OSError as e:
            skipped.append(f"{f}: {e}")
            continue
        x, meta = letterbox(img, spec)
        m = {"pad": (meta.pad_x, meta.pad_y), "ratio": meta.ratio, "orig": (meta.orig_h, meta.orig_w)}
        t = torch.from_numpy(np.ascontiguousarray((x * 255).round().clip(0, 255).astype(np.uint8).transpose(1, 2, 0)))[None]
        det = predict_batch(model, t, device, precision, conf=cfg["detect_conf"], multi_label=False)[0]
        boxes = to_original(det["boxes"].float().cpu(), m)
        labels, scores = det["labels"].tolist(), det["scores"].tolist()
        draw_boxes(img, boxes.tolist(), labels, names, scores).save(out_dir / f"{f.stem}.jpg", quality=92)
        results.append({"image": str(f), "detections": [
            {"box_xyxy": [round(v, 2) for v in b], "score": round(s, 4), "class": names[c], "class_id": c}
            for b, s, c in zip(boxes.tolist(), scores, labels)]})
    (out_dir / "detections.json").write_text(json.dumps({"images": results, "skipped": skipped}, indent=1))
    return {"images": len(results), "skipped": skipped, "detections": sum(len(r["detections"]) for r in results),
            "out": str(out_dir)}
