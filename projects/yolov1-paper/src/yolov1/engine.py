"""Training and evaluation loops (torchvision ``references/detection`` style: plain functions).

``train_one_epoch`` is shared by pretraining and detection: the task-specific part is a ``step_fn``
that turns a batch into ``(loss, scalars)``. The LR is set every iteration from the schedule (warm-up
is per iteration). Only the main process logs; losses are averaged over processes at the epoch end.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from .metrics import detection_metrics, topk_correct
from .postprocess import decode, to_image_coords
from .scheduler import StepSchedule


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar that does not flood logs: when stderr is not a terminal (a batch job, CI, a file),
    it redraws at most every 30 s instead of on every step."""
    if not sys.stderr.isatty():
        # maxinterval too: tqdm's monitor thread otherwise forces a redraw every 10 s.
        kwargs.setdefault("mininterval", 30.0)
        kwargs.setdefault("maxinterval", 30.0)
    return tqdm(iterable, **kwargs)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv/FC weights only; biases and BN parameters get none (decaying BN scales toward 0
    only fights the normalisation, and biases carry no capacity worth regularising)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                    nesterov: bool = False, kind: str = "sgd") -> torch.optim.Optimizer:
    """SGD with the paper's momentum 0.9 and decay 5e-4 (``kind="sgd"``), or AdamW (``"adamw"``, not the
    paper: the small-data smoke recipe, where SGD at any stable LR fits the boxes but not the classes in a
    few hundred steps; ``momentum`` is then beta1 and ``weight_decay`` the decoupled decay)."""
    if kind == "adamw":
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(momentum, 0.999))
    if kind != "sgd":
        raise ValueError(f"optimizer must be sgd or adamw, got {kind!r}")
    return torch.optim.SGD(param_groups(model, weight_decay), lr=lr, momentum=momentum, nesterov=nesterov)


def train_one_epoch(
    model: torch.nn.Module,
    step_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    optimizer: torch.optim.Optimizer,
    loader,
    accelerator,
    schedule: StepSchedule,
    epoch: int,
    *,
    run=None,
    global_step: int = 0,
    grad_clip_norm: float = 0.0,
    max_batches: int = 0,
    log_every: int = 20,
) -> tuple[dict[str, float], int]:
    """One pass over ``loader``.

    Args:
        step_fn: ``(model, batch) -> (loss, {name: scalar tensor})`` for logging.
        schedule: gives the LR at the fractional epoch ``epoch + i / len(loader)``.
        run: a ``RunLogger`` (or None); gets a ``log_train`` line every ``log_every`` iterations.
        global_step: optimisation steps done before this epoch (the x axis of the logs).
        grad_clip_norm: clip the global gradient norm (0: off).
        max_batches: stop after this many batches (0: all), for smoke runs.

    Returns:
        ``({name: epoch mean over processes}, global_step)``.

    Raises:
        FloatingPointError: the loss became NaN/inf (the message holds the loss parts).
    """
    model.train()
    n_batches = len(loader) if not max_batches else min(max_batches, len(loader))
    sums: dict[str, torch.Tensor] = {}
    seen = 0
    t0 = time.perf_counter()
    bar = progress(total=n_batches, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=not accelerator.is_local_main_process)
    for i, batch in enumerate(loader):
        if i >= n_batches:
            break
        lr = schedule.apply(optimizer, epoch + i / max(n_batches, 1))
        with accelerator.autocast():
            loss, scalars = step_fn(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at epoch {epoch} iteration {i}: "
                                     f"{ {k: float(v) for k, v in scalars.items()} } (lr {lr:.2e}); "
                                     f"try grad_clip_norm=10 or a longer warm-up")
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if grad_clip_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), grad_clip_norm)
        optimizer.step()
        global_step += 1
        seen += 1
        # .detach() keeps the sums on device: a float() here would be a GPU sync point every step.
        for k, v in scalars.items():
            sums[k] = sums.get(k, 0) + v.detach().float()
        if run is not None and (global_step % log_every == 0 or i == n_batches - 1):
            run.log_train(global_step, epoch + (i + 1) / n_batches, lr=lr, **{k: float(v) for k, v in scalars.items()})
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.1e}", refresh=False)
        bar.update()
    bar.close()
    means = {k: float(accelerator.reduce(v / max(seen, 1), reduction="mean")) for k, v in sums.items()}
    means["epoch_time_s"] = time.perf_counter() - t0
    means["images_per_s"] = seen * loader.total_batch_size / means["epoch_time_s"] if hasattr(
        loader, "total_batch_size") and loader.total_batch_size else math.nan
    return means, global_step


