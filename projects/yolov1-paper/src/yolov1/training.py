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
    # Said at start-up because `accelerate launch --cpu --num_processes 2` quietly starts ONE process
    # (accelerate's simple launcher); two CPU processes need `--multi_gpu --num_processes 2` (gloo).
    accelerator.print(f"{accelerator.num_processes} process(es), {accelerator.distributed_type.value}, "
                      f"device {accelerator.device}")
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


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation that is a function of (seed, epoch) only, so a resumed run draws the same order at
    epoch E as a run that never stopped (a generator seeded once and consumed epoch after epoch cannot:
    its state after E epochs is not in any checkpoint). ``set_epoch`` is called by accelerate's prepared
    loader (``loader.set_epoch``), also through its multi-process ``BatchSamplerShard``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class WorkerSeeder:
    """``worker_init_fn``: seeds torch/numpy/random in each loader worker from (seed, epoch, rank, worker id),
    so random transforms that use the global RNGs (torchvision's, in pretraining) are the same in a resumed
    run and differ between ranks (``RANK`` is set by accelerate's / torchrun's launcher and inherited by
    the workers). Picklable (a class, not a closure) for spawned workers."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __call__(self, worker_id: int) -> None:
        import random

        import numpy as np

        info = torch.utils.data.get_worker_info()
        epoch = int(getattr(info.dataset, "epoch", 0)) if info is not None else 0
        import os

        rank = int(os.environ.get("RANK", 0))
        s = (self.seed * 1_000_003 + epoch * 1_009 + rank * 101 + worker_id) % 2**32
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)


def make_loader(dataset, batch_size: int, *, train: bool, num_workers: int, seed: int, collate_fn=None) -> DataLoader:
    """A DataLoader; in training: per-epoch shuffling (``EpochShuffleSampler``), ``drop_last`` (a 1-image last
    batch is all noise) and workers re-created every epoch.

    Why not persistent workers in training: a persistent worker keeps the dataset copy it was started with,
    so ``set_epoch`` never reaches it and every image gets the same augmentation draw for the whole run.
    Re-forking costs one worker start-up per epoch (a fraction of a second each, against minutes of VOC).

    The dataset goes in ``SkipUnreadable`` (its loads raise ``UnreadableImage`` for a file that does
    not decode): training takes the next readable image, evaluation gets the dataset's
    ``placeholder`` (one sample per index, so accelerate's ``gather_for_metrics`` still trims the
    padding of a multi-process last batch correctly; the placeholder is scored as "no detections").
    ``loader.dataset.skipped`` counts them over all workers. Call :func:`start_epoch` before each epoch.
    """
    from yolo_common.data import SkipUnreadable

    workers = max(0, int(num_workers))
    dataset = SkipUnreadable(dataset, mode="replace" if train else "placeholder")
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochShuffleSampler(len(dataset), seed) if train else None,
                      drop_last=train and len(dataset) > batch_size, num_workers=workers,
                      persistent_workers=workers > 0 and not train, pin_memory=torch.cuda.is_available(),
                      collate_fn=collate_fn, worker_init_fn=WorkerSeeder(seed) if train and workers else None)


def start_epoch(loader, epoch: int) -> None:
    """What every training epoch needs before its first batch: the epoch on the dataset (the main-process
    copy the workers are forked from) and on the loader itself.

    The prepared loader's own counter matters: accelerate's ``DataLoaderShard.__iter__`` calls
    ``set_epoch(self.iteration)`` on the sampler (or, without one, the dataset) and only advances it
    when a pass runs to the end, so it restarts at 0 in a resumed process and never moves when
    ``max_train_batches`` cuts an epoch short. Setting it to our epoch makes both cases right.
    """
    dataset = loader.dataset
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if hasattr(loader, "set_epoch"):      # accelerate's prepared loader
        loader.set_epoch(epoch)
    elif hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


def wandb_kwargs(cfg, run_dir: Path) -> dict:
    """``RunLogger`` keyword arguments for the optional W&B mirror."""
    if not cfg.wandb:
        return {}
    return {"report_to": "wandb", "wandb_project": cfg.wandb_project, "wandb_run_name": run_dir.name,
            "wandb_mode": cfg.wandb_mode}
