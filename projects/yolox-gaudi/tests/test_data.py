"""Training samples: shapes, boxes inside the image, determinism per (seed, epoch, index)."""

import numpy as np
import pytest
import torch

from yolox_gaudi.config import get_exp
from yolox_gaudi.data import CocoSource, EvalDataset, TrainDataset, load_coco_split
from yolox_gaudi.engine import multiscale_size


@pytest.fixture(scope="module")
def source(synthetic_coco):
    return CocoSource(load_coco_split(synthetic_coco, "train2017"))


@pytest.mark.parametrize("mosaic", [pytest.param(True, marks=pytest.mark.slow), False])
def test_samples(source, mosaic):
    exp = get_exp("yolox-s").merge(["num_classes", "3", "input_size", "128,128", "mosaic_prob", "1"])
    ds = TrainDataset(source, exp, seed=3)
    ds.enable_mosaic = mosaic
    img, t, idx = ds[5]
    assert img.shape == (3, 128, 128) and img.dtype == torch.float32 and idx == 5
    assert 0 <= img.min() and img.max() <= 255 and img.max() > 1       # YOLOX: 0-255, no normalisation
    assert t.shape == (120, 5)          # Megvii's max_labels, in every epoch (constant batch shape too)
    n = int((t[:, 3] > 0).sum())
    assert n >= 1
    boxes = t[:n]
    assert ((boxes[:, 0] >= 0) & (boxes[:, 0] < 3)).all()
    x1, x2 = boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 3] / 2
    assert (x1 >= -1e-3).all() and (x2 <= 128 + 1e-3).all() and (boxes[:, 3:] > 1).all()
    assert (t[n:] == 0).all()
    # same (seed, epoch, index) -> same sample; another epoch -> another augmentation
    torch.testing.assert_close(ds[5][0], img)
    ds.epoch = 1
    assert not torch.equal(ds[5][0], img)


def test_plain_sample_matches_eval_letterbox(synthetic_coco, source):
    exp = get_exp("yolox-s").merge(["num_classes", "3", "input_size", "96,96", "hsv_prob", "0", "flip_prob", "0"])
    ds = TrainDataset(source, exp, seed=0)
    ds.enable_mosaic = False
    ev = EvalDataset(source.split, 96)
    torch.testing.assert_close(ds[2][0], ev[2][0])          # train and eval make pixels the same way
    assert ev[2][0].shape == (3, 96, 96)
    rec = source.split.records[2]
    t = ds[2][1]
    n = len(rec.boxes)
    np.testing.assert_allclose(t[:n, 1].numpy(), (rec.boxes[:, 0] + rec.boxes[:, 2]) / 2, atol=1e-3)


class _WideSource(CocoSource):
    """One 60 x 200 (h x w) image with one box: non-square in both the image and the input, so a swap of
    h and w anywhere shows (the synthetic set's images are square)."""

    def __init__(self):
        self.labels = [np.array([[20.0, 10.0, 180.0, 50.0, 0.0]], np.float32)]
        self.split = None
        self.cache = None

    def __len__(self):
        return 1

    def load(self, i):
        img = np.full((60, 200, 3), 40, np.uint8)
        img[10:50, 20:180] = 220
        return img, self.labels[0].copy()


def test_non_square_image_into_a_non_square_input_keeps_h_and_w_apart():
    src = _WideSource()
    img, lab = src.load_resized(0, (96, 128))
    r = min(96 / 60, 128 / 200)
    assert img.shape == (int(60 * r), int(200 * r), 3) == (38, 128, 3)
    np.testing.assert_allclose(lab[0, :4], np.array([20, 10, 180, 50]) * r)
    exp = get_exp("yolox-s").merge(["num_classes", "1", "input_size", "96,128", "hsv_prob", "0", "flip_prob", "0"])
    ds = TrainDataset(src, exp, seed=0)
    ds.enable_mosaic = False
    x, t, _ = ds[0]
    assert x.shape == (3, 96, 128)
    torch.testing.assert_close(t[0], torch.tensor([0.0, 100 * r, 30 * r, 160 * r, 40 * r]), atol=1e-3, rtol=0)
    # the bright object is where the target says (BGR channel 0 is the image's blue = 220 inside)
    cx, cy = int(100 * r), int(30 * r)
    assert x[0, cy, cx] == 220 and x[0, int(55 * r), cx] == 40 and x[0, 90, 5] == 114      # pad below
    ds.enable_mosaic = True
    for epoch in range(3):
        ds.epoch = epoch
        x, t, _ = ds[0]
        assert x.shape == (3, 96, 128)
        b = t[t[:, 3] > 0]
        assert ((b[:, 1] + b[:, 3] / 2) <= 128 + 1e-3).all() and ((b[:, 2] + b[:, 4] / 2) <= 96 + 1e-3).all()


