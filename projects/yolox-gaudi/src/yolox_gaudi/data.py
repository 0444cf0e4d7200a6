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
from yolo_common.preprocess import YOLOX, LetterboxMeta, letterbox, letterbox_boxes, read_image

PAD = 114


class CocoSource:
    """Images and labels of one split: RGB uint8 pixels, xyxy pixel boxes, contiguous class indices.

    ``cache``: an optional filled :class:`~yolox_gaudi.cache.ImageCache` (``--cache``) that serves the
    decoded pixels instead of the files (the same pixels).
    """

    def __init__(self, split: DatasetSplit, cache=None):
        self.split = split
        self.cache = cache
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
        if self.cache is not None:
            return self.cache.get(i), self.labels[i].copy()
        path = self.split.records[i].path
        try:
            img = read_image(path)
        except OSError as e:
            raise OSError(f"cannot read training image {path}: {e}") from e
        return img, self.labels[i].copy()

    def load_resized(self, i: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`load`, scaled by ``min(h / H, w / W)`` for ``size = (h, w)`` (Megvii's
        ``load_resized_img``, truncating the new sides as it does)."""
        img, labels = self.load(i)
        h, w = img.shape[:2]
        r = min(size[0] / h, size[1] / w)
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


def load_dataset_split(data_dir: str | Path, split: str, *, verify: bool = False) -> DatasetSplit:
    """A COCO split (``train2017``) or, when ``data_dir`` is a VOC root (``VOCdevkit``), VOC image sets
    written ``YEAR/SET`` and joined by ``+``, as Megvii's VOC experiment trains on
    ``2007/trainval+2012/trainval`` and tests on ``2007/test``. Joined sets get running image ids."""
    from dataclasses import replace

    from yolo_common.data import detect_layout, read_voc

    if detect_layout(data_dir) != "voc":
        return load_coco_split(data_dir, split, verify=verify)
    parts = []
    for item in split.split("+"):
        year, _, name = item.rpartition("/")
        if not name or name.endswith("2017"):
            raise ValueError(f"{data_dir} is a VOC dataset: set train_split / val_split to VOC image sets such "
                             f"as 2007/trainval+2012/trainval and 2007/test (got {split!r})")
        parts.append(read_voc(data_dir, name, year or "2012"))
    records = [replace(r, image_id=k) for k, r in enumerate(rec for p in parts for rec in p.records)]
    joined = replace(parts[0], records=records, split=split,
                     annotation_files=[f for p in parts for f in p.annotation_files])
    for p in parts[1:]:
        if p.categories != joined.categories:
            raise ValueError(f"{data_dir}: the VOC sets of {split!r} have different class lists")
        joined.skipped.update(p.skipped)
    return verify_images(joined) if verify else joined


# ---- augmentation ---------------------------------------------------------------------------------


def _affine_image(img: np.ndarray, m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Warps ``img`` by the 2x3 forward matrix ``m`` into an ``h x w`` canvas (PIL wants the inverse)."""
    full = np.vstack([m, [0, 0, 1]])
    inv = np.linalg.inv(full)
    data = tuple(inv[:2].reshape(-1))
    out = Image.fromarray(img).transform((hw[1], hw[0]), Image.AFFINE, data, resample=Image.BILINEAR,
                                         fillcolor=(PAD, PAD, PAD))
    return np.asarray(out)


def _affine_boxes(boxes: np.ndarray, m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Transforms the 4 corners of each box and takes their extent, clipped to the ``h x w`` canvas."""
    if len(boxes) == 0:
        return boxes
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1), np.stack([x1, y2], 1),
                        np.stack([x2, y2], 1)], 1)                                   # [n, 4, 2]
    pts = corners @ m[:, :2].T + m[:, 2]
    out = np.concatenate([pts.min(1), pts.max(1)], 1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, hw[1])
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, hw[0])
    return out


def random_affine_matrix(rng: np.random.Generator, src_center: tuple[float, float], hw: tuple[int, int],
                         degrees: float, translate: float, scale: tuple[float, float], shear: float) -> np.ndarray:
    """Rotation/scale/shear about ``src_center`` (x, y), which lands at the centre of the ``h x w``
    output +- ``translate`` of each side (this project's centred mosaic affine)."""
    a = math.radians(rng.uniform(-degrees, degrees))
    s = rng.uniform(*scale)
    sx, sy = (math.tan(math.radians(rng.uniform(-shear, shear))) for _ in range(2))
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * s
    lin = np.array([[1, sx], [sy, 1]]) @ rot
    t = np.array([rng.uniform(0.5 - translate, 0.5 + translate) * hw[1],
                  rng.uniform(0.5 - translate, 0.5 + translate) * hw[0]])
    offset = t - lin @ np.asarray(src_center, float)
    return np.concatenate([lin, offset[:, None]], 1)


def megvii_affine_matrix(rng: np.random.Generator, hw: tuple[int, int], degrees: float, translate: float,
                         scale: tuple[float, float], shear: float) -> np.ndarray:
    """Megvii's ``get_affine_matrix``: rotation and scale about the canvas *origin*
    (``cv2.getRotationMatrix2D(angle, (0, 0), scale)``), shear rows mixed as Megvii mixes them, and a
    translation of +- ``translate`` of each side. The output window is the top-left ``h x w`` of the
    transformed 2h x 2w mosaic, so the mosaic centre (at 0.5-1.5 of each side) lands off-centre, often
    out of view at small scales. ``mosaic_affine origin`` picks this to reproduce Megvii's training."""
    a = math.radians(rng.uniform(-degrees, degrees))
    s = rng.uniform(*scale)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) * s   # cv2's sign convention
    shear_x, shear_y = (math.tan(math.radians(rng.uniform(-shear, shear))) for _ in range(2))
    lin = np.stack([rot[0] + shear_y * rot[1], rot[1] + shear_x * rot[0]])
    t = np.array([rng.uniform(-translate, translate) * hw[1], rng.uniform(-translate, translate) * hw[0]])
    return np.concatenate([lin, t[:, None]], 1)


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

    Returns per item ``(image [3, h, w] float32 BGR 0-255, targets [max_labels, 5] (cls, cx, cy, w, h),
    index)``.
    """

    def __init__(self, source: CocoSource, exp, seed: int):
        self.source = source
        self.exp = exp
        self.seed = int(seed)
        self.hw = (int(exp.input_size[0]), int(exp.input_size[1]))   # (h, w), as Megvii's input_dim
        self.epoch = 0
        self.enable_mosaic = True
        # Images with at least one box, for mixup's partner (Megvii redraws until it finds one).
        self.labelled = np.flatnonzero([len(lab) > 0 for lab in source.labels])

    def __len__(self) -> int:
        return len(self.source)

    def describe(self, index: int) -> str:
        """The file behind ``index`` (``SkipUnreadable`` names it; a mosaic's failing partner is named
        in the exception message)."""
        return str(self.source.split.records[index].path)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h_in, w_in = self.hw
        yc = int(rng.uniform(0.5 * h_in, 1.5 * h_in))
        xc = int(rng.uniform(0.5 * w_in, 1.5 * w_in))
        canvas = np.full((2 * h_in, 2 * w_in, 3), PAD, np.uint8)
        labels = []
        ids = [index] + [int(i) for i in rng.integers(0, len(self.source), 3)]
        for k, i in enumerate(ids):
            img, lab = self.source.load_resized(i, self.hw)
            h, w = img.shape[:2]
            # Quadrant k: the image's corner touching (xc, yc) is placed at (xc, yc).
            x1 = xc - w if k in (0, 2) else xc
            y1 = yc - h if k in (0, 1) else yc
            cx1, cy1 = max(x1, 0), max(y1, 0)
            cx2, cy2 = min(x1 + w, 2 * w_in), min(y1 + h, 2 * h_in)
            canvas[cy1:cy2, cx1:cx2] = img[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            lab[:, [0, 2]] += x1
            lab[:, [1, 3]] += y1
            labels.append(lab)
        labels = np.concatenate(labels)
        labels[:, [0, 2]] = labels[:, [0, 2]].clip(0, 2 * w_in)
        labels[:, [1, 3]] = labels[:, [1, 3]].clip(0, 2 * h_in)
        e = self.exp
        if e.mosaic_affine == "origin":
            m = megvii_affine_matrix(rng, self.hw, e.degrees, e.translate, e.mosaic_scale, e.shear)
        else:
            m = random_affine_matrix(rng, (w_in, h_in), self.hw, e.degrees, e.translate, e.mosaic_scale, e.shear)
        out = _affine_image(canvas, m, self.hw)
        labels[:, :4] = _affine_boxes(labels[:, :4], m, self.hw)
        return out, labels

    def _mixup(self, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        """Megvii's ``MosaicDetection.mixup``, step for step: the partner is a labelled image,
        letterboxed top-left into a 114-padded ``h x w`` canvas, that canvas scaled by the jitter and
        maybe flipped, zero-padded to at least ``h x w`` and cropped at a random offset; partner boxes
        are clipped to the crop and kept whatever their remaining area (the 1-px filter after the
        letterbox removes the slivers), and the two images are averaged."""
        h_in, w_in = self.hw
        other, olab = self.source.load_resized(int(self.labelled[rng.integers(0, len(self.labelled))]), self.hw)
        jit = rng.uniform(*self.exp.mixup_scale)
        flip = rng.random() > 0.5
        canvas = np.full((h_in, w_in, 3), PAD, np.uint8)
        canvas[:other.shape[0], :other.shape[1]] = other
        nw, nh = max(1, int(w_in * jit)), max(1, int(h_in * jit))
        canvas = np.asarray(Image.fromarray(canvas).resize((nw, nh), Image.BILINEAR))
        olab[:, :4] *= jit
        olab[:, [0, 2]] = olab[:, [0, 2]].clip(0, nw)
        olab[:, [1, 3]] = olab[:, [1, 3]].clip(0, nh)
        if flip:
            canvas = canvas[:, ::-1]
            olab[:, [0, 2]] = nw - olab[:, [2, 0]]
        big = np.zeros((max(nh, h_in), max(nw, w_in), 3), np.uint8)   # Megvii pads this step with 0
        big[:nh, :nw] = canvas
        # Megvii: randint(0, H - h - 1) when the padded image is larger (its last offset is never drawn).
        oy = int(rng.integers(0, big.shape[0] - h_in)) if big.shape[0] > h_in else 0
        ox = int(rng.integers(0, big.shape[1] - w_in)) if big.shape[1] > w_in else 0
        crop = big[oy:oy + h_in, ox:ox + w_in]
        olab[:, [0, 2]] = (olab[:, [0, 2]] - ox).clip(0, w_in)
        olab[:, [1, 3]] = (olab[:, [1, 3]] - oy).clip(0, h_in)
        mixed = (0.5 * img.astype(np.float32) + 0.5 * crop.astype(np.float32)).astype(np.uint8)
        return mixed, np.concatenate([labels, olab])

    def __getitem__(self, index: int):
        rng = self._rng(index)
        e = self.exp
        mosaic = self.enable_mosaic and rng.random() < e.mosaic_prob
        if mosaic:
            img, labels = self._mosaic(index, rng)
            # Megvii mixes only into a mosaic that kept a box, and only with a labelled partner.
            if e.enable_mixup and len(labels) and len(self.labelled) and rng.random() < e.mixup_prob:
                img, labels = self._mixup(img, labels, rng)
        else:
            img, labels = self.source.load(index)
        if rng.random() < e.hsv_prob:
            img = augment_hsv(img, rng)
        if rng.random() < e.flip_prob:
            img = np.ascontiguousarray(img[:, ::-1])
            labels[:, [0, 2]] = img.shape[1] - labels[:, [2, 0]]
        chw, meta = letterbox(img, YOLOX.with_size(self.hw))
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


PREPROCS = ("pil", "cv2", "legacy")
LEGACY_MEAN, LEGACY_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # Megvii's pre-0.1.1 weights (RGB)


def _cv2():
    """OpenCV, only for the Megvii-exact evaluation path (a clear error when it is missing)."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"--preproc cv2 / --legacy need OpenCV ({e}): pip install 'yolox-gaudi[opencv]'") from e
    return cv2


def megvii_preproc(bgr: np.ndarray, hw: tuple[int, int], legacy: bool = False) -> tuple[np.ndarray, float]:
    """Megvii's ``preproc`` (+ ``ValTransform(legacy)``): ``cv2.resize`` INTER_LINEAR to
    ``(int(w r), int(h r))`` with ``r = min(h_in / h, w_in / w)``, top-left on a 114 canvas, BGR 0-255
    CHW float32; ``legacy`` (weights from before 0.1.1rc0) then flips to RGB, divides by 255 and
    normalises with the ImageNet mean/std. Returns ``(chw, r)``.

    For evaluating official weights exactly as Megvii does (``--preproc cv2`` / ``--legacy``): PIL's
    bilinear filter (the project's letterbox) antialiases when it shrinks, cv2's does not, so pixels
    differ by a few levels on downscaled images.
    """
    cv2 = _cv2()

    h_in, w_in = hw
    r = min(h_in / bgr.shape[0], w_in / bgr.shape[1])
    resized = cv2.resize(bgr, (int(bgr.shape[1] * r), int(bgr.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((h_in, w_in, 3), PAD, np.uint8)
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    chw = np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32)
    if legacy:
        chw = chw[::-1].copy() / 255.0
        chw -= np.array(LEGACY_MEAN, np.float32).reshape(3, 1, 1)
        chw /= np.array(LEGACY_STD, np.float32).reshape(3, 1, 1)
    return chw.astype(np.float32), r


class EvalDataset(torch.utils.data.Dataset):
    """Validation images; items are ``(image, LetterboxMeta, image_id)``.

    ``preproc``: ``"pil"`` (default: the letterbox training uses, ``yolo_common.preprocess``), ``"cv2"``
    (Megvii's ``preproc``: cv2 decode and resize) or ``"legacy"`` (cv2 + Megvii's ``--legacy``
    normalisation, for weights from before 0.1.1rc0). See :func:`megvii_preproc`.
    """

    def __init__(self, split: DatasetSplit, size: int | tuple[int, int], preproc: str = "pil"):
        if preproc not in PREPROCS:
            raise ValueError(f"preproc must be one of {', '.join(PREPROCS)}, got {preproc!r}")
        self.split = split
        self.spec = YOLOX.with_size(size if isinstance(size, int) else tuple(int(v) for v in size))
        self.preproc = preproc

    def __len__(self) -> int:
        return len(self.split.records)

    def describe(self, index: int) -> str:
        return str(self.split.records[index].path)

    def __getitem__(self, i: int):
        r = self.split.records[i]
        if self.preproc != "pil":
            cv2 = _cv2()
            bgr = cv2.imread(str(r.path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise OSError(f"cannot read validation image {r.path}: cv2.imread could not decode it")
            chw, ratio = megvii_preproc(bgr, self.spec.hw, legacy=self.preproc == "legacy")
            meta = LetterboxMeta(float(ratio), 0, 0, int(bgr.shape[1]), int(bgr.shape[0]))
            return torch.from_numpy(chw), meta, int(r.image_id)
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


def build_eval_loader(split: DatasetSplit, size: int | tuple[int, int], batch_size: int, num_workers: int,
                      preproc: str = "pil"):
    """Sequential loader over the whole split (rank 0 evaluates; see ``engine.evaluate``).

    An unreadable image is dropped from its batch and counted (``loader.dataset.skipped``): COCO eval
    then scores it as an image with no detections, which lowers recall rather than hiding the image.
    """
    return torch.utils.data.DataLoader(SkipUnreadable(EvalDataset(split, size, preproc), mode="drop"),
                                       batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                       collate_fn=drop_none(eval_collate))
