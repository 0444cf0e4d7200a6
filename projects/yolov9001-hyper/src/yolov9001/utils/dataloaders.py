"""``create_dataloader``: ``--data`` root + split -> (DataLoader, dataset), with caches, workers and DDP
sharding from the config (``shuffle``, ``persistent_workers``, ``prefetch_factor``, ``cache``, ``gpu_collate``...).

The sampler is always a ``DistributedSampler`` (one replica without DDP): its order is a function of
(seed, epoch), so ``set_epoch`` gives each epoch a new, reproducible order, also after a resume.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler
from yolo_common.data import SkipUnreadable, UnreadableImage, drop_none, verify_images

from .dataset import DetectionDataset, collate
from .device_collate import pack_collate
from .datasets import cache_root, load_dataset_split

log = logging.getLogger("yolov9001.data")


def create_dataloader(data: str | Path, split: str, cfg, *, batch_size: int | None = None, augment: bool = False,
                      workers: int | None = None, rank: int = 0, world_size: int = 1, shuffle: bool | None = None,
                      cache: str | None = None, progress: bool = True, dataset_cls=DetectionDataset):
    """Returns (loader, dataset). ``cache`` defaults to ``cfg['cache']`` (``--cache``). The dataset is the
    ``DetectionDataset`` wrapped in ``SkipUnreadable`` (attributes pass through; ``.skipped`` counts);
    ``dataset_cls`` swaps in a subclass (the augmentation validator's box-mask dataset)."""
    split_data = load_dataset_split(data, split)
    if not len(split_data):
        raise ValueError(f"--data {data}: split {split!r} has no images")
    if cfg["verify_images"]:
        split_data = verify_images(split_data, progress=progress)
    if split_data.skipped.counts:
        log.info("%s/%s: %s", data, split, split_data.skipped.summary())
    mode = cfg["cache"] if cache is None else cache
    cache_dir = cache_root(Path(data)) / f"images_{split_data.split}_{cfg['imgsz']}"
    ds = dataset_cls(split_data, cfg, cfg["imgsz"], augment, cache=mode, cache_dir=cache_dir,
                          cache_compression=cfg["cache_compression"], seed=cfg["seed"],
                          device_mode=cfg["gpu_collate"])
    ds.cache.build(progress=progress and rank == 0)
    # An image that fails to decode: training takes the next sample; validation drops it from the batch
    # (its objects then count as misses: the AP is honest about what was not seen). Counted in
    # ``ds.skipped`` across workers and logged once per file.
    ds = SkipUnreadable(ds, mode="replace" if augment else "drop", errors=(UnreadableImage,))
    shuffle = cfg["shuffle"] and augment if shuffle is None else shuffle
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=cfg["seed"],
                                 drop_last=False)
    workers = cfg["workers"] if workers is None else workers
    kwargs = {}
    if workers > 0:
        kwargs = {"persistent_workers": cfg["persistent_workers"], "prefetch_factor": cfg["prefetch_factor"]}
    # gpu_collate: the workers pack unpadded images; utils.batches.DeviceBatches finishes them on the device
    fn = pack_collate if cfg["gpu_collate"] else collate
    loader = DataLoader(ds, batch_size=batch_size or cfg["batch_size"], sampler=sampler, num_workers=workers,
                        collate_fn=fn if augment else drop_none(fn), pin_memory=torch.cuda.is_available(),
                        drop_last=False, **kwargs)
    return loader, ds
