"""``Trainer``: the training loop (``train_one_epoch``), validation every ``val_interval`` epochs, best by AP,
checkpoints, resume, logging. Single process or torchrun/DDP (gloo on CPU, nccl on CUDA).

Per step: a batch -> the device as float NCHW in [0, 1] (``utils.batches.DeviceBatches``: ``to_input``, or with
``gpu_collate`` the device-side letterbox/augmentation, and ``cuda_prefetch``) -> forward under autocast ->
DetectionLoss -> scaled backward;
the optimizer steps every ``accumulate = max(round(nbs / global batch), 1)`` batches (ultralytics' nominal
batch), with grad-norm clipping and an EMA update. A non-finite loss stops the run with a message naming the
step; the checkpoints on disk are the last good ones (they are written only after a finished epoch).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from yolo_common.checkpoint import CheckpointManager, load_checkpoint
from yolo_common.device import autocast, grad_scaler
from yolo_common.distributed import barrier, init_distributed
from yolo_common.runlog import RunLogger

from ..models import build_model
from ..utils.dataloaders import create_dataloader
from ..utils.batches import DeviceBatches
from ..utils.loss import DetectionLoss
from ..utils.plots import batch_grid
from ..utils.progress import bar
from .config import YOLOConfig
from .ema import ModelEMA, unwrap
from .optim import build_optimizer, set_lr
from .precision import resolve_precision
from .runtime import attach_runtime
from .validator import evaluate

log = logging.getLogger("yolov9001.train")


class NonFiniteLoss(FloatingPointError):
    pass


def compile_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """torch.compile with inductor. ``mode="max-autotune-no-cudagraphs"`` on CUDA: autotuned GEMM/conv
    templates without CUDA graphs (training shapes change at the last, smaller batch and graphs would be
    re-recorded); "default" on CPU, where autotuning only adds compile time. ``dynamic=False``: one graph
    per input shape (train and val sizes are fixed). First step costs 15-60 s of compilation."""
    mode = "max-autotune-no-cudagraphs" if device.type == "cuda" else "default"
    return torch.compile(model, mode=mode, dynamic=False)


class Trainer:
    """Builds everything from a ``YOLOConfig`` and ``--data``; ``train()`` runs to ``cfg.epochs``."""

    def __init__(self, cfg: YOLOConfig, data: str | Path, run_dir: Path, device: torch.device, *,
                 weights: str | None = None, resume: Path | None = None, compile: bool = False,
                 heavy: bool = False, progress: bool = True):
        self.cfg, self.data, self.run_dir, self.heavy, self.progress = cfg, str(data), Path(run_dir), heavy, progress
        self.dist = init_distributed(device)
        self.rank, self.world = self.dist.rank, self.dist.world_size
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.precision = resolve_precision(cfg["precision"], device)
        self.train_loader, self.train_ds = create_dataloader(
            data, "train", cfg, augment=cfg["augment"], rank=self.rank, world_size=self.world,
            progress=progress)
        self.val_loader = None
        if self.rank == 0:
            self.val_loader, _ = create_dataloader(data, "val", cfg, augment=False, shuffle=False, progress=progress)
        self.names = self.train_ds.split.class_names
        if cfg.nc is None:
            cfg.nc = len(self.names)
        elif cfg.nc != len(self.names):
            raise ValueError(f"config nc={cfg.nc} but --data {data} has {len(self.names)} classes")
        self.model = build_model(cfg.to_dict()).to(device)
        attach_runtime(self.model, cfg.imgsz, cfg)  # strides for the bias prior of a fresh model
        self.model.detect.bias_init(self.model.strides, cfg.imgsz, cfg.detect_bias_prior)
        if weights:
            load_weights(self.model, weights)
            attach_runtime(self.model, cfg.imgsz, cfg)  # after loading weights, as 9001.py promises
        self.global_batch = cfg.batch_size * self.world
        self.accumulate = max(round(cfg.nbs / self.global_batch), 1)
        self.optimizer = build_optimizer(self.model, cfg, cfg.batch_size, self.accumulate)
        self.scaler = grad_scaler(device, self.precision)
        self.ema = ModelEMA(self.model, cfg.ema_decay, cfg.ema_tau) if cfg.use_ema else None
        self.distiller = None
        if cfg.dino.enabled:   # the teacher itself loads on the first step (or at prewarm)
            from .distiller import Distiller

            # after the EMA: its deepcopy of the model must not copy the Distiller's feature hook
            self.distiller = Distiller(cfg, self.model, device)
            for group in self.distiller.param_groups(cfg, cfg["weight_decay"] * cfg.batch_size * self.accumulate
                                                     / cfg.nbs):
                self.optimizer.add_param_group(group)
        self.loss_fn = DetectionLoss(self.model, cfg)
        self.start_epoch, self.step, self.best_ap = 0, 0, None
        if resume is not None:
            self._resume(resume)
        self.forward_model = self.model
        if self.world > 1:
            self.forward_model = DDP(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if compile:
            self.forward_model = compile_model(self.forward_model, device)
        self.ckpt = CheckpointManager(self.run_dir / "checkpoints") if self.rank == 0 else None
        self.logger = RunLogger(self.run_dir, {"config": cfg.to_dict(), "data": self.data, "names": self.names,
                                               "world_size": self.world, "precision": self.precision},
                                rank=self.rank, resume_step=self.step if resume is not None else None)

    # ---- checkpoints ----
    def state(self, epoch: int) -> dict:
        """Everything a resume needs; plain tensors/numbers/strings only (``weights_only=True`` loads it)."""
        return {"epoch": epoch, "step": self.step, "best_ap": self.best_ap,
                "model": unwrap(self.model).state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                # the student-side distillation head (projections, prototypes); never the teacher's weights
                "distill": self.distiller.state_dict() if self.distiller else None,
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "config": self.cfg.to_dict(), "names": self.names, "data": self.data}

    def _resume(self, path: Path) -> None:
        ck = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(ck["model"])
        if self.ema and ck.get("ema"):
            self.ema.load_state_dict(ck["ema"])
        if self.distiller and ck.get("distill"):
            self.distiller.load_state_dict(ck["distill"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.start_epoch, self.step, self.best_ap = ck["epoch"] + 1, ck["step"], ck["best_ap"]
        log.info("resumed %s: epoch %d done, step %d, best AP %s", path, ck["epoch"], self.step, self.best_ap)
        if self.start_epoch >= self.cfg.epochs:
            log.warning("%s already finished all %d epochs; nothing to train", path, self.cfg.epochs)

    # ---- loop ----
    def train_one_epoch(self, epoch: int) -> dict:
        cfg, model = self.cfg, self.forward_model
        model.train()
        self.train_ds.set_epoch(epoch)
        self.train_loader.sampler.set_epoch(epoch)
        nb = len(self.train_loader)
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}   # DINO terms exist only on steps with teacher outputs
        seen, t0, t_data = 0, time.time(), 0.0
        pbar = bar(DeviceBatches(self.train_loader, cfg, self.device), total=nb, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="batch", disable=not (self.progress and self.rank == 0))
        self.optimizer.zero_grad(set_to_none=True)
        t_last = time.time()
        for it, (x, targets, metas) in enumerate(pbar):
            t_data += time.time() - t_last
            lr = set_lr(self.optimizer, cfg, epoch, it, nb)
            with autocast(self.device, self.precision):
                feats = model(x)
            dino = (self.distiller.batch(x, [m["index"] for m in metas], epoch, self.step)
                    if self.distiller else None)
            loss, items = self.loss_fn(feats, targets, epoch, dino=dino)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss ({float(loss.detach())}) at epoch {epoch + 1}, iteration {it} "
                                    f"(step {self.step}): {items}. Checkpoints in {self.run_dir / 'checkpoints'} "
                                    f"are from the last finished epoch; try a lower lr0, --hypo precision:fp32 "
                                    f"or grad_clip")
            self.scaler.scale(loss * self.world).backward()  # DDP averages grads; the v8 loss is a batch sum
            if (it + 1) % self.accumulate == 0 or it + 1 == nb:
                self._optimizer_step()
            loss_value = float(loss.detach()) / len(x)
            seen += len(x)
            dino_log = {}
            if self.distiller:
                dino_log = {k: v for k, v in items.items() if k.startswith("dino/")}
                dino_log.update(self.distiller.after_step(items, loss_value, self.optimizer))
            for k, v in {**{k: items[k] for k in ("box", "cls", "dfl", "l1")}, **dino_log}.items():
                totals[k] = totals.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            edge = unwrap(self.model).mean_hyperedge_size()
            if self.rank == 0:
                self.logger.log_train(self.step, epoch + it / nb, loss=loss_value, lr=lr,
                                      **{f"loss/{k}": items[k] for k in ("box", "cls", "dfl", "l1")},
                                      num_fg=items["num_fg"], hyperedge_size=edge, **dino_log)
                pbar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{seen / (time.time() - t0):.1f}",
                                 edge=f"{edge:.1f}" if edge is not None else "-")
                if self.heavy and it == 0:
                    self._heavy_log(x, targets)
            self.step += 1
            t_last = time.time()
        out = {k: v / max(counts[k], 1) for k, v in totals.items()}
        if self.distiller:   # counters, not means
            out["dino/skipped_steps"] = self.distiller.skipped_steps
            out["dino/teacher_loaded"] = float(self.distiller.teacher.loaded)
        out.update(images_per_s=seen * self.world / max(time.time() - t0, 1e-9), data_s=t_data,
                   unreadable=self.train_ds.skipped)
        return out

    def _optimizer_step(self) -> None:
        if self.world > 1 and self.distiller:
            self.distiller.sync_grads()   # the head is outside DDP
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip > 0:
            params = list(self.model.parameters())
            if self.distiller and self.distiller.head is not None:
                params += list(self.distiller.head.parameters())
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema:
            self.ema.update(self.model)

    def _heavy_log(self, x, targets) -> None:
        tb = self.logger.tb_writer()
        if tb is None:
            return
        images = (x.detach() * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu()
        tb.add_image("train/batch", batch_grid(images, targets.cpu(), self.names), self.step, dataformats="HWC")
        for name, p in unwrap(self.model).named_parameters():
            if name.endswith("weight") and p.ndim > 1:
                tb.add_histogram(f"weights/{name}", p.detach().float().cpu(), self.step)

    def eval_model(self):
        return self.ema.ema if self.ema else unwrap(self.model)

    def train(self) -> dict:
        cfg = self.cfg
        result: dict = {}
        if self.distiller and cfg.dino.prewarm and self.distiller.active(self.start_epoch):
            self.distiller.prewarm()
        for epoch in range(self.start_epoch, cfg.epochs):
            stats = self.train_one_epoch(epoch)
            if self.distiller:
                self.distiller.end_epoch(epoch, self.optimizer)
                if self.world > 1:
                    self.distiller.check_synced()
                if self.rank == 0 and any(k.startswith("dino/") for k in stats):
                    share = {k: round(v, 4) for k, v in stats.items() if k.startswith("dino/") and k != "dino/share"}
                    log.info("epoch %d DINO (means per step): %s; share of the loss %.3f", epoch + 1, share,
                             stats.get("dino/share", 0.0))
            metrics = None
            last = epoch + 1 == cfg.epochs
            if self.rank == 0 and ((epoch + 1) % cfg.val_interval == 0 or last):
                ev = evaluate(self.eval_model(), self.val_loader, self.device, self.precision, progress=self.progress)
                metrics = ev["coco"]
                # at the epoch's last step: a resume starts at self.step and trims what follows it
                self.logger.log_eval(self.step - 1, epoch + 1, **{k: v for k, v in metrics.items()
                                                              if isinstance(v, float)})
                if self.best_ap is None or metrics["AP"] > self.best_ap:
                    self.best_ap = metrics["AP"]
                log.info("epoch %d/%d: loss box %.3f cls %.3f dfl %.3f | AP %.4f AP50 %.4f (best %.4f) | %.1f img/s",
                         epoch + 1, cfg.epochs, stats["box"], stats["cls"], stats["dfl"], metrics["AP"],
                         metrics["AP50"], self.best_ap, stats["images_per_s"])
                result = {"epoch": epoch + 1, **{k: metrics[k] for k in ("AP", "AP50", "AP75")}}
                if last:   # samples/val.png: 4 val images, ground truth | the EMA model's detections
                    from yolo_common.draw import samples_grid

                    split = self.val_loader.dataset.split
                    samples_grid(split.records, ev["detections"], split.categories,
                                 self.run_dir / "samples" / "val.png", n=4)
            if stats["unreadable"] and self.rank == 0:
                log.warning("%d unreadable images skipped so far", stats["unreadable"])
            if self.rank == 0:
                self.ckpt.save(self.state(epoch), epoch=epoch, metric=None if metrics is None else metrics["AP"])
            barrier()
        if self.distiller:
            self.distiller.close()
        if self.rank == 0:
            self.logger.close()
            result["best_ap"] = self.best_ap
            result["run_dir"] = str(self.run_dir)
        return result


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Loads model weights from a checkpoint of this project (EMA preferred) or a plain state dict."""
    ck = load_checkpoint(path, map_location="cpu")
    if isinstance(ck, dict) and "model" in ck:
        sd = ck["ema"]["model"] if ck.get("ema") else ck["model"]
    else:
        sd = ck
    try:
        unwrap(model).load_state_dict(sd, strict=True)
    except RuntimeError as e:  # missing / unexpected keys or shape mismatches, named by torch
        raise ValueError(f"{path}: weights do not fit this model (--scale / nc?): {str(e)[:800]}") from None