def detection_step(criterion):
    """``step_fn`` for detection: batch ``(images, targets, indices)`` -> the paper loss."""

    def step(model, batch):
        images, targets, _ = batch
        out = criterion(model(images), targets)
        scalars = {"loss": out.total.detach(), "loss_coord": out.coord, "loss_obj": out.obj,
                   "loss_noobj": out.noobj, "loss_cls": out.cls, "mean_iou": out.mean_iou,
                   # objects beyond B in one cell, which no predictor can represent (per image, this batch)
                   "dropped_per_image": targets["dropped"].float().mean()}
        if out.resp_share is not None:
            scalars.update({f"resp_share_{j}": v for j, v in enumerate(out.resp_share)})
        return out.total, scalars

    return step


def classification_step(model, batch):
    """``step_fn`` for pretraining: cross-entropy on ``(images, labels)``."""
    images, labels = batch
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    return loss, {"loss": loss.detach()}


@torch.inference_mode()
def evaluate_classification(model, loader, accelerator) -> dict[str, float]:
    """Top-1 / top-5 accuracy and mean cross-entropy over ``loader`` (every process, gathered)."""
    model.eval()
    correct1 = correct5 = total = unreadable = 0
    loss_sum = 0.0
    for images, labels in progress(loader, desc="eval", leave=False, disable=not accelerator.is_local_main_process):
        logits = model(images).float()
        logits, labels = accelerator.gather_for_metrics((logits, labels))
        readable = labels >= 0    # -1: an unreadable image's placeholder, left out (and counted)
        unreadable += int((~readable).sum())
        logits, labels = logits[readable], labels[readable]
        hits = topk_correct(logits, labels, (1, 5))
        correct1 += hits[1]
        correct5 += hits[5]
        total += len(labels)
        loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
    return {"top1": correct1 / max(total, 1), "top5": correct5 / max(total, 1), "val_loss": loss_sum / max(total, 1),
            "num_images": total, "unreadable_images": unreadable}


@torch.inference_mode()
def evaluate_detection(model, loader, accelerator, split, *, B: int, criterion=None, conf_threshold: float = 0.005,
                       nms_iou: float = 0.5, max_detections: int = 100, legacy_devkit: bool = False,
                       detections_out: list | None = None) -> dict:
    """Decode + NMS every image of ``loader``, then VOC (07 11-point, all-point) and COCO mAP.

    Args:
        loader: yields ``(images, targets, indices)`` over ``split``'s records in order (no augmentation).
        split: the ``DatasetSplit`` the indices point into (its ``image_id``s and category ids are used).
        criterion: when given, the mean validation loss is reported too.
        detections_out: a list that receives every detection (main process; ``bbox`` pixel xyxy).

    Returns:
        ``detection_metrics`` output (+ ``val_loss``) on the main process; ``{}`` on the others.
    """
    model.eval()
    per_image: list[list[dict]] = []
    loss_sum, n_images = 0.0, 0
    cat_ids = [c["id"] for c in split.categories]
    for images, targets, idx in progress(loader, desc="eval", leave=False,
                                         disable=not accelerator.is_local_main_process):
        pred = model(images).float()
        readable = idx >= 0       # idx = -1 - i: image i did not decode (SkipUnreadable's placeholder)
        if criterion is not None and readable.any():
            n = int(readable.sum())
            kept = pred if bool(readable.all()) else pred[readable]
            loss_sum += float(criterion(kept, targets if bool(readable.all()) else
                                        {k: v[readable] for k, v in targets.items()}).total) * n
            n_images += n
        dets = decode(pred, B, conf_threshold=conf_threshold, nms_iou=nms_iou, max_detections=max_detections)
        batch_out = []
        for d, i in zip(dets, idx.tolist()):
            if i < 0:
                batch_out.append(None)   # scored as an image without detections (its boxes still count)
                continue
            r = split.records[i]
            boxes = to_image_coords(d, r.width, r.height).tolist()
            batch_out.append([{"image_id": int(r.image_id), "category_id": cat_ids[int(c)], "bbox": b, "score": float(s)}
                              for b, s, c in zip(boxes, d["scores"].tolist(), d["labels"].tolist())])
        # One entry per image, so gather_for_metrics can drop the padding duplicates of the last batch.
        per_image += accelerator.gather_for_metrics(batch_out, use_gather_object=True)
    if criterion is not None:
        loss_t = torch.tensor([loss_sum, n_images], device=accelerator.device, dtype=torch.float64)
        loss_sum, n_images = accelerator.reduce(loss_t, reduction="sum").tolist()
    if not accelerator.is_main_process:
        return {}
    unreadable = sum(img is None for img in per_image)   # gathered: every rank's, each image once
    detections = [d for img in per_image if img is not None for d in img]
    if detections_out is not None:
        detections_out.extend(detections)
    metrics = detection_metrics(split, detections, legacy_devkit=legacy_devkit)
    if criterion is not None:
        metrics["val_loss"] = loss_sum / max(n_images, 1)
    metrics["num_images"] = len(per_image)
    metrics["unreadable_images"] = unreadable
    return metrics
