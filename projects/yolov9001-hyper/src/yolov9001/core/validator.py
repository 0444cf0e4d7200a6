"""``evaluate``: a model over a validation loader -> COCO stats (``yolo_common.coco_map``) + detections.

Boxes are mapped from the letterboxed input back to original pixels ((x - pad) / ratio, clipped), classes
to the dataset's own category ids, so the numbers equal ``python -m yolo_common.onnx_eval`` on the same
split (the ONNX parity test checks it).
"""

from __future__ import annotations

import logging
import time

import torch
from yolo_common.data import to_coco_dict
from yolo_common.device import autocast
from yolo_common.evaluation import coco_map

from ..utils.batches import DeviceBatches
from ..utils.dataset import to_input
from ..utils.progress import bar
from .ema import unwrap

log = logging.getLogger("yolov9001.val")


def to_original(boxes: torch.Tensor, meta: dict) -> torch.Tensor:
    """Letterboxed xyxy -> original image xyxy (clipped)."""
    px, py = meta["pad"]
    r = meta["ratio"]
    h, w = meta["orig"]
    out = boxes.clone()
    out[:, [0, 2]] = ((out[:, [0, 2]] - px) / r).clamp(0, w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - py) / r).clamp(0, h)
    return out


@torch.no_grad()
def predict_batch(model, images: torch.Tensor, device, precision: str = "fp32", conf: float | None = None,
                  multi_label: bool | None = None):
    """uint8 images [B, S, S, 3] (or an already converted float input [B, 3, S, S]) -> per-image
    ``{"boxes", "scores", "labels"}`` in input pixels."""
    core = unwrap(model)
    x = images.to(device) if images.is_floating_point() else to_input(images, device)
    with autocast(device, precision):
        feats = model(x)
    boxes, cls = core.decoder(feats)
    return core.postprocessor(boxes, cls, conf_thresh=conf, multi_label=multi_label)


@torch.no_grad()
def evaluate(model, loader, device, precision: str = "fp32", progress: bool = True) -> dict:
    """Returns ``{"coco": 12 stats + per_class, "detections": [...], "images": n, "seconds": t}``."""
    core = unwrap(model)
    was_training = core.training
    model.eval()
    split = loader.dataset.split
    cat_ids = [c["id"] for c in split.categories]
    dets = []
    t0 = time.time()
    batches = DeviceBatches(loader, loader.dataset.cfg, device)   # gpu_collate / cuda_prefetch as configured
    for batch in bar(batches, desc="val", unit="batch", disable=not progress, leave=False):
        if batch is None:  # every image of this batch was unreadable (counted by the loader's dataset)
            continue
        x, _, metas = batch
        for out, meta in zip(predict_batch(model, x, device, precision), metas):
            b = to_original(out["boxes"].float().cpu(), meta)
            for box, score, label in zip(b.tolist(), out["scores"].tolist(), out["labels"].tolist()):
                x1, y1, x2, y2 = box
                dets.append({"image_id": meta["image_id"], "category_id": cat_ids[label],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    model.train(was_training)
    gt = to_coco_dict(split)
    stats = coco_map(gt, dets)
    return {"coco": stats, "detections": dets, "gt": gt, "images": len(split), "seconds": time.time() - t0}
