"""Dataset readers on generated ImageNet-100-style and VOC-style folders, bad input included."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from yolov1.augment import DetectionTransform
from yolov1.imagenet100 import ImageFolderDataset, classification_transform, read_imagenet100, write_tiny_imagenet
from yolo_common.data import UnreadableImage
from yolov1.voc import VOCDetection, collate, parse_parts, read_voc_parts

WNIDS = ["n00000003", "n00000001", "n00000002"]  # deliberately not sorted: the order is Labels.json's


@pytest.fixture()
def tiny_imagenet(tmp_path):
    return write_tiny_imagenet(tmp_path / "imagenet100", WNIDS, images_per_class=3, size=40)


def test_imagenet_layout_and_class_order(tiny_imagenet):
    train = read_imagenet100(tiny_imagenet, "train")
    val = read_imagenet100(tiny_imagenet, "val")
    assert train.wnids == WNIDS and len(train) == 9 and len(val) == 6
    assert {p.parent.parent.name for p, _ in train.samples} == {"train.X1", "train.X2"}  # every train.X* read
    for path, label in train.samples:
        assert WNIDS[label] == path.parent.name
    assert train.classes_json()["wnids"] == WNIDS
    ds = ImageFolderDataset(train, classification_transform(32, train=True))
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all() and 0 <= y < 3


def test_imagenet_flattened_layout(tiny_imagenet):
    flat = tiny_imagenet.parent / "flat"
    (flat / "train").mkdir(parents=True)
    shutil.copy(tiny_imagenet / "Labels.json", flat / "Labels.json")
    for d in tiny_imagenet.glob("train.X*/*"):
        shutil.copytree(d, flat / "train" / d.name)
    assert len(read_imagenet100(flat, "train")) == 9


def test_imagenet_corrupt_image_counted_or_named(tiny_imagenet, caplog):
    bad = next((tiny_imagenet / "train.X1").rglob("*.JPEG"))
    bad.write_bytes(b"not a jpeg at all")
    (bad.parent / "notes.txt").write_text("x")
    split = read_imagenet100(tiny_imagenet, "train", verify=True)
    assert len(split) == 8
    assert split.skipped.counts["image does not decode"] == 1
    assert split.skipped.counts["not an image file"] == 1
    assert "skipped" in caplog.text
    unverified = read_imagenet100(tiny_imagenet, "train", verify=False)
    ds = ImageFolderDataset(unverified, classification_transform(32, train=False))
    i = [p for p, _ in unverified.samples].index(bad)
    with pytest.raises(UnreadableImage, match=bad.name):   # an OSError: SkipUnreadable counts it
        ds[i]


def test_imagenet_bad_layouts(tmp_path, tiny_imagenet):
    with pytest.raises(FileNotFoundError, match="Labels.json"):
        read_imagenet100(tmp_path, "train")
    stray = tiny_imagenet / "train.X1" / "n99999999"
    stray.mkdir()
    with pytest.raises(ValueError, match="n99999999"):
        read_imagenet100(tiny_imagenet, "train")
    shutil.rmtree(stray)
    shutil.rmtree(tiny_imagenet / "val.X")
    with pytest.raises(FileNotFoundError, match="val"):
        read_imagenet100(tiny_imagenet, "val")


def test_voc_official_split_and_batch(synthetic_voc):
    (train,) = read_voc_parts(synthetic_voc, "2012:train")
    (val,) = read_voc_parts(synthetic_voc, "2012:val")
    assert len(train) == 12 and len(val) == 6
    assert train.class_names == ["circle", "square", "triangle"]
    ds = VOCDetection([train], DetectionTransform(128, train=True), S=2, B=2)
    x, t, idx = collate([ds[i] for i in range(4)])
    assert x.shape == (4, 3, 128, 128) and t["boxes"].shape == (4, 2, 2, 2, 4) and t["classes"].shape == (4, 2, 2, 3)
    assert idx.tolist() == [0, 1, 2, 3]
    # the same epoch and index give the same augmentation, whichever worker draws it
    assert torch.equal(ds[1][0], ds[1][0])
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], x[1])


def test_voc_difficult_kept_for_eval_dropped_for_training(synthetic_voc):
    (train,) = read_voc_parts(synthetic_voc, "2012:train")
    i, r = next((i, r) for i, r in enumerate(train.records) if r.difficult.any())
    ds = VOCDetection([train], DetectionTransform(128), S=2, B=2)
    _, boxes, labels = ds.load(i)
    assert len(boxes) == len(labels) == int((~r.difficult).sum())
    ds_all = VOCDetection([train], DetectionTransform(128), S=2, B=2, use_difficult=True)
    assert len(ds_all.load(i)[1]) == len(r)


def _copy_voc(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_voc_bad_class_name_names_file_and_class(synthetic_voc, tmp_path):
    root = _copy_voc(synthetic_voc, tmp_path / "voc")
    xml = sorted((root / "VOCdevkit/VOC2012/Annotations").glob("*.xml"))[0]
    xml.write_text(xml.read_text().replace("<name>", "<name>zebra", 1))
    with pytest.raises(ValueError, match=rf"{xml.name}.*zebra"):
        read_voc_parts(root, "2012:train,2012:val")


def test_voc_corrupt_image_counted_skip(synthetic_voc, tmp_path, caplog):
    root = _copy_voc(synthetic_voc, tmp_path / "voc")
    (train,) = read_voc_parts(root, "2012:train")
    bad = train.records[0].path
    bad.unlink()  # a hardlink in the copy: replace, do not write through to the fixture
    bad.write_bytes(b"\xff\xd8 truncated")
    (verified,) = read_voc_parts(root, "2012:train", verify=True)
    assert len(verified) == len(train) - 1
    assert verified.skipped.counts["image does not decode"] == 1
    ds = VOCDetection([train], DetectionTransform(128), S=2, B=2)
    with pytest.raises(UnreadableImage, match=bad.name):
        ds[0]


def test_parse_parts():
    assert parse_parts("2007:trainval, 2012:trainval") == [("2007", "trainval"), ("2012", "trainval")]
    with pytest.raises(ValueError, match="YEAR:IMAGE_SET"):
        parse_parts("2012")


def test_augment_drops_boxes_and_labels_together():
    img = Image.fromarray(np.full((100, 100, 3), 128, np.uint8))
    boxes = np.array([[0, 0, 10, 10], [40, 40, 60, 60], [85, 85, 100, 100], [0, 80, 20, 95]], np.float32)
    labels = np.array([0, 1, 2, 3])
    tr = DetectionTransform(100, train=True, min_box_px=2)
    # shift 20% right and down: the box in the bottom-right corner leaves the image, as does the bottom-left one
    params = {"s": 1.0, "tx": 20.0, "ty": 20.0, "flip": False, "saturation": 1.0, "exposure": 1.0}
    x, b, lab = tr.apply(img, boxes, labels, params)
    assert lab.tolist() == [0, 1]  # the starting code kept [0, 1, 2, 3]'s first two *original* labels by luck only
    assert b[1] == pytest.approx([0.7, 0.7, 0.2, 0.2])  # centre (50+20)/100, size unchanged
    # scale 1.2 about the centre: sizes grow by 1.2
    params.update(s=1.2, tx=0.0, ty=0.0)
    _, b2, lab2 = tr.apply(img, boxes, labels, params)
    assert lab2.tolist() == [0, 1, 2, 3] and b2[1][2] == pytest.approx(0.24)
    assert x.shape == (3, 100, 100)


def test_augment_random_draws_within_paper_ranges():
    tr = DetectionTransform(448, train=True)
    rng = np.random.default_rng(0)
    ps = [tr.sample(rng) for _ in range(500)]
    assert all(0.8 <= p["s"] <= 1.2 and abs(p["tx"]) <= 0.2 * 448 and abs(p["ty"]) <= 0.2 * 448 for p in ps)
    assert all(1 / 1.5 <= p["saturation"] <= 1.5 and 1 / 1.5 <= p["exposure"] <= 1.5 for p in ps)
    assert min(p["exposure"] for p in ps) < 0.75 and max(p["exposure"] for p in ps) > 1.35
    assert not any(p["flip"] for p in ps)  # hflip is off by default (not in the paper)
    assert DetectionTransform(448).sample(rng)["s"] == 1.0  # eval: identity


def test_imagenet_labels_json_order_written(tiny_imagenet):
    assert list(json.loads((tiny_imagenet / "Labels.json").read_text())) == WNIDS