def test_multiscale_identical_per_window_and_in_range():
    exp = get_exp("yolox-s")
    sizes = [multiscale_size(exp, 7, it) for it in range(200)]
    assert all(h == w and 480 <= h <= 800 and h % 32 == 0 for h, w in sizes)
    assert all(sizes[i] == sizes[i - i % 10] for i in range(200))   # changes only every 10 iterations
    assert len(set(sizes)) > 3
    nano = get_exp("yolox-nano")
    assert {multiscale_size(nano, 0, it)[0] for it in range(0, 2000, 10)} <= set(range(320, 641, 32))


def test_multiscale_keeps_a_non_square_aspect_like_megvii():
    # Megvii's random_resize: h = 32 k, w = 32 int(k * w0 / h0), k from random_size (or h0/32 +- range).
    exp = get_exp("yolox-s").merge(["input_size", "96,128", "random_size", "2,6"])
    sizes = {multiscale_size(exp, 0, it) for it in range(0, 3000, 10)}
    assert sizes == {(32 * k, 32 * int(k * 128 / 96)) for k in range(2, 7)}
    fixed = get_exp("yolox-s").merge(["input_size", "96,128", "multiscale_range", "0", "random_size", "None"])
    assert multiscale_size(fixed, 0, 5) == (96, 128)


def test_resize_batch_scales_each_axis():
    from yolox_gaudi.engine import _resize_batch

    images = torch.rand(2, 3, 64, 96)
    targets = torch.tensor([[[1.0, 48, 32, 20, 10]]]).repeat(2, 1, 1)
    out, t = _resize_batch(images, targets, (128, 96))
    assert out.shape == (2, 3, 128, 96)
    torch.testing.assert_close(t[0, 0], torch.tensor([1.0, 48, 64, 20, 20]))   # x kept, y doubled


@pytest.mark.parametrize("mosaic,affine", [(True, "centre"), (True, "origin"), (False, "centre")])
def test_non_square_samples_stay_non_square(source, mosaic, affine):
    """input_size 96,128 is (h, w) in the mosaic, the affine, mixup and the letterbox (it was made square)."""
    exp = get_exp("yolox-s").merge(["num_classes", "3", "input_size", "96,128", "mosaic_prob", "1",
                                    "mixup_prob", "1", "mosaic_affine", affine])
    ds = TrainDataset(source, exp, seed=1)
    ds.enable_mosaic = mosaic
    seen = 0
    for i in range(6):
        img, t, _ = ds[i]
        assert img.shape == (3, 96, 128)
        n = int((t[:, 3] > 0).sum())
        seen += n
        b = t[:n]
        assert (b[:, 1] - b[:, 3] / 2 >= -1e-3).all() and (b[:, 1] + b[:, 3] / 2 <= 128 + 1e-3).all()
        assert (b[:, 2] - b[:, 4] / 2 >= -1e-3).all() and (b[:, 2] + b[:, 4] / 2 <= 96 + 1e-3).all()
    assert seen > 0
    ev = EvalDataset(source.split, (96, 128))
    assert ev[0][0].shape == (3, 96, 128)


