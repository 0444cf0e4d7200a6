"""``train_one_epoch`` and ``evaluate``: the loop, readable top to bottom.

One iteration (Habana's order, which is also the right one for CUDA/CPU):

    forward (autocast)  ->  loss + SimOTA in fp32 (on the CPU with --loss-on-cpu)  ->  backward
    ->  steps.after_backward()        (HPU lazy mode: mark_step, runs forward+backward as one graph)
    ->  optimizer.step()  ->  steps.after_optimizer_step()   (mark_step again)
    ->  zero_grad  ->  EMA update  ->  next iteration's LR

Host syncs: the loss values are read (``.item()``) only every ``print_interval`` iterations, because
each read waits for the device (on HPU it also ends the lazy graph early).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .loss import YOLOXLoss

log = logging.getLogger("yolox_gaudi")


@dataclass
class TrainState:
    """Counters that a checkpoint carries across ``--resume``."""

    epoch: int = 0            # next epoch to run (0-based)
    iteration: int = 0        # optimiser steps done in total
    epoch_iter: int = 0       # optimiser steps done in epoch ``epoch`` (> 0 only after a mid-epoch stop)
    best_ap: float = 0.0
    input_size: tuple[int, int] = (640, 640)   # current multiscale (h, w)


def multiscale_size(exp, seed: int, iteration: int) -> tuple[int, int]:
    """The training ``(h, w)`` for the 10-iteration window containing ``iteration``.

    Megvii's ``random_resize``: a factor ``k`` from ``random_size`` (default ``input_h / 32 +-
    multiscale_range``), ``h = 32 k`` and ``w = 32 int(k * input_w / input_h)``, so a non-square input
    keeps its aspect. A pure function of (seed, window): every rank computes the same value with no
    collective (Megvii broadcasts a CUDA tensor from rank 0, which gloo/CPU cannot; Habana's port seeds
    per rank and can diverge under mpirun).
    """
    base_h, base_w = (int(v) for v in exp.input_size)
    if exp.random_size is not None:
        lo, hi = exp.random_size
    else:
        lo, hi = base_h // 32 - exp.multiscale_range, base_h // 32 + exp.multiscale_range
    if exp.multiscale_range == 0 and exp.random_size is None:
        return base_h, base_w
    k = random.Random(seed * 1_000_003 + iteration // 10).randint(int(lo), int(hi))
    return 32 * k, 32 * int(k * base_w / base_h)


def _resize_batch(images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]):
    """Bilinear resize of the batch to ``size = (h, w)`` on the device, targets (cls, cx, cy, w, h)
    scaled per axis to match (Megvii's ``Exp.preprocess``)."""
    h, w = images.shape[-2:]
    if (h, w) == tuple(size):
        return images, targets
    sy, sx = size[0] / h, size[1] / w
    images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False)
    targets = targets.clone()
    targets[..., 1::2] *= sx
    targets[..., 2::2] *= sy
    return images, targets


