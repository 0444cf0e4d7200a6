"""``DeviceBatches``: a DataLoader -> (x float [B, 3, S, S] in [0, 1] on the device, targets [N, 6], metas),
whichever data path the config picks. Trainer, validator and benchmark all iterate through it.

- default: uint8 HWC letterboxed batches from the workers, ``to_input`` on the device;
- ``gpu_collate``: packed unpadded batches, letterbox / affine / flips / HSV on the device (``DeviceCollate``);
- ``cuda_prefetch`` (either path): ``CudaPrefetcher`` copies ``buffer_depth`` batches ahead on a side stream.
"""

from __future__ import annotations

import logging

import torch

from .dataset import to_input
from .device_collate import DeviceCollate, is_packed, packed_nbytes
from .prefetch import CudaPrefetcher

log = logging.getLogger("yolov9001.data")


class DeviceBatches:
    def __init__(self, loader, cfg, device, profile: bool = False):
        self.loader, self.device = loader, torch.device(device)
        self.prefetcher = None
        if cfg["cuda_prefetch"]:
            if self.device.type != "cuda":
                log.info("cuda_prefetch: no CUDA device (%s); batches are copied when taken", self.device)
            self.prefetcher = CudaPrefetcher(loader, self.device, cfg["buffer_depth"])
        self.collate = DeviceCollate(cfg["imgsz"], cfg["pad_value"], self.device, profile=profile)
        self.h2d_bytes = 0          # image + target bytes of every batch handed to the device
        self.last_h2d_bytes = 0

    def __len__(self) -> int:
        return len(self.loader)

    def convert(self, batch):
        if batch is None:   # validation dropped every image of the batch
            return None
        if is_packed(batch):
            return self.collate(batch)
        images, targets, metas = batch
        return to_input(images, self.device), targets, metas

    def __iter__(self):
        for batch in (self.prefetcher if self.prefetcher is not None else self.loader):
            if batch is not None:
                self.last_h2d_bytes = batch_nbytes(batch)
                self.h2d_bytes += self.last_h2d_bytes
            yield self.convert(batch)


def batch_nbytes(batch) -> int:
    """Bytes of the tensors a loader batch sends to the device (packed dict, or images + targets)."""
    if is_packed(batch):
        return packed_nbytes(batch)
    return sum(t.numel() * t.element_size() for t in batch[:2])
