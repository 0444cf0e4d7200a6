"""Pieces both training CLIs share: accelerator, run folder, data loaders, schedule from a config."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader

from .scheduler import StepSchedule

T = TypeVar("T")


def build_accelerator(cpu: bool = False, mixed_precision: str = "no"):
    """An ``Accelerator`` for this process; falls back to the CPU when no GPU is visible.

    Works the same under ``accelerate launch`` (multi-GPU: it reads the launcher's environment) and
    plain ``python -m`` (one process, no ``accelerate config`` needed).
    """
    from accelerate import Accelerator

    use_cpu = cpu or not torch.cuda.is_available()
    return Accelerator(cpu=use_cpu, mixed_precision=mixed_precision)


def release_accelerator(accelerator) -> None:
    """Forgets accelerate's process-wide state after a single-process run, so that another run can
    start in the same Python process (the smoke pipeline, tests). No-op for multi-process runs."""
    if accelerator.num_processes == 1:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def run_directory(accelerator, output_dir: str, run_name: str) -> Path:
    """``output_dir/run_name`` (a timestamp when empty), the same on every process."""
    from accelerate.utils import broadcast_object_list

    name = [run_name or time.strftime("%Y%m%d-%H%M%S")]
    if accelerator.num_processes > 1:
        broadcast_object_list(name)  # every rank must write to the folder rank 0 named
    return Path(output_dir) / name[0]


def run_training(cfg, body: Callable[..., T], **config_extra: Any) -> T:
    """The skeleton both training CLIs share; returns ``body(cfg, accelerator, run, run_dir, seed)``.

    Validates ``cfg``, builds the accelerator (released afterwards, also on error, so another run can
    start in this process), seeds everything, names the run folder (the same on every rank) and opens
    its ``RunLogger`` (``config.json`` = config + seed + process count + ``config_extra``; closed
    afterwards: curves written, W&B finished).
    """
    from yolo_common.device import seed_everything
    from yolo_common.runlog import RunLogger

    cfg.validate()
    accelerator = build_accelerator(cfg.cpu, cfg.mixed_precision)
    try:
        seed = seed_everything(cfg.seed)
        run_dir = run_directory(accelerator, cfg.output_dir, cfg.run_name)
        # Resuming from step S (records are logged at "steps done"): the killed process's records after
        # S are cut from logs/*.jsonl and TensorBoard is purged from S + 1, so each step appears once.
        resume_step = None
        if cfg.resume_from:
            from .checkpoints import read_meta, resolve_checkpoint

            resume_step = int(read_meta(resolve_checkpoint(cfg.resume_from)).get("step", 0)) + 1
        with RunLogger(run_dir, {"config": cfg, "seed": seed, "num_processes": accelerator.num_processes,
                                 **config_extra},
                       rank=accelerator.process_index, resume_step=resume_step,
                       **wandb_kwargs(cfg, run_dir)) as run:
            return body(cfg, accelerator, run, run_dir, seed)
    finally:
        release_accelerator(accelerator)


def schedule_from(cfg) -> StepSchedule:
    """The warm-up + step schedule a config describes."""
    return StepSchedule(lr=cfg.lr, warmup_epochs=cfg.warmup_epochs, warmup_start=cfg.warmup_start,
                        milestones=tuple(float(m) for m in cfg.lr_milestones), gamma=cfg.lr_gamma)


def make_loader(dataset, batch_size: int, *, train: bool, num_workers: int, seed: int, collate_fn=None) -> DataLoader:
    """A DataLoader with seeded shuffling; ``drop_last`` in training (a 1-image last batch is all noise).

    The dataset goes in ``SkipUnreadable`` (its loads raise ``UnreadableImage`` for a file that does
    not decode): training takes the next readable image, evaluation gets the dataset's
    ``placeholder`` (one sample per index, so accelerate's ``gather_for_metrics`` still trims the
    padding of a multi-process last batch correctly; the placeholder is scored as "no detections").
    ``loader.dataset.skipped`` counts them over all workers.
    """
    from yolo_common.data import SkipUnreadable

    g = torch.Generator()
    g.manual_seed(seed)
    workers = max(0, int(num_workers))
    dataset = SkipUnreadable(dataset, mode="replace" if train else "placeholder")
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) > batch_size,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                      collate_fn=collate_fn, generator=g)


def wandb_kwargs(cfg, run_dir: Path) -> dict:
    """``RunLogger`` keyword arguments for the optional W&B mirror."""
    if not cfg.wandb:
        return {}
    return {"report_to": "wandb", "wandb_project": cfg.wandb_project, "wandb_run_name": run_dir.name,
            "wandb_mode": cfg.wandb_mode}