def train_one_epoch(model, loss_fn: YOLOXLoss, optimizer, loader, device, *, epoch: int, exp, state: TrainState,
                    lr_fn, ema=None, steps=None, amp=None, scaler=None, loss_on_cpu: bool = False,
                    multiscale: bool = True, seed: int = 0, run=None, global_batch: int | None = None,
                    max_iters: int | None = None, is_main: bool = True) -> dict:
    """Trains one epoch (or until ``max_iters`` total iterations).

    Args:
        model: the (possibly DDP-wrapped) YOLOX in train mode.
        loss_fn: :class:`YOLOXLoss` (its ``use_l1`` set by the caller for the no-aug epochs).
        optimizer: SGD (or Habana's FusedSGD).
        loader: yields ``(images, targets, indices)``.
        device: the training device.
        epoch: 0-based epoch index (for logs).
        exp: the experiment config.
        state: counters, updated in place.
        lr_fn: 1-based iteration -> learning rate.
        ema: ``ModelEMA`` or ``None``.
        steps: ``hpu.HpuSteps`` / ``hpu.NoSteps`` (the lazy-mode graph cuts).
        amp: autocast context factory (``lambda: torch.autocast(...)``) or ``None`` for fp32.
        scaler: ``GradScaler`` (enabled for CUDA fp16 only).
        loss_on_cpu: compute SimOTA + loss on the CPU (the port's way around dynamic shapes on HPU).
        multiscale: change the input side every 10 iterations (see :func:`multiscale_size`).
        seed: run seed (multiscale choice).
        run: ``yolo_common.runlog.RunLogger`` for JSONL/TensorBoard (rank 0).
        global_batch: images per iteration over all ranks (for images/s).
        max_iters: stop once ``state.iteration`` reaches it (``steps N``).
        is_main: print progress on this rank.

    Returns:
        Mean of each loss over the epoch's logged iterations, plus ``iters`` and ``images_per_s``.
    """
    from .hpu import NoSteps

    steps = steps or NoSteps()
    amp = amp or contextlib.nullcontext
    model.train()
    if exp.freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    # A resumed epoch starts at state.epoch_iter: the sampler already skips the samples it used.
    start = state.epoch_iter
    n_iter = start + len(loader)
    sums: dict[str, float] = {}
    logged = 0
    t_epoch = time.perf_counter()
    t_window, window_iters = time.perf_counter(), 0
    done = 0
    for i, (images, targets, _idx) in enumerate(loader, start=start):
        if max_iters is not None and state.iteration >= max_iters:
            break
        images = images.to(device, non_blocking=True)
        # Targets stay on the host when the loss runs there (the port keeps them on CPU).
        targets = targets if loss_on_cpu else targets.to(device, non_blocking=True)
        if multiscale:
            state.input_size = multiscale_size(exp, seed, state.iteration)
            images, targets = _resize_batch(images, targets, state.input_size)

        with amp():
            preds, raw_reg, grid = model(images)
        if loss_on_cpu:
            # Autograd flows back through the copy; assignment's dynamic shapes stay off the device.
            preds, raw_reg, grid = preds.float().cpu(), raw_reg.float().cpu(), grid.cpu()
        losses = loss_fn(preds, raw_reg, grid, targets)
        loss = losses["total_loss"]

        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        steps.after_backward()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        steps.after_optimizer_step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        state.iteration += 1
        state.epoch_iter = i + 1
        done += 1
        window_iters += 1
        lr = lr_fn(state.iteration)  # Megvii: lr for the next iteration = f(iterations done)
        for g in optimizer.param_groups:
            g["lr"] = lr

        if (i + 1) % exp.print_interval == 0 or i + 1 == n_iter:
            vals = {k: float(v.detach()) for k, v in losses.items()}   # host sync, once per print_interval
            if not math.isfinite(vals["total_loss"]):
                raise FloatingPointError(f"loss is {vals['total_loss']} at iteration {state.iteration}: {vals}")
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            logged += 1
            steps.sync()
            dt = (time.perf_counter() - t_window) / window_iters
            ips = (global_batch or images.shape[0]) / dt   # global batch / iteration time, as the port
            remaining = (n_iter - i - 1) * dt
            if run is not None:
                run.log_train(state.iteration, epoch + (i + 1) / n_iter, lr=lr, images_per_s=ips,
                              input_size=state.input_size[0], input_w=state.input_size[1], **vals)
            if is_main:
                log.info("epoch %d/%d iter %d/%d | loss %.3f (iou %.3f obj %.3f cls %.3f l1 %.3f) fg/gt %.2f | "
                         "lr %.2e | size %s | %.1f img/s | ETA epoch %s", epoch + 1, exp.max_epoch, i + 1, n_iter,
                         vals["total_loss"], vals["iou_loss"], vals["conf_loss"], vals["cls_loss"],
                         vals["l1_loss"], vals["num_fg"], lr, "x".join(map(str, state.input_size)), ips,
                         _fmt_eta(remaining))
            t_window, window_iters = time.perf_counter(), 0
    elapsed = time.perf_counter() - t_epoch
    out = {k: v / max(logged, 1) for k, v in sums.items()}
    out["iters"] = done
    out["images_per_s"] = (global_batch or 0) * done / max(elapsed, 1e-9)
    return out


