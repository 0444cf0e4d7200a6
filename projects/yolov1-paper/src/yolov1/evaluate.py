"""``python -m yolov1.evaluate``: score a detection checkpoint on a VOC split, without training.

    python -m yolov1.evaluate runs/detect_voc --data /data/VOC --split 2007:test
    python -m yolov1.evaluate runs/detect_voc/checkpoints/epoch_0134 --data /data/VOC --legacy-devkit

The checkpoint is what ``detection_train`` writes (a checkpoint folder, or a run folder: its newest one). The
model options (S, B, width, hidden, batch_norm) and the class order come from its ``meta.json``, and the
weights from ``model.safetensors``; no pickle is opened. Prints VOC07 11-point mAP (the paper's 63.4 is
this number on VOC2007 test), VOC all-point mAP, COCO AP, and a per-class table; writes ``metrics.json``
to ``--out``. ``--legacy-devkit`` uses py-faster-rcnn's 11-point thresholds (``np.arange(0, 1.1,
0.1)``), as most published VOC numbers were computed; its tie order (numpy's unstable sort) is
platform-dependent and not reproduced.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def load_detector(ckpt: str | Path):
    """``(model in eval mode, meta)`` from a detection checkpoint (folder or run folder)."""
    from safetensors.torch import load_file

    from .checkpoints import MODEL_FILE, read_meta, resolve_checkpoint, strip_wrappers
    from .model import build_detector

    folder = resolve_checkpoint(ckpt)
    meta = read_meta(folder)
    cfg, classes = meta.get("config"), meta.get("classes")
    if not cfg or not isinstance(classes, list):
        raise ValueError(f"{folder}: not a detection checkpoint (meta.json has no config/classes list); "
                         f"pretraining checkpoints go through extract_backbone")
    model = build_detector(int(cfg["S"]), int(cfg["B"]), len(classes), width=float(cfg["width"]),
                           hidden=int(cfg["hidden"]), dropout=float(cfg.get("dropout", 0.5)),
                           batch_norm=bool(cfg.get("batch_norm", False)))
    state = strip_wrappers(load_file(str(folder / MODEL_FILE)))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{folder / MODEL_FILE} does not fit the model its meta.json describes: {e}") from None
    return model.eval(), {**meta, "folder": str(folder)}


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="checkpoint folder (epoch_NNNN) or run folder (its newest checkpoint)")
    ap.add_argument("--data", required=True, help="folder holding VOCdevkit/ (or a VOCdevkit itself)")
    ap.add_argument("--split", default="2007:test", help="YEAR:IMAGE_SET (default 2007:test)")
    ap.add_argument("--legacy-devkit", action="store_true",
                    help="py-faster-rcnn's 11-point thresholds (np.arange(0, 1.1, 0.1))")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument("--conf-threshold", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--nms-iou", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--out", default=None, help="default: <checkpoint>/eval_<split>")
    ap.add_argument("--cpu", action="store_true")
    a = ap.parse_args(argv)
    if "," in a.split:
        raise SystemExit(f"error: --split {a.split!r}: evaluate one YEAR:IMAGE_SET at a time")

    from yolo_common.checkpoint import atomic_write_json
    from yolo_common.runlog import markdown_table

    from .augment import DetectionTransform
    from .engine import evaluate_detection
    from .training import build_accelerator, make_loader, release_accelerator
    from .voc import VOCDetection, collate, read_voc_parts

    try:
        model, meta = load_detector(a.checkpoint)
        cfg = meta["config"]
        (split,) = read_voc_parts(a.data, a.split, class_names=meta["classes"])
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    ds = VOCDetection([split], DetectionTransform(64 * int(cfg["S"]), train=False), int(cfg["S"]), int(cfg["B"]))
    accelerator = build_accelerator(a.cpu)
    try:
        loader = make_loader(ds, a.batch_size, train=False, num_workers=a.num_workers, seed=0, collate_fn=collate)
        model, loader = accelerator.prepare(model, loader)
        metrics = evaluate_detection(model, loader, accelerator, split, B=int(cfg["B"]),
                                     conf_threshold=a.conf_threshold if a.conf_threshold is not None
                                     else float(cfg.get("conf_threshold", 0.005)),
                                     nms_iou=a.nms_iou if a.nms_iou is not None else float(cfg.get("nms_iou", 0.5)),
                                     max_detections=int(cfg.get("max_detections", 100)),
                                     legacy_devkit=a.legacy_devkit)
    finally:
        release_accelerator(accelerator)
    if not metrics:   # not the main process
        return {}
    out = Path(a.out) if a.out else Path(meta["folder"]) / f"eval_{a.split.replace(':', '_')}"
    metrics.update(split=a.split, checkpoint=meta["folder"], epoch=meta.get("epoch"), legacy_devkit=a.legacy_devkit)
    atomic_write_json(out / "metrics.json", metrics)
    rows = [{"class": k, "AP (VOC07 11-point)": v, "AP (all-point)": metrics["per_class_voc"].get(k)}
            for k, v in metrics["per_class_voc07"].items()]
    print(markdown_table(rows, floatfmt=".4f"))
    print(f"\n{a.split}: VOC07 11-point mAP@0.5 {metrics['voc07_mAP']:.4f}"
          f"{' (py-faster-rcnn devkit rules)' if a.legacy_devkit else ''}, all-point mAP@0.5 "
          f"{metrics['voc_mAP']:.4f}, COCO AP {metrics['coco_AP']:.4f} / AP50 {metrics['coco_AP50']:.4f} "
          f"on {metrics['num_images']} images -> {out / 'metrics.json'}")
    return metrics


if __name__ == "__main__":
    main()
