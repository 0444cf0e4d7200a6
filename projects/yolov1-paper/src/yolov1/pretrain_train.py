"""Pretrain the YOLOv1 backbone (first 20 convs + avgpool + FC) on ImageNet-100 at 224.

    accelerate launch -m yolov1.pretrain_train [key=value ...]     # any number of GPUs
    python -m yolov1.pretrain_train data_root=data/imagenet100      # one process (CPU or one GPU)

Writes ``<output_dir>/<run_name>/``: ``config.json``, ``classes.json`` (the class order),
``logs/{train,eval}.jsonl``, ``tb/``, ``curves/loss.{csv,png}``, ``checkpoints/epoch_NNNN/`` (accelerate
state: ``model.safetensors`` + optimizer + RNG, and ``meta.json`` with the epoch, config and class
order), ``summary.md``. Then: ``python -m yolov1.extract_backbone <run or checkpoint>``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import torch

from .checkpoints import read_meta, resolve_checkpoint, save_checkpoint
from .engine import build_optimizer, classification_step, evaluate_classification, train_one_epoch
from .imagenet100 import ImageFolderDataset, classification_transform, read_imagenet100
from .model import build_classifier
from .overrides import apply_overrides
from .pretrain_config import PretrainConfig
from .training import make_loader, run_training, schedule_from, start_epoch


def train(cfg: PretrainConfig) -> dict:
    """Runs one pretraining; returns ``{"run_dir", "metrics"}`` (metrics of the last evaluation)."""
    return run_training(cfg, _train)


def _train(cfg: PretrainConfig, accelerator, run, run_dir, seed: int) -> dict:
    train_split = read_imagenet100(cfg.data_root, "train", verify=cfg.verify_images)
    val_split = read_imagenet100(cfg.data_root, "val", verify=cfg.verify_images)
    if val_split.wnids != train_split.wnids:
        raise ValueError(f"{cfg.data_root}: train and val disagree on Labels.json")  # same file: cannot happen
    classes = train_split.classes_json()
    if accelerator.is_main_process:
        (run_dir / "classes.json").write_text(json.dumps(classes, indent=1) + "\n", encoding="utf-8")
    accelerator.print(f"ImageNet-100 at {cfg.data_root}: {len(train_split.wnids)} classes, "
                      f"train {len(train_split)} images, val {len(val_split)}; run {run_dir}")

    model = build_classifier(len(train_split.wnids), width=cfg.width, batch_norm=cfg.batch_norm)
    optimizer = build_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)
    train_loader = make_loader(ImageFolderDataset(train_split, classification_transform(cfg.image_size, True)),
                               cfg.batch_size, train=True, num_workers=cfg.num_workers, seed=seed)
    val_loader = make_loader(ImageFolderDataset(val_split, classification_transform(cfg.image_size, False)),
                             cfg.batch_size, train=False, num_workers=cfg.num_workers, seed=seed)
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    schedule = schedule_from(cfg)

    first_epoch, step = 0, 0
    if cfg.resume_from:
        ckpt = resolve_checkpoint(cfg.resume_from)
        meta = read_meta(ckpt)
        if meta.get("classes", {}).get("wnids") not in (None, classes["wnids"]):
            raise ValueError(f"{ckpt} was trained with another class order than {cfg.data_root}/Labels.json")
        accelerator.load_state(str(ckpt))
        first_epoch, step = int(meta.get("epoch", -1)) + 1, int(meta.get("step", 0))
        accelerator.print(f"resumed from {ckpt} at epoch {first_epoch}")

    metrics: dict = {}
    for epoch in range(first_epoch, cfg.epochs):
        start_epoch(train_loader, epoch)   # per-epoch shuffle and worker seeds (same in a resumed run)
        stats, step = train_one_epoch(model, classification_step, optimizer, train_loader, accelerator, schedule,
                                      epoch, run=run, global_step=step, grad_clip_norm=cfg.grad_clip_norm,
                                      max_batches=cfg.max_train_batches, log_every=cfg.log_every)
        if train_loader.dataset.skipped:
            accelerator.print(f"epoch {epoch}: {train_loader.dataset.summary()} so far (process "
                              f"{accelerator.process_index}; replaced by the next image)")
        last = epoch == cfg.epochs - 1
        if last or (epoch + 1) % cfg.eval_every == 0:
            with torch.random.fork_rng(devices=[]):   # evaluation leaves the training RNG stream alone (resume)
                metrics = evaluate_classification(model, val_loader, accelerator)
            run.log_eval(step, epoch + 1, **metrics, train_loss=stats.get("loss"))
            accelerator.print(f"epoch {epoch}: train loss {stats.get('loss', float('nan')):.4f}, "
                              f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}")
        save_checkpoint(accelerator, run_dir, epoch, {"step": step, "seed": seed, "config": cfg, "classes": classes,
                                                      "metrics": metrics}, keep=cfg.keep_checkpoints)
    run.write_summary({"result": [{"epochs": cfg.epochs, **{k: metrics.get(k) for k in ("top1", "top5", "val_loss")}}],
                       "data": f"{cfg.data_root}: {len(train_split.wnids)} classes, train {len(train_split)}, "
                               f"val {len(val_split)} (skipped: {train_split.skipped.summary()}; at load "
                               f"time: {train_loader.dataset.summary()} in train, "
                               f"{metrics.get('unreadable_images', 0)} in val)"},
                      title=f"YOLOv1 backbone pretraining {run_dir.name}")
    return {"run_dir": run_dir, "metrics": metrics}


def main(argv: Sequence[str] | None = None) -> dict:
    cfg = apply_overrides(PretrainConfig(), list(sys.argv[1:] if argv is None else argv))
    return train(cfg)


if __name__ == "__main__":
    main()