def test_non_square_letterbox_puts_boxes_on_the_objects(synthetic_coco, source):
    """A plain non-square sample: the object pixels sit inside each target box (boxes follow x and y)."""
    exp = get_exp("yolox-s").merge(["num_classes", "3", "input_size", "64,160", "hsv_prob", "0", "flip_prob", "0"])
    ds = TrainDataset(source, exp, seed=0)
    ds.enable_mosaic = False
    img, t, _ = ds[3]
    rec = source.split.records[3]
    r = min(64 / rec.height, 160 / rec.width)
    n = len(rec.boxes)
    np.testing.assert_allclose(t[:n, 1].numpy(), (rec.boxes[:, 0] + rec.boxes[:, 2]) / 2 * r, atol=1e-3)
    np.testing.assert_allclose(t[:n, 2].numpy(), (rec.boxes[:, 1] + rec.boxes[:, 3]) / 2 * r, atol=1e-3)
    assert (img[:, :, int(160 * 0.99):] == 114).all() or r * rec.width >= 159   # top-left, padded right


def test_no_aug_epochs_keep_120_labels_of_a_crowded_image():
    """A 60-box image in a no-aug epoch: all 60 targets kept (the cap used to be 50 there)."""
    class One(CocoSource):
        def __init__(self):
            xs = np.arange(60, dtype=np.float32) * 2
            self.labels = [np.stack([xs, xs, xs + 10, xs + 10, np.zeros(60, np.float32)], 1)]
            self.split = None

        def __len__(self):
            return 1

        def load(self, i):
            return np.full((140, 140, 3), 100, np.uint8), self.labels[0].copy()

    exp = get_exp("yolox-s").merge(["num_classes", "1", "input_size", "160,160", "hsv_prob", "0", "flip_prob", "0"])
    ds = TrainDataset(One(), exp, seed=0)
    ds.enable_mosaic = False
    _, t, _ = ds[0]
    assert int((t[:, 3] > 0).sum()) == 60


@pytest.mark.parametrize("max_epoch,no_aug,first", [(300, 15, 284), (10, 0, 9), (5, 2, 2), (3, 5, 0)])
def test_no_aug_switch_epoch_is_megvii_s(max_epoch, no_aug, first):
    """Megvii's before_epoch closes the mosaic when epoch + 1 == max_epoch - no_aug_epochs: 16 no-aug
    epochs for no_aug_epochs 15 (0-based first no-aug epoch 284 of 300)."""
    exp = get_exp("yolox-s").merge(["max_epoch", str(max_epoch), "no_aug_epochs", str(no_aug)])
    assert exp.no_aug_start_epoch == first


def test_class_indices_follow_sorted_category_ids(tmp_path, synthetic_coco):
    """Megvii sorts the json's category ids; a json listing them in another order must map the same."""
    import json
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco, root)
    ann = root / "annotations" / "instances_train2017.json"
    doc = json.loads(ann.read_text())
    doc["categories"] = list(reversed(doc["categories"]))
    ann.write_text(json.dumps(doc))
    a = CocoSource(load_coco_split(synthetic_coco, "train2017"))
    b = CocoSource(load_coco_split(root, "train2017"))
    assert [c["id"] for c in b.split.categories] == sorted(c["id"] for c in doc["categories"])
    for la, lb in zip(a.labels, b.labels):
        np.testing.assert_array_equal(la, lb)


def test_hsv_jitter_selects_channels_like_megvii():
    """Each of h, s, v is shifted in about half of the draws (Megvii's random channel selection)."""
    from PIL import Image

    from yolox_gaudi.data import augment_hsv

    img = np.asarray(Image.new("RGB", (8, 8), (180, 90, 40)))
    base = np.asarray(Image.fromarray(img).convert("HSV")).astype(int)
    rng = np.random.default_rng(0)
    changed = np.zeros(3)
    n = 300
    for _ in range(n):
        out = np.asarray(Image.fromarray(augment_hsv(img, rng)).convert("HSV")).astype(int)
        changed += np.abs(out - base).reshape(-1, 3).max(0) > 0
    # about 1/2 (hue a bit less: its small shifts round to 0); without the selection: 0.86 / 0.97 / 0.97
    assert ((0.25 * n < changed) & (changed < 0.65 * n)).all(), changed / n
    unchanged_all = 0
    for _ in range(200):
        if np.array_equal(augment_hsv(img, rng), img):
            unchanged_all += 1
    assert unchanged_all > 10          # all three dropped: 1/8 of the draws leave the image as it was
