"""``DetectionDataset``: records -> (image tensor CHW uint8, targets, meta), with the CPU augmentations.

Randomness is a function of (seed, epoch, index) only (``np.random.default_rng([seed, epoch, index])``):
the same sample gets the same augmentation whatever the worker count, and a resumed run replays exactly.
The epoch lives in shared memory (``multiprocessing.Value``), so persistent DataLoader workers see
``set_epoch`` (and the ``close_mosaic`` switch) without being restarted.

An image that fails to decode raises ``yolo_common.data.UnreadableImage``; ``create_dataloader`` wraps the
dataset in ``yolo_common.data.SkipUnreadable``, which logs it once, counts it across workers and replaces
the sample (training) or drops it from the batch (validation), so one bad file never ends an epoch.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
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
                 cache_dir: Path | None = None, cache_compression: str = "none", seed: int = 0):
        self.split, self.cfg, self.imgsz, self.augment, self.seed = split, cfg, imgsz, augment, seed
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
        try:
            img = self.cache.get(i)
        except Exception as e:  # whatever the decoder raises (a patched PIL included); only the decode
            raise UnreadableImage(f"{self.records[i].path}: {type(e).__name__}: {e}") from e
        r = self.records[i]
        f = img.shape[1] / r.width, img.shape[0] / r.height
        boxes, cls = self.labels[i]
        return img, boxes * np.array([f[0], f[1], f[0], f[1]], np.float32), cls

    def _plain(self, i: int) -> tuple[A.Sample, tuple[int, int]]:
        img, boxes, cls = self.load(i)
        img, boxes, pad = A.letterbox_pad(img, boxes, self.imgsz, self.cfg["letterbox_center"], self.cfg["pad_value"])
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
        img = A.hsv_jitter(img, rng, c["hsv_h"], c["hsv_s"], c["hsv_v"])
        if rng.random() < c["fliplr"]:
            img, boxes = A.flip(img, boxes, horizontal=True)
        if rng.random() < c["flipud"]:
            img, boxes = A.flip(img, boxes, horizontal=False)
        return self._to_tensor(img, boxes, cls, {"index": i})

    @staticmethod
    def _to_tensor(img, boxes, cls, meta):
        # HWC, as decoded: the CHW transpose is a strided copy that cost a third of a sample's CPU time;
        # ``to_input`` does it on the device, fused with the float conversion.
        t = torch.from_numpy(np.ascontiguousarray(img))
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
