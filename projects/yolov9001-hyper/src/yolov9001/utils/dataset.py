"""``DetectionDataset``: records -> (image tensor CHW uint8, targets, meta), with the CPU augmentations.

Randomness is a function of (seed, epoch, index) only (``np.random.default_rng([seed, epoch, index])``):
the same sample gets the same augmentation whatever the worker count, and a resumed run replays exactly.
The epoch lives in shared memory (``multiprocessing.Value``), so persistent DataLoader workers see
``set_epoch`` (and the ``close_mosaic`` switch) without being restarted.

An image that fails to decode raises ``yolo_common.data.UnreadableImage``; ``create_dataloader`` wraps the
dataset in ``yolo_common.data.SkipUnreadable``, which logs it once, counts it across workers and replaces
the sample (training) or drops it from the batch (validation), so one bad file never ends an epoch.

**Device mode** (``gpu_collate``): the worker makes every random draw of the CPU path, in the same order, but
leaves the per-sample pixel work to the device. It returns the unpadded resized image (or, for a mosaic, the
mosaic canvas) with its boxes, and the parameters in ``meta["device"]``: the source -> output matrix
(letterbox offset, affine and flips folded into one), the HSV gains and the box-filter limits.
``device_collate.DeviceCollate`` then letterboxes, warps, jitters and filters whole batches on the device, and
its boxes equal the CPU path's for the same seed (a test). Mixup needs both images warped before the blend,
so a mixup sample is warped on the CPU (``mixup`` x mosaic share of the samples) and ships with an identity
matrix.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from yolo_common.data import DatasetSplit, UnreadableImage
from yolo_common.preprocess import read_image

from . import augment as A
from .cache import ImageCache

log = logging.getLogger("yolov9001.data")


def load_resized(path: Path, size: int) -> np.ndarray:
    """Decode and resize so the long side is ``size``: r = min(S/h, S/w), PIL bilinear to round(w*r) x
    round(h*r), exactly ``yolo_common.preprocess.letterbox``'s resize (so validation pixels equal the ONNX
    evaluator's)."""
    img = read_image(path)
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = max(1, round(w * r)), max(1, round(h * r))
    if (nw, nh) != (w, h):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    return img


