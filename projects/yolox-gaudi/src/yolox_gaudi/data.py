"""Datasets, augmentation (mosaic, mixup, HSV, flip) and loaders.

Images are read with ``yolo_common`` (PIL, RGB) and turned into model input by ``yolo_common``'s
letterbox with the YOLOX preset (top-left pad 114, BGR, 0-255, no mean/std), in training and in
evaluation alike, so both see pixels made the same way.

Every random choice of a training sample comes from a generator seeded by ``(seed, epoch, index)``:
a sample's augmentation is the same whichever rank, worker or world size draws it, which is what
makes a 2-process run reproduce a 1-process run with the same global batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from yolo_common.data import DatasetSplit, SkipUnreadable, drop_none, read_coco, verify_images
from yolo_common.preprocess import YOLOX, letterbox, letterbox_boxes, read_image

PAD = 114


class CocoSource:
    """Images and labels of one split: RGB uint8 pixels, xyxy pixel boxes, contiguous class indices."""

    def __init__(self, split: DatasetSplit):
        self.split = split
        id_to_index = split.category_id_to_index
        self.labels = []
        for r in split.records:
            keep = ~r.iscrowd  # crowd regions are ignored by COCO eval and never trained on
            cls = np.array([id_to_index[int(c)] for c in r.category_ids[keep]], np.float32)
            self.labels.append(np.concatenate([r.boxes[keep], cls[:, None]], 1).astype(np.float32)
                               if keep.any() else np.zeros((0, 5), np.float32))

    def __len__(self) -> int:
        return len(self.split.records)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(HxWx3 uint8 RGB, [n, 5] xyxy + class)``; a broken image raises naming the file."""
        path = self.split.records[i].path
        try:
            img = read_image(path)
        except OSError as e:
            raise OSError(f"cannot read training image {path}: {e}") from e
        return img, self.labels[i].copy()

    def load_resized(self, i: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`load`, scaled so the longer side fits ``size`` (Megvii's ``load_resized_img``)."""
        img, labels = self.load(i)
        h, w = img.shape[:2]
        r = min(size / h, size / w)
        nw, nh = max(1, int(w * r)), max(1, int(h * r))
        if (nw, nh) != (w, h):
            img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
        labels[:, :4] *= r
        return img, labels


def load_coco_split(data_dir: str | Path, split: str, *, verify: bool = False) -> DatasetSplit:
    """``read_coco`` with the split name Megvii uses (``train2017``/``val2017``).

    ``verify`` decodes every image once first and drops (and counts) the ones that fail; minutes on
    COCO, so off by default: a bad image found later is skipped by the loaders' ``SkipUnreadable``.
    """
    split_data = read_coco(data_dir, split)
    return verify_images(split_data) if verify else split_data


# ---- augmentation ---------------------------------------------------------------------------------


def _affine_image(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warps ``img`` by the 2x3 forward matrix ``m`` into a ``size x size`` canvas (PIL wants the inverse)."""
    full = np.vstack([m, [0, 0, 1]])
    inv = np.linalg.inv(full)
    data = tuple(inv[:2].reshape(-1))
    out = Image.fromarray(img).transform((size, size), Image.AFFINE, data, resample=Image.BILINEAR,
                                         fillcolor=(PAD, PAD, PAD))
    return np.asarray(out)


def _affine_boxes(boxes: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Transforms the 4 corners of each box and takes their extent, clipped to the canvas."""
    if len(boxes) == 0:
        return boxes
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x1, y2], 1),
                        np.stack([x2, y2], 1)], 1)                                   # [n, 4, 2]
    pts = corners @ m[:, :2].T + m[:, 2]
    out = np.concatenate([pts.min(1), pts.max(1)], 1)
    return out.clip(0, size)


def random_affine_matrix(rng: np.random.Generator, src_center: tuple[float, float], size: int,
                         degrees: float, translate: float, scale: tuple[float, float], shear: float) -> np.ndarray:
    """Rotation/scale/shear about ``src_center``, which lands at the output centre +- translation."""
    a = math.radians(rng.uniform(-degrees, degrees))
    s = rng.uniform(*scale)
    sx, sy = (math.tan(math.radians(rng.uniform(-shear, shear))) for _ in range(2))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * s
    lin = np.array([[1, sx], [sy, 1]]) @ rot
    t = np.array([rng.uniform(0.5 - translate, 0.5 + translate) * size,
                  rng.uniform(0.5 - translate, 0.5 + translate) * size])
    offset = t - lin @ np.asarray(src_center, float)
    return np.concatenate([lin, offset[:, None]], 1)


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: int = 5, sgain: int = 30,
                vgain: int = 30) -> np.ndarray:
    """Random hue/saturation/value shifts (Megvii's gains, in OpenCV's 0-180 hue units). As Megvii's
    ``augment_hsv``, each of the three shifts is kept or dropped with probability 1/2
    (``hsv_augs *= randint(0, 2, 3)``); without that the jitter is about twice as strong."""
    hsv = np.asarray(Image.fromarray(img).convert("HSV")).astype(np.int16)
    dh, ds, dv = rng.uniform(-1, 1, 3) * (hgain, sgain, vgain) * rng.integers(0, 2, 3)
    hsv[..., 0] = (hsv[..., 0] + int(dh * 256 / 180)) % 256   # PIL's hue is 0-255
    hsv[..., 1] = np.clip(hsv[..., 1] + int(ds), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + int(dv), 0, 255)
    return np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"))


