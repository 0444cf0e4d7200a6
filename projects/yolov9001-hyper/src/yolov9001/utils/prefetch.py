"""``CudaPrefetcher`` (``cuda_prefetch``): copies the next ``buffer_depth`` batches to the device on a side
CUDA stream while the current step runs, so the H2D copy overlaps compute instead of preceding it.

The batches must come from pinned memory (the DataLoader pins them when CUDA is present) for
``non_blocking=True`` to be asynchronous. Before a batch is handed out the compute stream waits for its copy
event, and every tensor is ``record_stream``-ed on the compute stream so the caching allocator does not reuse
its memory while the step still reads it. Cost: ``buffer_depth`` + 1 batches of device memory (the next copy is
issued before the current batch is handed out).

On a device other than CUDA there is no side stream: each batch is moved when it is taken (the same result,
no overlap). ``h2d_bytes`` counts the bytes of every tensor moved, on any device.
"""

from __future__ import annotations

from collections import deque

import torch


def move(obj, device, non_blocking: bool = True):
    """Tensors inside (nested) tuples / lists / dicts -> ``device``; returns (moved, bytes). A dict's ``"host"``
    entry stays where it is: metadata that the device code reads on the host (``device_collate``)."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking), obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        items = {k: (v, 0) if k == "host" else move(v, device, non_blocking) for k, v in obj.items()}
        return {k: v[0] for k, v in items.items()}, sum(v[1] for v in items.values())
    if isinstance(obj, (list, tuple)):
        items = [move(v, device, non_blocking) for v in obj]
        return type(obj)(v[0] for v in items), sum(v[1] for v in items)
    return obj, 0


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k != "host":
                yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


class CudaPrefetcher:
    """Iterable over ``loader`` whose batches are already on ``device`` (``None`` batches pass through)."""

    def __init__(self, loader, device, buffer_depth: int = 2):
        if buffer_depth < 1:
            raise ValueError(f"buffer_depth must be >= 1, got {buffer_depth}")
        self.loader, self.device, self.depth = loader, torch.device(device), buffer_depth
        self.h2d_bytes = 0          # total over the iteration
        self.last_h2d_bytes = 0     # the batch handed out last

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        it = iter(self.loader)
        if self.device.type != "cuda":
            for batch in it:
                moved, n = move(batch, self.device)
                self.h2d_bytes += n
                self.last_h2d_bytes = n
                yield moved
            return
        stream = torch.cuda.Stream(self.device)
        queue: deque = deque()

        def issue() -> bool:
            batch = next(it, StopIteration)
            if batch is StopIteration:
                return False
            with torch.cuda.stream(stream):
                moved, n = move(batch, self.device)
                event = torch.cuda.Event()
                event.record(stream)
            queue.append((moved, n, event))
            return True

        for _ in range(self.depth):
            if not issue():
                break
        compute = torch.cuda.current_stream(self.device)
        while queue:
            moved, n, event = queue.popleft()
            compute.wait_event(event)
            for t in _tensors(moved):
                t.record_stream(compute)
            issue()
            self.h2d_bytes += n
            self.last_h2d_bytes = n
            yield moved