class DetectionDataset(Dataset):
    """One split. ``augment``: training transforms (mosaic, copy-paste, affine, mixup, HSV, flips)."""

    def __init__(self, split: DatasetSplit, cfg, imgsz: int, augment: bool, cache: str = "none",
                 cache_dir: Path | None = None, cache_compression: str = "none", seed: int = 0,
                 device_mode: bool = False):
        self.split, self.cfg, self.imgsz, self.augment, self.seed = split, cfg, imgsz, augment, seed
        self.device_mode = device_mode
        self.colour = True   # False: HSV gains are drawn (same random stream) but not applied (box-mask runs)
        self._times = {"load": 0.0, "letterbox": 0.0}   # this process's per-sample timings (reset per item)
        self.records = split.records
        index = split.category_id_to_index
        # Model class k = split.categories[k]; crowd boxes are not trained on (COCO eval ignores them).
        self.labels = []
        for r in self.records:
            keep = ~r.iscrowd
            self.labels.append((r.boxes[keep].astype(np.float32),
                                np.array([index[int(c)] for c in r.category_ids[keep]], np.int64)))
        self._epoch = mp.Value("i", 0)
        self.cache = ImageCache([r.path for r in self.records], imgsz, lambda p: load_resized(p, imgsz), cache,
                                cache_dir, cache_compression)

    def __len__(self) -> int:
        return len(self.records)

    # ---- epoch / counters (shared with workers) ----
    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch.value

    def describe(self, i: int) -> str:
        """The file behind index i (SkipUnreadable names it in its log line)."""
        return str(self.records[i].path)

    def mosaic_active(self) -> bool:
        c = self.cfg
        return self.augment and c["epochs"] - self.epoch > c["close_mosaic"]

    # ---- loading ----
    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(resized image, boxes scaled to it, classes); raises UnreadableImage for an undecodable image."""
        t0 = time.perf_counter()
        try:
            img = self.cache.get(i)
        except Exception as e:  # whatever the decoder raises (a patched PIL included); only the decode
            raise UnreadableImage(f"{self.records[i].path}: {type(e).__name__}: {e}") from e
        r = self.records[i]
        f = img.shape[1] / r.width, img.shape[0] / r.height
        boxes, cls = self.labels[i]
        self._tick("load", t0)
        return img, boxes * np.array([f[0], f[1], f[0], f[1]], np.float32), cls

    def _tick(self, key: str, t0: float) -> None:
        self._times[key] += (time.perf_counter() - t0) * 1e3

    def _plain(self, i: int) -> tuple[A.Sample, tuple[int, int]]:
        img, boxes, cls = self.load(i)
        t0 = time.perf_counter()
        img, boxes, pad = A.letterbox_pad(img, boxes, self.imgsz, self.cfg["letterbox_center"], self.cfg["pad_value"])
        self._tick("letterbox", t0)
        return (img, boxes, cls), pad

    def _geometric(self, i: int, rng: np.random.Generator) -> A.Sample:
        """Mosaic (or one letterboxed image), optional copy-paste, then the random affine.

        Without copy-paste (which pastes onto the canvas) the canvas is never built: the fused warps of
        ``augment`` resample each image once, straight into the output.
        """
        c, s = self.cfg, self.imgsz
        use_mosaic = self.mosaic_active() and rng.random() < c["mosaic"]
        paste = self.mosaic_active() and c["copy_paste"] and rng.random() < c["copy_paste"]
        if use_mosaic:
            idx = [i, *rng.integers(0, len(self), 3).tolist()]
            tiles = [self.load(k) for k in idx]
            if not paste and A.is_axis_aligned(c):
                return A.mosaic_affine(tiles, rng, c, s)
            sample = A.mosaic(tiles, rng, c, s)
        elif not paste:
            return A.letterbox_affine(self.load(i), rng, c, s)
        else:
            sample, _ = self._plain(i)
        if paste:
            donor, _ = self._plain(int(rng.integers(0, len(self))))
            sample = A.copy_paste(sample, donor, rng, c["copy_paste_max_overlap"])
        return A.random_affine(sample, rng, c, s)

    def __getitem__(self, i: int):
        # per-sample worker times (ms) for the augmentation validator's metrics.csv: decode/cache read,
        # separate letterbox pads, and everything else the CPU does (mosaic, copy-paste, warps, HSV...)
        self._times = {"load": 0.0, "letterbox": 0.0}
        t0 = time.perf_counter()
        item = self._device_item(i) if self.device_mode else self._cpu_item(i)
        total = (time.perf_counter() - t0) * 1e3
        item[2]["times_ms"] = {**self._times, "cpu_aug": total - self._times["load"] - self._times["letterbox"]}
        return item

    def _cpu_item(self, i: int):
        c = self.cfg
        if not self.augment:
            (img, boxes, cls), pad = self._plain(i)
            r = self.records[i]
            ratio = min(self.imgsz / r.height, self.imgsz / r.width)
            meta = {"index": i, "image_id": int(r.image_id), "orig": (r.height, r.width), "ratio": ratio, "pad": pad}
            boxes, cls = A.filter_boxes(boxes, cls, self.imgsz, self.imgsz, 0.0, 0.0)
            return self._to_tensor(img, boxes, cls, meta)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        img, boxes, cls = self._geometric(i, rng)
        if self.mosaic_active() and c["mixup"] and rng.random() < c["mixup"]:
            other = self._geometric(int(rng.integers(0, len(self))), rng)
            img, boxes, cls = A.mixup((img, boxes, cls), other, rng)
        gains = A.hsv_gains(rng, c["hsv_h"], c["hsv_s"], c["hsv_v"])
        if gains is not None and self.colour:
            img = A.apply_hsv(img, gains)
        if rng.random() < c["fliplr"]:
            img, boxes = A.flip(img, boxes, horizontal=True)
        if rng.random() < c["flipud"]:
            img, boxes = A.flip(img, boxes, horizontal=False)
        return self._to_tensor(img, boxes, cls, {"index": i})

    # ---- device mode: the CPU path's draws, the pixel work left to DeviceCollate ----
    def _affine_draw(self, boxes, cls, rng, always: bool) -> np.ndarray:
        """The matrix the CPU path would draw. ``always``: the fused ops (mosaic_affine, letterbox_affine) draw
        even with every knob at 0; ``random_affine`` on a full canvas draws only when a knob is set."""
        c, s = self.cfg, self.imgsz
        if always or any((c["degrees"], c["translate"], c["scale"], c["shear"], c["perspective"])):
            return A._draw_affine(boxes, cls, rng, c, s)[0]
        return np.eye(3)

    def _geometric_plan(self, i: int, rng: np.random.Generator) -> tuple[A.Sample, np.ndarray]:
        """``_geometric`` without its final warp: (source sample, source -> output matrix)."""
        c, s = self.cfg, self.imgsz
        use_mosaic = self.mosaic_active() and rng.random() < c["mosaic"]
        paste = self.mosaic_active() and c["copy_paste"] and rng.random() < c["copy_paste"]
        if use_mosaic:
            idx = [i, *rng.integers(0, len(self), 3).tolist()]
            sample = A.mosaic([self.load(k) for k in idx], rng, c, s)   # the same draws as mosaic_affine
            fused = not paste and A.is_axis_aligned(c)
        elif not paste:   # letterbox_affine: the pad offset goes into the matrix, the image ships unpadded
            img, boxes, cls = self.load(i)
            pad = self._pad(img)
            m = self._affine_draw(boxes + np.array([*pad, *pad], np.float32), cls, rng, always=True)
            return (img, boxes, cls), m @ _shift(*pad)
        else:
            sample, _ = self._plain(i)
            fused = False
        if paste:
            donor, _ = self._plain(int(rng.integers(0, len(self))))
            sample = A.copy_paste(sample, donor, rng, c["copy_paste_max_overlap"])
        return sample, self._affine_draw(sample[1], sample[2], rng, always=fused)

    def _pad(self, img: np.ndarray) -> tuple[int, int]:
        h, w = img.shape[:2]
        s = self.imgsz
        return ((s - w) // 2, (s - h) // 2) if self.cfg["letterbox_center"] else (0, 0)

    def _device_item(self, i: int):
        c, s = self.cfg, self.imgsz
        if not self.augment:
            img, boxes, cls = self.load(i)
            pad = self._pad(img)
            r = self.records[i]
            meta = {"index": i, "image_id": int(r.image_id), "orig": (r.height, r.width),
                    "ratio": min(s / r.height, s / r.width), "pad": pad,
                    "device": {"matrix": _shift(*pad), "hsv": None, "filter": (0.0, 0.0)}}
            return self._to_tensor(img, boxes, cls, meta)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        (img, boxes, cls), m = self._geometric_plan(i, rng)
        if self.mosaic_active() and c["mixup"] and rng.random() < c["mixup"]:
            # warped here: the blend needs both images in output coordinates
            img = A.warp_image(img, m, s, c["pad_value"], bool(c["perspective"]))
            boxes, cls = A.filter_boxes(A.warp_boxes(boxes, m), cls, s, s, c["min_visible_frac"], c["min_box_size"])
            other = self._geometric(int(rng.integers(0, len(self))), rng)
            (img, boxes, cls), m = A.mixup((img, boxes, cls), other, rng), np.eye(3)
        gains = A.hsv_gains(rng, c["hsv_h"], c["hsv_s"], c["hsv_v"])
        if rng.random() < c["fliplr"]:
            m = np.array([[-1.0, 0, s], [0, 1, 0], [0, 0, 1]]) @ m
        if rng.random() < c["flipud"]:
            m = np.array([[1.0, 0, 0], [0, -1, s], [0, 0, 1]]) @ m
        meta = {"index": i, "device": {"matrix": m, "hsv": gains,
                                       "filter": (c["min_visible_frac"], c["min_box_size"])}}
        return self._to_tensor(img, boxes, cls, meta)

    @staticmethod
    def _to_tensor(img, boxes, cls, meta):
        # HWC, as decoded: the CHW transpose is a strided copy that cost a third of a sample's CPU time;
        # ``to_input`` does it on the device, fused with the float conversion.
        # device mode may hand out a cached (read-only) array as is: copy it then (torch needs writable memory)
        t = torch.from_numpy(np.ascontiguousarray(img) if img.flags.writeable else img.copy())
        target = torch.cat((torch.from_numpy(cls).float()[:, None], torch.from_numpy(boxes).float()), 1) \
            if len(cls) else torch.zeros(0, 5)
        return t, target, meta


def to_input(images: torch.Tensor, device) -> torch.Tensor:
    """uint8 HWC batch [B, S, S, 3] -> float NCHW in [0, 1] on ``device`` (copied as uint8: 4x fewer bytes)."""
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
    return x.contiguous()


def collate(batch):
    """-> images [B, S, S, 3] uint8 (HWC), targets [N, 6] (batch index, class, x1, y1, x2, y2), list of metas;
    ``None`` for a batch that validation emptied (every image in it unreadable)."""
    if not batch:
        return None
    imgs, targets, metas = zip(*batch)
    rows = [torch.cat((torch.full((len(t), 1), float(k)), t), 1) for k, t in enumerate(targets)]
    return torch.stack(imgs), torch.cat(rows) if rows else torch.zeros(0, 6), list(metas)


def _shift(px: float, py: float) -> np.ndarray:
    return np.array([[1.0, 0, px], [0, 1, py], [0, 0, 1]])
