"""Every CPU augmentation keeps boxes on their pixels, inside the canvas, and drops hidden boxes with their
class ids. Objects are drawn as pure-colour rectangles (one colour per class), so after an op the pixels of
class c can be found again and compared with the boxes the op returned."""

from __future__ import annotations

import numpy as np
import pytest

from yolov9001.core.config import get_config
from yolov9001.utils import augment as A

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255)], np.uint8)
S = 128


def make_sample(rng: np.random.Generator, h: int = 96, w: int = 128):
    """A grey image with one pure-colour rectangle per class, apart from each other (so each box is full)."""
    img = np.full((h, w, 3), 40, np.uint8)
    boxes: list[tuple] = []
    for c in range(3):
        for _ in range(200):
            bw, bh = (int(v) for v in rng.integers(12, min(36, h // 2, w // 2), 2))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            box = (x1, y1, x1 + bw, y1 + bh)
            if all(box[0] >= b[2] + 2 or box[2] + 2 <= b[0] or box[1] >= b[3] + 2 or box[3] + 2 <= b[1]
                   for b in boxes):
                break
        else:
            raise AssertionError("could not place the test rectangles")
        img[box[1]:box[3], box[0]:box[2]] = COLOURS[c]
        boxes.append(box)
    return img, np.array(boxes, np.float32), np.arange(3, dtype=np.int64)


def colour_mask(img: np.ndarray, c: int, tol: int = 60) -> np.ndarray:
    return (np.abs(img.astype(int) - COLOURS[c].astype(int)).sum(-1) < tol)


def cfg_for(**over):
    base = {"degrees": 0.0, "translate": 0.0, "scale": 0.0, "shear": 0.0, "perspective": 0.0,
            "min_visible_frac": 0.0, "min_box_size": 0.0, "smart_crop": False}
    base.update(over)
    return get_config(hyp=base)


def check_boxes_on_pixels(img, boxes, cls, min_fill: float, tol: float = 1.5):
    """Every pixel of class c lies in a box of class c (+-tol px); every box is filled >= min_fill by c."""
    h, w = img.shape[:2]
    assert len(boxes) == len(cls)
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
    assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
    for c in range(3):
        m = colour_mask(img, c)
        ys, xs = np.nonzero(m)
        cb = boxes[cls == c]
        if len(xs) > 4:
            inside = np.zeros(len(xs), bool)
            for b in cb:
                inside |= (xs + 0.5 >= b[0] - tol) & (xs + 0.5 <= b[2] + tol) & (ys + 0.5 >= b[1] - tol) & \
                          (ys + 0.5 <= b[3] + tol)
            assert inside.mean() > 0.995, f"class {c}: {1 - inside.mean():.3%} of its pixels outside its boxes"
        for b in cb:
            # 1 px in from each side: interpolated edge pixels are mixed colours
            x1, y1 = np.ceil(b[:2]).astype(int) + 1
            x2, y2 = np.floor(b[2:]).astype(int) - 1
            region = m[y1:y2, x1:x2]
            if min(x2 - x1, y2 - y1) >= 6:  # slivers at the canvas edge are mostly rounding
                assert region.mean() >= min_fill, f"class {c} box {b} only {region.mean():.2f} filled"


GEOMETRIC = [
    ("translate", {"translate": 0.3}, 0.97),
    ("scale", {"scale": 0.5}, 0.97),
    ("degrees", {"degrees": 30.0}, 0.3),
    ("shear", {"shear": 10.0}, 0.45),
    ("perspective", {"perspective": 0.001}, 0.4),
    ("combo", {"degrees": 10.0, "translate": 0.2, "scale": 0.4, "shear": 3.0}, 0.35),
]


@pytest.mark.parametrize("name,over,min_fill", GEOMETRIC, ids=[g[0] for g in GEOMETRIC])
@pytest.mark.parametrize("seed", range(6))
def test_random_affine_boxes_follow_pixels(name, over, min_fill, seed):
    rng = np.random.default_rng(seed)
    img, boxes, cls = make_sample(rng)
    img, boxes, _ = A.letterbox_pad(img, boxes, S, True, 114)
    out = A.random_affine((img, boxes, cls), rng, cfg_for(**over), S)
    assert out[0].shape == (S, S, 3)
    check_boxes_on_pixels(*out, min_fill=min_fill)


@pytest.mark.parametrize("horizontal", [True, False])
def test_flips(horizontal):
    img, boxes, cls = make_sample(np.random.default_rng(1))
    fi, fb = A.flip(img, boxes, horizontal)
    check_boxes_on_pixels(fi, fb, cls, min_fill=0.99)
    back_i, back_b = A.flip(fi, fb, horizontal)
    assert np.array_equal(back_i, img) and np.allclose(back_b, boxes)


@pytest.mark.parametrize("center", [True, False])
def test_letterbox_pad(center):
    img, boxes, cls = make_sample(np.random.default_rng(2), 80, 128)
    out, ob, pad = A.letterbox_pad(img, boxes, S, center, 114)
    assert pad == ((0, 24) if center else (0, 0))
    check_boxes_on_pixels(out, ob, cls, min_fill=0.99)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("smart", [False, True])
def test_mosaic_boxes_follow_pixels(seed, smart):
    rng = np.random.default_rng(seed)
    samples = [make_sample(rng, *hw) for hw in ((96, 128), (128, 96), (64, 64), (128, 128))]
    img, boxes, cls = A.mosaic(samples, rng, cfg_for(smart_crop=smart), S)
    assert img.shape == (S, S, 3)
    check_boxes_on_pixels(img, boxes, cls, min_fill=0.85)


@pytest.mark.parametrize("seed", range(8))
def test_fused_mosaic_affine_boxes_follow_pixels_and_equal_two_step(seed):
    """The fused path (one resampling) gives the two-step path's boxes exactly and its pixels up to the
    second resampling."""
    over = {"translate": 0.2, "scale": 0.5}
    samples = [make_sample(np.random.default_rng(100 + k), *hw)
               for k, hw in enumerate(((96, 128), (128, 96), (64, 64), (128, 128)))]
    fused = A.mosaic_affine(samples, np.random.default_rng(seed), cfg_for(**over), S)
    rng = np.random.default_rng(seed)
    two = A.random_affine(A.mosaic(samples, rng, cfg_for(**over), S), rng, cfg_for(**over), S)
    assert np.array_equal(fused[1], two[1]) and np.array_equal(fused[2], two[2])
    assert np.abs(fused[0].astype(int) - two[0].astype(int)).mean() < 6
    check_boxes_on_pixels(*fused, min_fill=0.97)


@pytest.mark.parametrize("seed", range(4))
def test_fused_letterbox_affine_equals_pad_then_warp(seed):
    cfg = cfg_for(translate=0.2, scale=0.5, degrees=10.0)
    img, boxes, cls = make_sample(np.random.default_rng(seed), 80, 128)
    fused = A.letterbox_affine((img, boxes, cls), np.random.default_rng(seed), cfg, S)
    pi, pb, _ = A.letterbox_pad(img, boxes, S, True, 114)
    two = A.random_affine((pi, pb, cls), np.random.default_rng(seed), cfg, S)
    assert np.array_equal(fused[1], two[1])
    assert np.abs(fused[0].astype(int) - two[0].astype(int)).max() <= 1
    check_boxes_on_pixels(*fused, min_fill=0.3)


def test_fused_mosaic_refuses_rotation():
    with pytest.raises(ValueError, match="degrees"):
        A.mosaic_affine([make_sample(np.random.default_rng(0))] * 4, np.random.default_rng(0),
                        cfg_for(degrees=5.0), S)


def test_mosaic_smart_crop_keeps_more_box_area():
    kept = {}
    for smart in (False, True):
        area = 0.0
        for seed in range(30):
            rng = np.random.default_rng(seed)
            samples = [make_sample(rng) for _ in range(4)]
            _, b, _ = A.mosaic(samples, rng, cfg_for(smart_crop=smart, smart_crop_tries=8), S)
            area += float(((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum())
        kept[smart] = area
    assert kept[True] > kept[False] * 1.05


def test_hidden_boxes_dropped_with_their_class():
    boxes = np.array([[0, 0, 20, 20], [100, 100, 140, 140], [120, 10, 200, 30], [50, 50, 51, 80]], np.float32)
    cls = np.array([0, 1, 2, 0])
    # canvas 128: box 1 keeps 28x28/40x40 = 0.49, box 2 keeps 8/80 = 0.1, box 3 is 1 px wide
    kb, kc = A.filter_boxes(boxes, cls, 128, 128, min_visible_frac=0.25, min_box_size=2.0)
    assert kc.tolist() == [0, 1]
    assert kb.tolist() == [[0, 0, 20, 20], [100, 100, 128, 128]]
    kb, kc = A.filter_boxes(boxes, cls, 128, 128, min_visible_frac=0.05, min_box_size=2.0)
    assert kc.tolist() == [0, 1, 2]


def test_affine_drops_boxes_pushed_out():
    """A translation that pushes most of an object out of the canvas drops its box (and only its box)."""
    img = np.full((S, S, 3), 40, np.uint8)
    img[10:40, 10:40] = COLOURS[0]
    img[60:100, 60:100] = COLOURS[1]
    boxes = np.array([[10, 10, 40, 40], [60, 60, 100, 100]], np.float32)
    m = np.eye(3)
    m[0, 2] = -35  # box 0 keeps 5 of 30 columns (17%), box 1 stays whole
    nb, nc = A.filter_boxes(A.warp_boxes(boxes, m), np.array([0, 1]), S, S, 0.25, 2.0)
    assert nc.tolist() == [1] and np.allclose(nb, [[25, 60, 65, 100]])


def test_copy_paste_exact_pixels_and_overlap_bound():
    rng = np.random.default_rng(0)
    base = make_sample(rng, S, S)
    donor = make_sample(rng, S, S)
    img, boxes, cls = A.copy_paste(base, donor, rng, max_overlap=0.2, max_objects=3)
    n0 = len(base[1])
    assert len(boxes) > n0
    for b, c in zip(boxes[n0:], cls[n0:]):
        x1, y1, x2, y2 = b.astype(int)
        src = donor[1][donor[2] == c][0].astype(int)
        assert np.array_equal(img[y1:y2, x1:x2], donor[0][src[1]:src[3], src[0]:src[2]])
        # no box that was there before it is covered by more than max_overlap
        assert (A._ioa(b, base[1]) <= 0.2 + 1e-6).all()


def test_mixup_blends_pixels_and_keeps_both_box_sets():
    rng = np.random.default_rng(0)
    a, b = make_sample(rng, S, S), make_sample(rng, S, S)
    img, boxes, cls = A.mixup(a, b, np.random.default_rng(5))
    r = np.random.default_rng(5).beta(32.0, 32.0)
    expected = (a[0].astype(np.float32) * r + b[0].astype(np.float32) * (1 - r)).round()
    assert np.array_equal(img, expected.astype(np.uint8))
    assert len(boxes) == len(a[1]) + len(b[1]) and cls.tolist() == a[2].tolist() + b[2].tolist()


def test_hsv_changes_colours_not_geometry():
    img, _, _ = make_sample(np.random.default_rng(3))
    same = A.hsv_jitter(img, np.random.default_rng(0), 0, 0, 0)
    assert same is img
    out = A.hsv_jitter(img, np.random.default_rng(0), 0.1, 0.7, 0.4)
    assert out.shape == img.shape and not np.array_equal(out, img)
    # the background (grey, saturation 0) stays grey: only its value changes
    assert np.ptp(out[0, 0].astype(int)) <= 1


def test_dataset_sample_boxes_follow_pixels(tmp_path):
    """The whole training transform chain (mosaic, affine, flips, HSV off) through DetectionDataset."""
    from PIL import Image
    from yolo_common.data import DatasetSplit, ImageRecord

    from yolov9001.utils.dataset import DetectionDataset

    rng = np.random.default_rng(0)
    records = []
    for k in range(6):
        img, boxes, cls = make_sample(rng)
        path = tmp_path / f"{k}.png"
        Image.fromarray(img).save(path)
        records.append(ImageRecord(path, img.shape[1], img.shape[0], boxes, cls, image_id=k))
    split = DatasetSplit(records, [{"id": c, "name": str(c)} for c in range(3)], tmp_path, "train", "yolo")
    cfg = get_config(hyp={"hsv_h": 0, "hsv_s": 0, "hsv_v": 0, "degrees": 5.0, "translate": 0.1, "scale": 0.3,
                          "mosaic": 1.0, "fliplr": 0.5, "flipud": 0.5, "min_visible_frac": 0.0,
                          "min_box_size": 0.0, "epochs": 10, "imgsz": S})
    ds = DetectionDataset(split, cfg, S, augment=True)
    for i in range(6):
        img, target, _ = ds[i]
        arr = img.numpy()  # HWC
        check_boxes_on_pixels(arr, target[:, 1:].numpy(), target[:, 0].long().numpy(), min_fill=0.5)
