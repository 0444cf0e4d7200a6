"""The device half of ``gpu_collate``: a worker-side ``pack_collate`` and a device-side ``DeviceCollate``.

``pack_collate`` (in the DataLoader workers) concatenates the samples' uint8 pixels into one flat buffer, at
their own (unpadded) sizes, with their shapes, source -> output matrices, HSV gains, filter limits and boxes in
source coordinates. Only the decoded bytes travel: a 4:3 image at 640 is 640 x 480 x 3 = 0.92 MB instead of
the 1.23 MB letterboxed square, and the pinned buffer goes to the device in one copy.

``DeviceCollate`` (in the training process) turns that into the model input on the device, for the whole batch
at once: place each image, then one ``grid_sample`` for letterbox + affine + flips (skipped when every matrix
is a whole-pixel shift, as in validation: the images are then copied into place, pixel-exact), HSV jitter on
the samples that have it, /255; the boxes go through the same matrices with ``augment``'s filter rules on the
host (a few hundred numbers: no device round trip).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from . import device_ops as D

IDENTITY_HSV = (0.0, 1.0, 1.0)


def pack_collate(batch):
    """Device-mode samples -> a packed batch (``None`` for a batch that validation emptied):
    ``{"pixels": flat uint8, "host": {shapes, matrices, hsv, filters, targets}, "metas": [...]}``.
    Only ``pixels`` goes to the device; everything under ``host`` is read there (``CudaPrefetcher`` leaves it
    in place), so the device code never syncs to read metadata back."""
    if not batch:
        return None
    imgs, targets, metas = zip(*batch)
    params = [m.pop("device") for m in metas]
    rows = [torch.cat((torch.full((len(t), 1), float(k)), t), 1) for k, t in enumerate(targets)]
    return {
        "pixels": torch.cat([im.reshape(-1) for im in imgs]),
        "host": {
            "shapes": torch.tensor([im.shape[:2] for im in imgs], dtype=torch.int64),
            "matrices": torch.from_numpy(np.stack([p["matrix"] for p in params]).astype(np.float64)),
            "hsv": torch.tensor([IDENTITY_HSV if p["hsv"] is None else tuple(p["hsv"]) for p in params],
                                dtype=torch.float32),
            "filters": torch.tensor([p["filter"] for p in params], dtype=torch.float64),
            "targets": torch.cat(rows) if rows else torch.zeros(0, 6),
        },
        "metas": list(metas),
    }


def is_packed(batch) -> bool:
    return isinstance(batch, dict) and "pixels" in batch


def packed_nbytes(batch) -> int:
    """Bytes the host -> device copy moves for a packed batch: the pixels (targets follow as [N, 6] floats)."""
    return batch["pixels"].numel() + batch["host"]["targets"].numel() * 4


class DeviceCollate:
    """packed batch -> (x float [B, 3, S, S] in [0, 1] on ``device``, targets [N, 6] xyxy px on ``device``,
    metas).

    Pixels are placed, warped and jittered on the device; the box transform and filter (the same
    ``device_ops`` code) run on the host copy of the targets, so no step reads a device value back.
    ``colour=False`` skips HSV (the validator's box-mask run). ``profile=True`` synchronises around the work
    and records ``last_ms`` = {"h2d", "letterbox", "aug"} (the validator's timings); training leaves it off.
    """

    def __init__(self, size: int, pad_value: int, device, profile: bool = False, colour: bool = True):
        self.size, self.pad_value, self.device, self.profile = size, pad_value, torch.device(device), profile
        self.colour = colour
        self.last_ms: dict[str, float] = {}

    def _clock(self) -> float:
        if self.profile and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __call__(self, batch: dict):
        s, pad, dev = self.size, self.pad_value, self.device
        host = batch["host"]
        t0 = self._clock()
        pixels = batch["pixels"].to(dev, non_blocking=True)   # a no-op when the prefetcher moved it
        t1 = self._clock()
        shapes = host["shapes"].tolist()
        m = host["matrices"]
        b = len(shapes)
        # whole-pixel shifts only (validation, or training with every knob at 0 on square inputs): place
        shift = m[:, :2, 2]
        placed = bool((m[:, :2, :2] == torch.eye(2, dtype=m.dtype)).all() and (m[:, 2, :2] == 0).all()
                      and (shift == shift.round()).all())
        if placed:
            canvas = torch.full((b, s, s, 3), pad, dtype=torch.uint8, device=dev)
            offsets = shift.long().tolist()
        else:   # top-left in a buffer just big enough; the matrices carry the rest
            canvas = torch.full((b, max(h for h, _ in shapes), max(w for _, w in shapes), 3), pad,
                                dtype=torch.uint8, device=dev)
            offsets = [(0, 0)] * b
        start = 0
        for k, ((h, w), (ox, oy)) in enumerate(zip(shapes, offsets)):
            img = pixels[start:start + h * w * 3].view(h, w, 3)
            start += h * w * 3
            # clip to the canvas (a shift never pushes a letterboxed image out, but stay safe)
            x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + w, canvas.shape[2]), min(oy + h, canvas.shape[1])
            if x1 > x0 and y1 > y0:
                canvas[k, y0:y1, x0:x1] = img[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        x = canvas.permute(0, 3, 1, 2).float()
        t2 = self._clock()
        if not placed:
            x = D.warp_images(x, m, s, float(pad))
        gains = host["hsv"]
        jitter = (gains != torch.tensor(IDENTITY_HSV)).any(1).nonzero().flatten().tolist() if self.colour else []
        if jitter:
            idx = torch.tensor(jitter)
            x[D.to_device(idx, dev)] = D.hsv_jitter(x[D.to_device(idx, dev)], gains[idx])
        x = x.div_(255).contiguous()
        targets = D.to_device(self._boxes(host["targets"], m, host["filters"]), dev)
        t3 = self._clock()
        if self.profile:
            self.last_ms = {"h2d": (t1 - t0) * 1e3, "letterbox": (t2 - t1) * 1e3, "aug": (t3 - t2) * 1e3}
        return x, targets, batch["metas"]

    def _boxes(self, targets: torch.Tensor, m: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        if not len(targets):
            return targets.reshape(0, 6).float()
        bi = targets[:, 0].long()
        boxes = D.warp_boxes(targets[:, 2:6], m[bi])
        clipped, keep = D.filter_boxes(boxes, self.size, self.size, filters[bi, 0], filters[bi, 1])
        return torch.cat((targets[keep, :2].float(), clipped[keep].float()), 1)