def voc_metrics(split, dets: list[dict]) -> dict:
    """Megvii's VOC figures through ``yolo_common.evaluation.voc_map``: ``AP50`` = VOC mAP at IoU 0.5
    (for VOC2007 images the 11-point metric with py-faster-rcnn's thresholds ``np.arange(0, 1.1, 0.1)``, as
    Megvii's ``voc_eval``, which decides by the year; all-point otherwise), ``AP`` = the mean over IoU
    0.50:0.05:0.95 (Megvii's ``map_5095``), ``AP75``, and the per-class AP at 0.5. ``dets`` are COCO-style
    (xywh). Not Megvii's: its ``+1`` pixel convention in box areas and intersections (continuous
    coordinates here, as COCO)."""
    from pathlib import Path

    import numpy as np
    from yolo_common.evaluation import voc_map

    xyxy = [{**d, "bbox": [d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]]}
            for d in dets]
    use_07 = bool(split.records) and all("VOC2007" in Path(r.path).parts for r in split.records)
    names = {c["id"]: c["name"] for c in split.categories}
    runs = [voc_map(split.records, xyxy, iou_threshold=float(t), use_07_metric=use_07, legacy_devkit=use_07,
                    class_names=names) for t in np.linspace(0.5, 0.95, 10)]
    return {"AP": float(np.nanmean([r["mAP"] for r in runs])), "AP50": float(runs[0]["mAP"]),
            "AP75": float(runs[5]["mAP"]), "per_class": runs[0]["per_class"],
            "metric": "voc07 (11-point)" if use_07 else "voc (all-point)"}


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def postprocess(outputs: torch.Tensor, conf_thre: float, nms_thre: float, max_dets: int = 100):
    """Per image: best class per anchor, score = obj x class prob, threshold, class-aware NMS.

    Args:
        outputs: ``[B, A, 5+nc]`` inference output (cx, cy, w, h, obj, class probs).

    Returns:
        A list of ``[n, 6]`` tensors (x1, y1, x2, y2, score, class) in input pixels.
    """
    from torchvision.ops import batched_nms  # ~5 s first import (pulls torch._dynamo); eval only

    results = []
    for pred in outputs.float():
        cls_prob, cls_idx = pred[:, 5:].max(1)
        score = pred[:, 4] * cls_prob
        keep = score >= conf_thre
        pred, score, cls_idx = pred[keep], score[keep], cls_idx[keep]
        boxes = torch.cat((pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2), 1)
        k = batched_nms(boxes, score, cls_idx, nms_thre)[:max_dets]
        results.append(torch.cat((boxes[k], score[k, None], cls_idx[k, None].float()), 1))
    return results


@torch.no_grad()
def evaluate(model, loader, split, device, exp, *, amp=None, steps=None, is_main: bool = True,
             score: bool = True) -> tuple[dict, list]:
    """COCO evaluation of ``model`` over ``loader`` through ``yolo_common.evaluation.coco_map`` (VOC mAP
    through :func:`voc_metrics` for a VOC split).

    Args:
        model: the YOLOX (usually the EMA copy); put in eval mode here.
        loader: ``data.build_eval_loader`` output.
        split: the ``DatasetSplit`` (ground truth and category ids).
        device: where the model runs.
        exp: config (``test_conf``, ``nmsthre``, ``max_dets``).
        amp: autocast context factory or ``None``.
        steps: HPU graph cuts (a ``sync`` after each batch's forward).
        score: run COCO eval (off for COCO test-dev, which has no labels: only the detections come back).

    Returns:
        ``(metrics, detections)``: the 12 COCO stats (+ per-class AP, timing) and COCO result dicts.
    """
    from yolo_common.data import to_coco_dict
    from yolo_common.evaluation import coco_map
    from yolo_common.preprocess import unletterbox_boxes

    from .hpu import NoSteps

    steps = steps or NoSteps()
    amp = amp or contextlib.nullcontext
    model.eval()
    cat_ids = [c["id"] for c in split.categories]
    dets = []
    skipped_before = int(getattr(loader.dataset, "skipped", 0))   # the wrapper counts over the whole run
    t0, n_img, t_infer = time.perf_counter(), 0, 0.0
    n_batches = len(loader)
    for b, batch in enumerate(loader):
        if batch is None:   # every image of this batch was unreadable (counted by SkipUnreadable)
            continue
        images, metas, ids = batch
        t1 = time.perf_counter()
        with amp():
            out = model(images.to(device, non_blocking=True))
        steps.sync()
        out = out.float().cpu()
        t_infer += time.perf_counter() - t1
        for det, meta, image_id in zip(postprocess(out, exp.test_conf, exp.nmsthre, exp.max_dets), metas, ids):
            if len(det) == 0:
                continue
            boxes = unletterbox_boxes(det[:, :4].numpy(), meta)
            for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), det[:, 4].tolist(), det[:, 5].long().tolist()):
                dets.append({"image_id": image_id, "category_id": cat_ids[c],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
        n_img += len(ids)
        if is_main and (b + 1) % 50 == 0:
            rate = n_img / (time.perf_counter() - t0)
            log.info("eval %d/%d batches | %.1f img/s | ETA %s", b + 1, n_batches, rate,
                     _fmt_eta((len(loader.dataset) - n_img) / max(rate, 1e-9)))
    if not score:
        metrics = {}
    elif split.layout == "voc":
        metrics = voc_metrics(split, dets)
    else:
        metrics = coco_map(to_coco_dict(split), dets)
    metrics["images"] = n_img
    metrics["unreadable_images"] = int(getattr(loader.dataset, "skipped", 0)) - skipped_before   # this eval
    metrics["inference_images_per_s"] = n_img / max(t_infer, 1e-9)
    metrics["total_images_per_s"] = n_img / max(time.perf_counter() - t0, 1e-9)
    return metrics, dets
