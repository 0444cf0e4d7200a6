"""CPU augmentations, written here (no albumentations / ultralytics): every op takes and returns
``(img HxWx3 uint8 RGB, boxes [n, 4] float32 xyxy px, cls [n] int64)`` and keeps boxes on their pixels.

Box rules shared by every geometric op (``filter_boxes``): a transformed box is clipped to the canvas and
dropped, with its class id, when less than ``min_visible_frac`` of its (transformed, unclipped) area stays
visible or when it is thinner than ``min_box_size`` pixels.

**Mosaic placement (this project's rule, not ultralytics').** The output is one S x S canvas, split at a
random point (xc, yc) in [S/4, 3S/4]^2 into four cells. Each cell is filled by one image scaled to *cover*
the cell (factor max(cell_w / w, cell_h / h) times u ~ U[1, 1.25]) and cropped at a random offset; with
``smart_crop`` the offset is drawn ``smart_crop_tries`` times and the one that keeps the most box area wins.
No canvas area is wasted on padding and the warp that follows is S x S (ultralytics' mosaic warps a 2S x 2S
canvas with up to 3/4 grey).

**Fused mosaic + affine** (``mosaic_affine``, the training path when the affine has no rotation, shear or
perspective, as in both shipped hyps): every cell then maps to an axis-aligned output rectangle, so each tile is
warped once, straight from its cached image into its rectangle of the output (one resampling, no intermediate
canvas and no per-tile resize). Same geometry and box rules as ``mosaic`` followed by ``random_affine``; with
rotation/shear/perspective (or copy-paste, which pastes onto the canvas) the two-step path runs instead.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

Sample = tuple[np.ndarray, np.ndarray, np.ndarray]


def _area(b: np.ndarray) -> np.ndarray:
    return (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)


def filter_boxes(boxes: np.ndarray, cls: np.ndarray, width: int, height: int, min_visible_frac: float,
                 min_box_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip ``boxes`` to the canvas; keep those with visible/full area >= frac and both sides >= size."""
    if not len(boxes):
        return boxes.reshape(0, 4).astype(np.float32), cls.reshape(0).astype(np.int64)
    full = _area(boxes)
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    vis = _area(clipped) / np.maximum(full, 1e-9)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (vis >= min_visible_frac) & (w >= min_box_size) & (h >= min_box_size) & (full > 0)
    return clipped[keep].astype(np.float32), cls[keep].astype(np.int64)


