"""Training and evaluation loops (torchvision ``references/detection`` style: plain functions)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch

from yolo_common.device import autocast

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Mutable counters carried across epochs (and saved in checkpoints)."""

    step: int = 0
    epoch: int = 0
    total_steps: int = 1
    patch_state: dict = field(default_factory=dict)


def move_targets(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def global_batch_loss(out, targets: list[dict], config, world: int) -> torch.Tensor:
    """This rank's share of the loss one process would compute on the global batch (DDP averages ranks).

    transformers' DETR-style loss normalises by the *local* batch: box terms by this rank's box count,
    the class term by this rank's class-weight sum (no-object queries weigh ``eos_coefficient``), so the
    mean of the ranks' losses is not the global batch's loss. (With accelerate's PartialState it does
    all-reduce the box count, but transformers 5.23 takes accelerate's *mean* and then divides by the world
    size again: box terms come out world x too large; so no PartialState is created.) Here both
    normalisers are all-reduced (one 2-float all_reduce per step) and each term rescaled so that
    averaging over ranks gives exactly the global normalisation, as the original DETR code does for boxes.
    """
    import torch.distributed as dist

    if getattr(config, "auxiliary_loss", False):
        raise NotImplementedError("global-batch loss rescaling covers the final layer's loss only")
    terms = out.loss_dict
    n = float(sum(len(t["class_labels"]) for t in targets))
    q = out.logits.shape[1]
    matched = float(sum(min(len(t["class_labels"]), q) for t in targets))   # one query per box, at most Q
    weight = matched + config.eos_coefficient * (out.logits.shape[0] * q - matched)   # CE's weighted-mean denominator
    # a non-finite loss on any rank stops every rank (one rank raising alone would hang the others in
    # DDP's gradient all-reduce)
    bad = 0.0 if bool(torch.isfinite(out.loss)) else 1.0
    local = torch.tensor([n, weight, bad], dtype=torch.float64, device=out.logits.device)
    total = local.clone()
    dist.all_reduce(total)
    if total[2] > 0:
        raise FloatingPointError(f"non-finite loss on {int(total[2])} rank(s): "
                                 f"{ {k: float(v) for k, v in terms.items()} } here")
    box = world * max(n, 1.0) / max(float(total[0]), 1.0)     # HF clamps each normaliser at 1
    ce = world * weight / float(total[1])
    return (terms["loss_ce"] * ce + (config.bbox_loss_coefficient * terms["loss_bbox"]
                                     + config.giou_loss_coefficient * terms["loss_giou"]) * box)


def train_one_epoch(model, optimizer, lr_scheduler, data_loader, device, state: TrainState, *,
                    precision: str = "bf16", scaler=None, max_grad_norm: float = 0.1, logger=None,
                    log_every: int = 10, on_step=None, max_steps: int | None = None,
                    eval_fn=None, eval_every: int | None = None, world: int = 1) -> dict:
    """One pass over ``data_loader``.

    Args:
        model: ``YolosForObjectDetection`` (computes its own loss from ``labels``).
        optimizer, lr_scheduler: stepped once per batch.
        state: step/epoch counters, advanced in place.
        precision: autocast precision for the forward (``yolo_common.device.autocast``).
        scaler: ``GradScaler`` (enabled only for fp16 on CUDA; a pass-through otherwise).
        max_grad_norm: gradient clipping (``<= 0`` disables it).
        logger: ``RunLogger`` receiving a train line every ``log_every`` steps.
        on_step: ``on_step(step)`` called before each forward (the progressive patch schedule).
        max_steps: stop once ``state.step`` reaches this.
        eval_fn, eval_every: ``eval_fn()`` every ``eval_every`` steps (mid-epoch evaluation).
        world: processes of a DDP run (``model`` is the DDP wrapper): the loss is rescaled to the global
            batch's normalisation (:func:`global_batch_loss`).

    Returns:
        Mean of each loss term over the epoch's steps.
    """
    model.train()
    sums: dict[str, float] = {}
    n = 0
    t0 = time.time()
    steps_this_epoch = len(data_loader)
    for i, (pixels, targets) in enumerate(data_loader):
        if max_steps is not None and state.step >= max_steps:
            break
        if on_step is not None:
            on_step(state.step)
        pixels = pixels.to(device, non_blocking=True)
        targets = move_targets(targets, device)
        with autocast(device, precision):
            out = model(pixel_values=pixels, labels=targets)
        loss = out.loss
        if world > 1:
            cfg = getattr(model, "module", model).config
            loss = global_batch_loss(out, targets, cfg, world)
        if not torch.isfinite(loss):
            # detectron2's rule: stop loudly with the terms rather than train on NaN
            terms = {k: float(v) for k, v in out.loss_dict.items()}
            raise FloatingPointError(f"non-finite loss at step {state.step}: {terms}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        grad_norm = float("nan")
        if max_grad_norm and max_grad_norm > 0:
            scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]   # the LR this step used (read before the scheduler moves it)
        lr_scheduler.step()

        terms = {"loss": float(loss.detach())} | {k: float(v.detach()) for k, v in out.loss_dict.items()}
        if world > 1:
            # the logged loss is the global batch's (the mean of the ranks' rescaled losses); the
            # individual terms stay this rank's own
            import torch.distributed as dist

            total = loss.detach().clone()
            dist.all_reduce(total)
            terms["loss"] = float(total) / world
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        state.step += 1
        if logger is not None and (state.step % log_every == 0 or state.step == 1):
            elapsed = time.time() - t0
            eta = elapsed / (i + 1) * (steps_this_epoch - i - 1)
            logger.log_train(state.step, state.epoch + (i + 1) / max(steps_this_epoch, 1), lr=lr,
                             grad_norm=grad_norm, **terms)
            log.info("epoch %d step %d/%d loss %.4f lr %.2e (%.2f s/it, epoch ETA %.0f s)", state.epoch,
                     state.step, state.total_steps, terms["loss"], lr, elapsed / (i + 1), eta)
        if eval_fn is not None and eval_every and state.step % eval_every == 0:
            eval_fn()
            model.train()
    return {k: v / max(n, 1) for k, v in sums.items()}


def postprocess(logits: torch.Tensor, pred_boxes: torch.Tensor, orig_sizes: torch.Tensor,
                top_k: int = 100) -> list[dict]:
    """DETR-style decoding: softmax over classes (no-object dropped), top-k queries, absolute xyxy.

    Args:
        logits: ``[B, Q, C + 1]``.
        pred_boxes: ``[B, Q, 4]`` normalised cx, cy, w, h.
        orig_sizes: ``[B, 2]`` (h, w) of the original images.

    Returns:
        Per image ``{"scores", "labels", "boxes"}`` with boxes in original-pixel xyxy.
    """
    probs = logits.float().softmax(-1)[..., :-1]
    scores, labels = probs.max(-1)
    cx, cy, w, h = pred_boxes.float().unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    hw = orig_sizes.to(xyxy)
    xyxy = xyxy * torch.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], -1)[:, None, :]
    out = []
    for s, l, b in zip(scores, labels, xyxy):
        k = min(top_k, s.numel())
        idx = s.topk(k).indices
        out.append({"scores": s[idx], "labels": l[idx], "boxes": b[idx]})
    return out