class TrainDataset(torch.utils.data.Dataset):
    """Training samples: mosaic (+ mixup) with probability ``mosaic_prob``, then HSV, flip, letterbox.

    Set ``epoch`` and ``enable_mosaic`` before iterating a loader (workers copy the dataset when an
    epoch's iterator starts).

    Returns per item ``(image [3, S, S] float32 BGR 0-255, targets [max_labels, 5] (cls, cx, cy, w, h),
    index)``.
    """

    def __init__(self, source: CocoSource, exp, seed: int):
        self.source = source
        self.exp = exp
        self.seed = int(seed)
        self.size = int(exp.input_size[0])
        self.epoch = 0
        self.enable_mosaic = True

    def __len__(self) -> int:
        return len(self.source)

    def describe(self, index: int) -> str:
        """The file behind ``index`` (``SkipUnreadable`` names it; a mosaic's failing partner is named
        in the exception message)."""
        return str(self.source.split.records[index].path)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = self.size
        xc, yc = (int(rng.uniform(0.5 * s, 1.5 * s)) for _ in range(2))
        canvas = np.full((2 * s, 2 * s, 3), PAD, np.uint8)
        labels = []
        ids = [index] + [int(i) for i in rng.integers(0, len(self.source), 3)]
        for k, i in enumerate(ids):
            img, lab = self.source.load_resized(i, s)
            h, w = img.shape[:2]
            # Quadrant k: the image's corner touching (xc, yc) is placed at (xc, yc).
            x1 = xc - w if k in (0, 2) else xc
            y1 = yc - h if k in (0, 1) else yc
            cx1, cy1 = max(x1, 0), max(y1, 0)
            cx2, cy2 = min(x1 + w, 2 * s), min(y1 + h, 2 * s)
            canvas[cy1:cy2, cx1:cx2] = img[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            lab[:, [0, 2]] += x1
            lab[:, [1, 3]] += y1
            labels.append(lab)
        labels = np.concatenate(labels)
        labels[:, :4] = labels[:, :4].clip(0, 2 * s)
        e = self.exp
        m = random_affine_matrix(rng, (s, s), s, e.degrees, e.translate, e.mosaic_scale, e.shear)
        out = _affine_image(canvas, m, s)
        labels[:, :4] = _affine_boxes(labels[:, :4], m, s)
        return out, labels

    def _mixup(self, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        s = self.size
        other, olab = self.source.load_resized(int(rng.integers(0, len(self.source))), s)
        jit = rng.uniform(*self.exp.mixup_scale)
        h, w = other.shape[:2]
        nw, nh = max(1, int(w * jit)), max(1, int(h * jit))
        other = np.asarray(Image.fromarray(other).resize((nw, nh), Image.BILINEAR))
        olab[:, :4] *= jit
        if rng.random() < 0.5:
            other = other[:, ::-1]
            olab[:, [0, 2]] = nw - olab[:, [2, 0]]
        ch, cw = max(nh, s), max(nw, s)
        big = np.full((ch, cw, 3), PAD, np.uint8)
        big[:nh, :nw] = other
        ox, oy = int(rng.integers(0, cw - s + 1)), int(rng.integers(0, ch - s + 1))
        crop = big[oy:oy + s, ox:ox + s]
        olab[:, [0, 2]] -= ox
        olab[:, [1, 3]] -= oy
        before = (olab[:, 2] - olab[:, 0]) * (olab[:, 3] - olab[:, 1])
        olab[:, :4] = olab[:, :4].clip(0, s)
        after = (olab[:, 2] - olab[:, 0]) * (olab[:, 3] - olab[:, 1])
        olab = olab[after > 0.1 * np.maximum(before, 1e-6)]   # drop boxes mostly cut away
        mixed = (0.5 * img.astype(np.float32) + 0.5 * crop.astype(np.float32)).astype(np.uint8)
        return mixed, np.concatenate([labels, olab])

    def __getitem__(self, index: int):
        rng = self._rng(index)
        e = self.exp
        mosaic = self.enable_mosaic and rng.random() < e.mosaic_prob
        if mosaic:
            img, labels = self._mosaic(index, rng)
            if e.enable_mixup and rng.random() < e.mixup_prob:
                img, labels = self._mixup(img, labels, rng)
        else:
            img, labels = self.source.load(index)
        if rng.random() < e.hsv_prob:
            img = augment_hsv(img, rng)
        if rng.random() < e.flip_prob:
            img = np.ascontiguousarray(img[:, ::-1])
            labels[:, [0, 2]] = img.shape[1] - labels[:, [2, 0]]
        chw, meta = letterbox(img, YOLOX.with_size(self.size))
        boxes = letterbox_boxes(labels[:, :4], meta)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh > 1).all(1)    # Megvii drops boxes of 1 px or less after augmentation
        boxes, cls, wh = boxes[keep], labels[keep, 4], wh[keep]
        # Megvii builds TrainTransform(max_labels=120) once and its mosaic wrapper applies it in every
        # epoch, the no-aug ones included (an earlier 50 here dropped boxes of crowded images there).
        max_labels = int(e.max_labels)
        targets = np.zeros((max_labels, 5), np.float32)
        n = min(len(boxes), max_labels)
        targets[:n, 0] = cls[:n]
        targets[:n, 1:3] = (boxes[:n, :2] + boxes[:n, 2:]) / 2
        targets[:n, 3:5] = wh[:n]
        return torch.from_numpy(chw), torch.from_numpy(targets), index


class EvalDataset(torch.utils.data.Dataset):
    """Letterboxed validation images; items are ``(image, (ratio, pad_x, pad_y, w, h), image_id)``."""

    def __init__(self, split: DatasetSplit, size: int):
        self.split = split
        self.spec = YOLOX.with_size(int(size))

    def __len__(self) -> int:
        return len(self.split.records)

    def describe(self, index: int) -> str:
        return str(self.split.records[index].path)

    def __getitem__(self, i: int):
        r = self.split.records[i]
        try:
            img = read_image(r.path)
        except OSError as e:
            raise OSError(f"cannot read validation image {r.path}: {e}") from e
        chw, meta = letterbox(img, self.spec)
        return torch.from_numpy(chw), meta, int(r.image_id)


def eval_collate(batch):
    """Stacks a batch; ``None`` when every image of it was unreadable (``evaluate`` skips it)."""
    if not batch:
        return None
    images, metas, ids = zip(*batch)
    return torch.stack(images), list(metas), list(ids)


class ResumableSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` that can start an epoch part-way: ``skip`` samples of this rank's share.

    The first ``k`` samples of every rank are exactly the first ``k * world_size`` positions of the
    epoch's global permutation (ranks take it interleaved), so a checkpoint stores the *global* offset
    (``iterations done in the epoch x global batch``) and a resume on any world size skips
    ``offset / world_size`` per rank: the rest of the epoch is the same set of samples as if the run
    had never stopped. The skipped samples are never loaded. Reset ``skip`` to 0 for the next epoch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = 0

    def __iter__(self):
        it = super().__iter__()
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(super().__len__() - self.skip, 0)


def build_train_loader(dataset: TrainDataset, batch_per_rank: int, rank: int, world_size: int, seed: int,
                       num_workers: int) -> torch.utils.data.DataLoader:
    """Shuffled, sharded by ``ResumableSampler`` even on one process (same permutation for any
    world size), partial last batch dropped (a new batch shape would recompile on HPU).

    The dataset goes in ``SkipUnreadable``: an image that does not decode is logged (once per worker and
    epoch), counted (``loader.dataset.skipped``, over all workers) and replaced by the next index, so one
    bad file never ends an epoch. ``epoch``/``enable_mosaic`` set on the wrapper reach ``dataset``.
    """
    sampler = ResumableSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                               drop_last=True)
    return torch.utils.data.DataLoader(SkipUnreadable(dataset, mode="replace"), batch_size=batch_per_rank,
                                       sampler=sampler, num_workers=num_workers, drop_last=True,
                                       pin_memory=False, persistent_workers=False)


def build_eval_loader(split: DatasetSplit, size: int, batch_size: int, num_workers: int):
    """Sequential loader over the whole split (rank 0 evaluates; see ``engine.evaluate``).

    An unreadable image is dropped from its batch and counted (``loader.dataset.skipped``): COCO eval
    then scores it as an image with no detections, which lowers recall rather than hiding the image.
    """
    return torch.utils.data.DataLoader(SkipUnreadable(EvalDataset(split, size), mode="drop"),
                                       batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=drop_none(eval_collate))