def letterbox_pad(img: np.ndarray, boxes: np.ndarray, size: int, center: bool, pad_value: int):
    """Pad a (long side <= size) image to size x size, centred (odd pixel right/bottom) or top-left."""
    h, w = img.shape[:2]
    px, py = ((size - w) // 2, (size - h) // 2) if center else (0, 0)
    canvas = np.full((size, size, 3), pad_value, np.uint8)
    canvas[py:py + h, px:px + w] = img
    out = boxes.copy()
    out[:, [0, 2]] += px
    out[:, [1, 3]] += py
    return canvas, out, (px, py)


def hsv_gains(rng: np.random.Generator, h: float, s: float, v: float) -> np.ndarray | None:
    """(hue shift as a fraction of the circle, saturation gain, value gain), gains in [1-g, 1+g]; None (and no
    random draw) when all three magnitudes are 0."""
    if not (h or s or v):
        return None
    return rng.uniform(-1, 1, 3) * (h, s, v) + (0, 1, 1)


def hsv_jitter(img: np.ndarray, rng: np.random.Generator, h: float, s: float, v: float) -> np.ndarray:
    """Random hue shift and saturation/value gains (``hsv_gains``), via 256-entry LUTs."""
    gains = hsv_gains(rng, h, s, v)
    return img if gains is None else apply_hsv(img, gains)


def apply_hsv(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    x = np.arange(256, dtype=np.int32)
    lut_h = ((x + gains[0] * 180) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_h), cv2.LUT(sat, lut_s), cv2.LUT(val, lut_v)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flip(img: np.ndarray, boxes: np.ndarray, horizontal: bool) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    out = boxes.copy()
    if horizontal:
        out[:, [0, 2]] = w - boxes[:, [2, 0]]
        return cv2.flip(img, 1), out
    out[:, [1, 3]] = h - boxes[:, [3, 1]]
    return cv2.flip(img, 0), out


def affine_matrix(rng: np.random.Generator, size: int, degrees: float, translate: float, scale: float,
                  shear: float, perspective: float) -> np.ndarray:
    """3x3 matrix: centre -> perspective -> rotate+scale -> shear -> translate back (+ random shift)."""
    c = np.eye(3)
    c[0, 2] = c[1, 2] = -size / 2
    p = np.eye(3)
    p[2, 0], p[2, 1] = rng.uniform(-perspective, perspective, 2)
    r = np.eye(3)
    a = rng.uniform(-degrees, degrees)
    sc = rng.uniform(1 - scale, 1 + scale)
    r[:2] = cv2.getRotationMatrix2D((0, 0), a, sc)
    sh = np.eye(3)
    sh[0, 1], sh[1, 0] = (math.tan(math.radians(x)) for x in rng.uniform(-shear, shear, 2))
    t = np.eye(3)
    t[0, 2], t[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate, 2) * size
    return t @ sh @ r @ p @ c


def pixel_centre(m: np.ndarray) -> np.ndarray:
    """A matrix on continuous coordinates (pixel i spans [i, i+1), as the boxes) -> the matrix on pixel
    indices that OpenCV's warps use: T(-1/2) m T(+1/2) (for an affine, t += 0.5 * (A @ 1 - 1)). Without it
    pixels drift from their boxes by 0.5 * (scale - 1) px (ultralytics leaves this drift in)."""
    half = np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    out = np.linalg.inv(half) @ m @ half
    return out / out[2, 2]


def warp_boxes(boxes: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The axis-aligned hull of each box's four transformed corners (xyxy, unclipped)."""
    if not len(boxes):
        return boxes.reshape(0, 4)
    n = len(boxes)
    pts = np.ones((n * 4, 3))
    pts[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    pts = pts @ m.T
    pts = pts[:, :2] / pts[:, 2:3]
    xy = pts.reshape(n, 8)
    x, y = xy[:, 0::2], xy[:, 1::2]
    return np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1).astype(np.float32)


def random_affine(sample: Sample, rng: np.random.Generator, cfg, size: int) -> Sample:
    """Rotation / scale / shear / translation / perspective to a size x size canvas.

    With ``smart_crop`` (and boxes in the input), a draw that would drop every box is redrawn up to
    ``smart_crop_tries`` times; the last draw is kept if none keeps a box.
    """
    img, boxes, cls = sample
    if not any((cfg["degrees"], cfg["translate"], cfg["scale"], cfg["shear"], cfg["perspective"])) and \
            img.shape[:2] == (size, size):   # no warp, but the same box rules as every other path
        return (img, *filter_boxes(boxes, cls, size, size, cfg["min_visible_frac"], cfg["min_box_size"]))
    m, nb, nc = _draw_affine(boxes, cls, rng, cfg, size)
    return warp_image(img, m, size, cfg["pad_value"], bool(cfg["perspective"])), nb, nc


def warp_image(img: np.ndarray, m: np.ndarray, size: int, pad_value: int, perspective: bool) -> np.ndarray:
    """The pixels of ``random_affine``: a size x size warp by m, constant ``pad_value`` border."""
    border = (pad_value,) * 3
    if perspective:
        return cv2.warpPerspective(img, pixel_centre(m), (size, size), borderValue=border)
    return cv2.warpAffine(img, pixel_centre(m)[:2], (size, size), borderValue=border)


def _cover_geometry(h0: int, w0: int, boxes: np.ndarray, cell_w: int, cell_h: int, rng, tries: int):
    """Cover scale (fx, fy), scaled size, crop offset (ox, oy) and the boxes in cell coordinates."""
    f = max(cell_w / w0, cell_h / h0) * rng.uniform(1.0, 1.25)
    nw, nh = max(cell_w, round(w0 * f)), max(cell_h, round(h0 * f))
    sb = boxes * np.array([nw / w0, nh / h0, nw / w0, nh / h0], np.float32)
    # all candidate offsets at once; the one keeping the most box area wins (the first on ties)
    ox = rng.integers(0, nw - cell_w + 1, max(1, tries))
    oy = rng.integers(0, nh - cell_h + 1, max(1, tries))
    k = 0
    if len(sb) and len(ox) > 1:
        off = np.stack((ox, oy, ox, oy), 1)[:, None, :].astype(np.float32)   # [T, 1, 4]
        cb = sb[None] - off                                                  # [T, n, 4]
        w = cb[..., 2].clip(0, cell_w) - cb[..., 0].clip(0, cell_w)
        h = cb[..., 3].clip(0, cell_h) - cb[..., 1].clip(0, cell_h)
        k = int((w.clip(0) * h.clip(0)).sum(1).argmax())
    ox, oy = int(ox[k]), int(oy[k])
    return (nw / w0, nh / h0), (nw, nh), (ox, oy), sb - np.array([ox, oy, ox, oy], np.float32)


def _mosaic_layout(samples: list[Sample], rng: np.random.Generator, cfg, size: int):
    """Cells, per-tile geometry and the canvas boxes of a mosaic (no pixels touched)."""
    xc, yc = (int(v) for v in rng.uniform(size * 0.25, size * 0.75, 2))
    cells = ((0, 0, xc, yc), (xc, 0, size, yc), (0, yc, xc, size), (xc, yc, size, size))
    tries = cfg["smart_crop_tries"] if cfg["smart_crop"] else 1
    tiles, all_boxes, all_cls = [], [], []
    for (img, boxes, cls), (x1, y1, x2, y2) in zip(samples, cells):
        cw, ch = x2 - x1, y2 - y1
        fxy, _, oxy, tb = _cover_geometry(*img.shape[:2], boxes, cw, ch, rng, tries)
        tiles.append((img, (x1, y1, x2, y2), fxy, oxy))
        kb, kc = filter_boxes(tb, cls, cw, ch, cfg["min_visible_frac"], cfg["min_box_size"])
        all_boxes.append(kb + np.array([x1, y1, x1, y1], np.float32))
        all_cls.append(kc)
    return tiles, np.concatenate(all_boxes).reshape(-1, 4), np.concatenate(all_cls)


def mosaic(samples: list[Sample], rng: np.random.Generator, cfg, size: int) -> Sample:
    """Four samples -> one size x size mosaic canvas (placement rule in the module docstring)."""
    tiles, boxes, cls = _mosaic_layout(samples, rng, cfg, size)
    canvas = np.full((size, size, 3), cfg["pad_value"], np.uint8)
    for img, (x1, y1, x2, y2), (fx, fy), (ox, oy) in tiles:
        nw, nh = round(img.shape[1] * fx), round(img.shape[0] * fy)
        scaled = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas[y1:y2, x1:x2] = scaled[oy:oy + y2 - y1, ox:ox + x2 - x1]
    return canvas, boxes, cls


def is_axis_aligned(cfg) -> bool:
    return not (cfg["degrees"] or cfg["shear"] or cfg["perspective"])


def _draw_affine(boxes, cls, rng, cfg, size):
    """An affine matrix (redrawn under ``smart_crop`` while it would drop every box) and the boxes it keeps."""
    tries = cfg["smart_crop_tries"] if cfg["smart_crop"] and len(boxes) else 1
    for _ in range(max(1, tries)):
        m = affine_matrix(rng, size, cfg["degrees"], cfg["translate"], cfg["scale"], cfg["shear"], cfg["perspective"])
        nb, nc = filter_boxes(warp_boxes(boxes, m), cls, size, size, cfg["min_visible_frac"], cfg["min_box_size"])
        if len(nb) or not len(boxes):
            break
    return m, nb, nc


def mosaic_affine(samples: list[Sample], rng: np.random.Generator, cfg, size: int) -> Sample:
    """``mosaic`` then an axis-aligned ``random_affine``, with each tile resampled once (see the docstring)."""
    if not is_axis_aligned(cfg):
        raise ValueError("mosaic_affine needs degrees = shear = perspective = 0 (use mosaic + random_affine)")
    tiles, boxes, cls = _mosaic_layout(samples, rng, cfg, size)
    m, nb, nc = _draw_affine(boxes, cls, rng, cfg, size)
    sx, tx, sy, ty = m[0, 0], m[0, 2], m[1, 1], m[1, 2]  # canvas -> output: x' = sx x + tx (sx == sy here)
    out = np.full((size, size, 3), cfg["pad_value"], np.uint8)
    for img, (x1, y1, x2, y2), (fx, fy), (ox, oy) in tiles:
        # the cell's rectangle in the output, in whole pixels (pixel centres inside it belong to this tile)
        rx0, rx1 = (int(np.clip(np.ceil(v - 0.5), 0, size)) for v in (sx * x1 + tx, sx * x2 + tx))
        ry0, ry1 = (int(np.clip(np.ceil(v - 0.5), 0, size)) for v in (sy * y1 + ty, sy * y2 + ty))
        if rx1 <= rx0 or ry1 <= ry0:
            continue
        # tile source pixel u -> canvas u*fx - ox + x1 -> output sx*(...) + tx - rx0 (the ROI's origin)
        a = np.array([[sx * fx, 0, sx * (x1 - ox) + tx - rx0], [0, sy * fy, sy * (y1 - oy) + ty - ry0], [0, 0, 1]])
        out[ry0:ry1, rx0:rx1] = cv2.warpAffine(img, pixel_centre(a)[:2], (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR,
                                               borderMode=cv2.BORDER_REPLICATE)
    return out, nb, nc


def letterbox_affine(sample: Sample, rng: np.random.Generator, cfg, size: int) -> Sample:
    """``letterbox_pad`` then ``random_affine`` in one warp of the (resized) image."""
    img, boxes, cls = sample
    h, w = img.shape[:2]
    px, py = ((size - w) // 2, (size - h) // 2) if cfg["letterbox_center"] else (0, 0)
    boxes = boxes + np.array([px, py, px, py], np.float32)
    m, nb, nc = _draw_affine(boxes, cls, rng, cfg, size)
    m = m @ np.array([[1, 0, px], [0, 1, py], [0, 0, 1]], float)
    border = (cfg["pad_value"],) * 3
    if cfg["perspective"]:
        return cv2.warpPerspective(img, pixel_centre(m), (size, size), borderValue=border), nb, nc
    return cv2.warpAffine(img, pixel_centre(m)[:2], (size, size), borderValue=border), nb, nc


def mixup(a: Sample, b: Sample, rng: np.random.Generator) -> Sample:
    """Blend two same-size samples with r ~ Beta(32, 32) (about 0.5) and keep both box sets."""
    r = rng.beta(32.0, 32.0)
    img = (a[0].astype(np.float32) * r + b[0].astype(np.float32) * (1 - r)).round().astype(np.uint8)
    return img, np.concatenate((a[1], b[1])).reshape(-1, 4), np.concatenate((a[2], b[2]))


def _ioa(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Fraction of each of ``boxes`` covered by ``box``."""
    if not len(boxes):
        return np.zeros(0)
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clip(0).prod(1)
    return inter / np.maximum(_area(boxes), 1e-9)


def copy_paste(sample: Sample, donor: Sample, rng: np.random.Generator, max_overlap: float,
               max_objects: int = 3) -> Sample:
    """Paste up to ``max_objects`` box regions of ``donor`` (same scale) at random places in ``sample``.

    A paste is accepted only where it covers at most ``max_overlap`` of every box already there (existing
    and earlier pastes), so no object is hidden beyond that fraction; a rejected place is redrawn 10 times.
    """
    img, boxes, cls = sample
    img, boxes, cls = img.copy(), boxes.copy(), cls.copy()
    dimg, dboxes, dcls = donor
    h, w = img.shape[:2]
    order = rng.permutation(len(dboxes))[:max_objects]
    for j in order:
        x1, y1, x2, y2 = (int(round(v)) for v in dboxes[j])
        x1, y1 = max(x1, 0), max(y1, 0)
        x2, y2 = min(x2, dimg.shape[1]), min(y2, dimg.shape[0])
        bw, bh = x2 - x1, y2 - y1
        if bw < 2 or bh < 2 or bw >= w or bh >= h:
            continue
        for _ in range(10):
            px, py = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            new = np.array([px, py, px + bw, py + bh], np.float32)
            if not len(boxes) or _ioa(new, boxes).max() <= max_overlap:
                img[py:py + bh, px:px + bw] = dimg[y1:y2, x1:x2]
                boxes = np.concatenate((boxes.reshape(-1, 4), new[None]))
                cls = np.concatenate((cls, dcls[j:j + 1]))
                break
    return img, boxes.astype(np.float32), cls.astype(np.int64)