@torch.inference_mode()
def evaluate(model, data_loader, device, gt: dict, label_to_cat: dict[int, int], *,
             precision: str = "bf16") -> dict:
    """COCO mAP of ``model`` on ``data_loader`` through ``yolo_common.evaluation.coco_map``.

    Returns:
        The 12 COCO stats (``AP``, ``AP50``, ...), ``per_class`` AP, ``loss`` (mean eval loss) and
        ``num_images``.
    """
    from yolo_common.evaluation import coco_map

    model.eval()
    detections, loss_sum, n = [], 0.0, 0
    skipped_before = int(getattr(data_loader.dataset, "skipped", 0))   # the wrapper counts over the run
    t0, num_batches = time.time(), len(data_loader)
    # COCO val is 625 batches of 8; with patched (emulated) layers a batch can take seconds: report progress.
    report_every = max(1, num_batches // 10)
    for b, batch in enumerate(data_loader):
        if batch is None:   # every image of the batch unreadable (counted by SkipUnreadable)
            continue
        pixels, targets = batch
        pixels = pixels.to(device, non_blocking=True)
        targets = move_targets(targets, device)
        with autocast(device, precision):
            out = model(pixel_values=pixels, labels=targets)
        loss_sum += float(out.loss) * len(targets)
        n += len(targets)
        sizes = torch.stack([t["orig_size"] for t in targets])
        for t, res in zip(targets, postprocess(out.logits, out.pred_boxes, sizes)):
            for score, label, (x1, y1, x2, y2) in zip(res["scores"].tolist(), res["labels"].tolist(),
                                                      res["boxes"].tolist()):
                cat = label_to_cat.get(int(label))
                if cat is None:  # a label index with no category (COCO's unused ids): never a hit
                    continue
                detections.append({"image_id": int(t["image_id"]), "category_id": cat,
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
        if num_batches >= 20 and (b + 1) % report_every == 0 and b + 1 < num_batches:
            elapsed = time.time() - t0
            log.info("eval batch %d/%d (%.2f s/batch, ETA %.0f s)", b + 1, num_batches, elapsed / (b + 1),
                     elapsed / (b + 1) * (num_batches - b - 1))
    metrics = coco_map(gt, detections)
    metrics["loss"] = loss_sum / max(n, 1)
    metrics["num_images"] = n
    metrics["unreadable_images"] = int(getattr(data_loader.dataset, "skipped", 0)) - skipped_before
    if not math.isfinite(metrics["loss"]):
        log.warning("non-finite eval loss")
    return metrics
