"""Train YOLOv1 on Pascal VOC as in the paper; evaluate VOC mAP@0.5 (2007 11-point + all-point) and COCO mAP.

    accelerate launch -m yolov1.detection_train backbone=<backbone.safetensors> [key=value ...]
    python -m yolov1.detection_train data_root=data epochs=135                   # one process

Writes ``<output_dir>/<run_name>/``: ``config.json``, ``logs/{train,eval}.jsonl``, ``tb/``,
``curves/loss.{csv,png}``, ``checkpoints/epoch_NNNN/`` (accelerate state + ``meta.json``),
``eval/metrics.json`` (the last evaluation, per-class AP included) and ``summary.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from collections.abc import Sequence

import torch

from yolo_common.checkpoint import atomic_write_json

from .augment import DetectionTransform
from .checkpoints import load_backbone, read_meta, resolve_checkpoint, save_checkpoint
from .detection_config import DetectionConfig
from .engine import build_optimizer, detection_step, evaluate_detection, train_one_epoch
from .loss import build_loss
from .model import build_detector
from .overrides import apply_overrides
from .training import make_loader, run_training, schedule_from, start_epoch
from .voc import VOCDetection, collate, read_voc_parts

METRIC_KEYS = ("voc07_mAP", "voc_mAP", "coco_AP", "coco_AP50", "coco_AP75", "val_loss")


def train(cfg: DetectionConfig) -> dict:
    """Runs one detection training; returns ``{"run_dir", "metrics"}`` (the last evaluation)."""
    return run_training(cfg, _train, image_size=cfg.image_size)


def _train(cfg: DetectionConfig, accelerator, run, run_dir, seed: int) -> dict:
    names = list(cfg.class_names) or None
    train_splits = read_voc_parts(cfg.data_root, cfg.train_split, class_names=names, verify=cfg.verify_images)
    if "," in cfg.val_split:  # image ids are per split: two parts would collide in the metric
        raise ValueError(f"val_split={cfg.val_split!r}: evaluate one YEAR:IMAGE_SET at a time")
    (val_split,) = read_voc_parts(cfg.data_root, cfg.val_split, class_names=names, verify=cfg.verify_images)
    C = len(val_split.class_names)
    accelerator.print(f"VOC {cfg.train_split}: {sum(len(s) for s in train_splits)} images; "
                      f"{cfg.val_split}: {len(val_split)} images; {C} classes; run {run_dir}")

    train_ds = VOCDetection(train_splits, DetectionTransform(cfg.image_size, train=True, scale=cfg.aug_scale,
                                                             translate=cfg.aug_translate,
                                                             saturation=cfg.aug_saturation,
                                                             exposure=cfg.aug_exposure, hflip=cfg.hflip),
                            cfg.S, cfg.B, use_difficult=cfg.use_difficult, seed=seed)
    val_ds = VOCDetection([val_split], DetectionTransform(cfg.image_size, train=False), cfg.S, cfg.B,
                          use_difficult=cfg.use_difficult, seed=seed)
    model = build_detector(cfg.S, cfg.B, C, width=cfg.width, hidden=cfg.hidden, dropout=cfg.dropout,
                           batch_norm=cfg.batch_norm)
    if cfg.backbone:
        meta = load_backbone(model, cfg.backbone, width=cfg.width, batch_norm=cfg.batch_norm)
        accelerator.print(f"backbone from {cfg.backbone} (pretrained epoch {meta.get('epoch', '?')})")
    else:
        accelerator.print("no backbone= given: the backbone starts from random init (the paper pretrains it)")
    criterion = build_loss(cfg.S, cfg.B, C, lambda_coord=cfg.lambda_coord, lambda_noobj=cfg.lambda_noobj,
                           rescore=cfg.rescore, responsibility=cfg.responsibility)
    optimizer = build_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay, kind=cfg.optimizer)
    train_loader = make_loader(train_ds, cfg.batch_size, train=True, num_workers=cfg.num_workers, seed=seed,
                               collate_fn=collate)
    val_loader = make_loader(val_ds, cfg.batch_size, train=False, num_workers=cfg.num_workers, seed=seed,
                             collate_fn=collate)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    schedule = schedule_from(cfg)

    first_epoch, step = 0, 0
    if cfg.resume_from:
        ckpt = resolve_checkpoint(cfg.resume_from)
        meta = read_meta(ckpt)
        saved = (meta.get("config") or {}).get("optimizer", "sgd")
        if saved != cfg.optimizer:   # an AdamW state in SGD (or back) fails later with a bare KeyError
            raise ValueError(f"{ckpt} was trained with optimizer={saved}; resume with optimizer={saved} "
                             f"(this run has optimizer={cfg.optimizer})")
        accelerator.load_state(str(ckpt))
        first_epoch, step = int(meta.get("epoch", -1)) + 1, int(meta.get("step", 0))
        accelerator.print(f"resumed from {ckpt} at epoch {first_epoch}")

    step_fn = detection_step(criterion)
    metrics: dict = {}
    last_dets: list[dict] = []
    for epoch in range(first_epoch, cfg.epochs):
        start_epoch(train_loader, epoch)   # new augmentation draws and shuffle, also in workers and resumed runs
        stats, step = train_one_epoch(model, step_fn, optimizer, train_loader, accelerator, schedule, epoch,
                                      run=run, global_step=step, grad_clip_norm=cfg.grad_clip_norm,
                                      max_batches=cfg.max_train_batches, log_every=cfg.log_every)
        shares = " / ".join(f"{stats[f'resp_share_{j}']:.1%}" for j in range(cfg.B) if f"resp_share_{j}" in stats)
        accelerator.print(f"epoch {epoch}: objects per predictor {shares} ({cfg.responsibility} rule); "
                          f"{stats.get('dropped_per_image', 0.0):.3f} objects per image dropped (> B in a cell)")
        if train_loader.dataset.skipped:
            accelerator.print(f"epoch {epoch}: {train_loader.dataset.summary()} so far (process "
                              f"{accelerator.process_index}; replaced by the next image)")
        last = epoch == cfg.epochs - 1
        if last or (epoch + 1) % cfg.eval_every == 0:
            # fork_rng: evaluating must not move the training RNG stream (the eval loader's workers draw a
            # seed from it), or a run resumed after an eval epoch would see other dropout masks
            last_dets = []   # the latest evaluation's detections (samples/val.png)
            with torch.random.fork_rng(devices=[]):
                metrics = evaluate_detection(model, val_loader, accelerator, val_split, B=cfg.B, criterion=criterion,
                                             conf_threshold=cfg.conf_threshold, nms_iou=cfg.nms_iou,
                                             max_detections=cfg.max_detections, detections_out=last_dets)
            if accelerator.is_main_process:
                run.log_eval(step, epoch + 1, **{k: metrics[k] for k in METRIC_KEYS if k in metrics},
                             train_loss=stats.get("loss"))
                accelerator.print(f"epoch {epoch}: train loss {stats.get('loss', float('nan')):.3f}, "
                                  f"VOC07 mAP {metrics['voc07_mAP']:.4f}, VOC mAP {metrics['voc_mAP']:.4f}, "
                                  f"COCO AP {metrics['coco_AP']:.4f}")
        save_checkpoint(accelerator, run_dir, epoch, {"step": step, "seed": seed, "config": cfg,
                                                      "classes": val_split.class_names},
                        keep=cfg.keep_checkpoints)
    if accelerator.is_main_process:
        atomic_write_json(run_dir / "eval" / "metrics.json", metrics)
        pictures = write_samples(run_dir, val_split, last_dets)
        run.write_summary({
            "result": [{"epochs": cfg.epochs, **{k: metrics.get(k) for k in METRIC_KEYS},
                        "unreadable train image loads (this rank, whole run)": train_loader.dataset.skipped,
                        "unreadable val images": metrics.get("unreadable_images", 0)}],
            "per-class AP (VOC07 11-point)": [{"class": k, "AP": v}
                                              for k, v in metrics.get("per_class_voc07", {}).items()],
            "note": "voc07_mAP is the number comparable to the paper's 63.4 (VOC2007 test); coco_* are "
                    "COCO-protocol numbers on the same detections.",
            "pictures": pictures,
        }, title=f"YOLOv1 detection {run_dir.name}")
    return {"run_dir": run_dir, "metrics": metrics}


def write_samples(run_dir: Path, split, detections: list[dict]) -> str:
    """``samples/val.png`` (first val images: ground truth | the last evaluation's detections) and
    ``eval/detections.json`` (COCO xywh); returns the summary's links to it and the loss curves."""
    from yolo_common.draw import samples_grid

    coco = [{**d, "bbox": [d["bbox"][0], d["bbox"][1], d["bbox"][2] - d["bbox"][0], d["bbox"][3] - d["bbox"][1]]}
            for d in detections]
    atomic_write_json(run_dir / "eval" / "detections.json", coco)
    samples_grid(split.records, coco, split.categories, run_dir / "samples" / "val.png", n=4)
    return ("- [samples/val.png](samples/val.png): 4 val images, ground truth | detections (score >= 0.3)\n"
            "- [curves/loss.png](curves/loss.png): the training losses")


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = apply_overrides(DetectionConfig(), list(sys.argv[1:] if argv is None else argv))
    return train(cfg)


if __name__ == "__main__":
    main()
