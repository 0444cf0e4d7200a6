"""The seeded shapes set: determinism, box tightness, layouts, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from yolo_common.data import read_coco, read_voc, read_yolo
from yolo_common.synthetic import _draw, main, make_synthetic


def _annotation_bytes(out):
    """Every annotation file under ``out`` keyed by relative path (data.yaml holds an absolute path: left out)."""
    files = [p for p in out.rglob("*") if p.suffix in (".json", ".txt", ".xml")]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def test_same_seed_same_files(tmp_path):
    a = make_synthetic(tmp_path / "a", num_train=3, num_val=2, seed=5)
    b = make_synthetic(tmp_path / "b", num_train=3, num_val=2, seed=5)
    c = make_synthetic(tmp_path / "c", num_train=3, num_val=2, seed=6, layouts=("coco",))
    fa, fb = _annotation_bytes(tmp_path / "a"), _annotation_bytes(tmp_path / "b")
    assert len(fa) > 10 and fa == fb
    for p in (a["coco"] / "val2017").iterdir():
        assert p.read_bytes() == (b["coco"] / "val2017" / p.name).read_bytes()
    ann = "coco/annotations/instances_train2017.json"
    assert _annotation_bytes(tmp_path / "c")[ann] != fa[ann]
    assert set(c) == {"coco"} and not (tmp_path / "c" / "yolo").exists()


def test_objects_boxes_and_classes(synthetic_paths):
    split = read_coco(synthetic_paths["coco"], "train")
    assert [c["name"] for c in split.categories] == ["circle", "square", "triangle"]
    assert all(1 <= len(r) <= 4 for r in split.records)
    seen = set()
    for r in split.records:
        assert (r.width, r.height) == (160, 160)
        b = r.boxes
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 160).all() and (b[:, 3] <= 160).all()
        assert (b[:, 2:] > b[:, :2]).all()
        seen.update(r.category_ids.tolist())
    assert seen == {1, 2, 3}
    assert len(json.loads((synthetic_paths["coco"] / "annotations" / "instances_val2017.json").read_text())
               ["images"]) == 6


def test_boxes_are_tight_around_the_shape():
    # On the raw (un-encoded) pixels, the shape is the one flat colour inside its box; within a 2 px
    # margin around the box, its pixels must span exactly the box (the noisy background never repeats
    # a colour over so few pixels).
    rng = np.random.default_rng(3)
    for _ in range(10):
        img, boxes, classes, _ = _draw(rng, 96, 80, ["circle", "square", "triangle"], 1)
        (x1, y1, x2, y2), = boxes
        colours, counts = np.unique(img[y1:y2, x1:x2].reshape(-1, 3), axis=0, return_counts=True)
        shape_colour = colours[counts.argmax()]
        ox, oy = max(x1 - 2, 0), max(y1 - 2, 0)
        ys, xs = np.nonzero((img[oy:y2 + 2, ox:x2 + 2] == shape_colour).all(-1))
        assert (xs.min() + ox, ys.min() + oy, xs.max() + 1 + ox, ys.max() + 1 + oy) == (x1, y1, x2, y2)


def test_voc_difficult_marks_tiny_objects(tmp_path):
    paths = make_synthetic(tmp_path, layouts=("voc",), num_train=30, num_val=0, image_size=(96, 64), seed=2)
    split = read_voc(paths["voc"], "train")
    assert split.class_names == ["circle", "square", "triangle"]  # via class_names.txt
    sides = np.concatenate([r.boxes[:, 2:] - r.boxes[:, :2] for r in split.records]).max(1)
    difficult = np.concatenate([r.difficult for r in split.records])
    assert difficult.any() and (~difficult).any()
    assert (sides[difficult] < 12).all() and (sides[~difficult] >= 12).all()
    assert all((r.width, r.height) == (96, 64) for r in split.records)
    assert Image.open(split.records[0].path).size == (96, 64)


def test_rerun_replaces_own_output_and_refuses_foreign(tmp_path):
    make_synthetic(tmp_path, layouts=("yolo",), num_train=5, num_val=2)
    paths = make_synthetic(tmp_path, layouts=("yolo",), num_train=2, num_val=1)
    assert len(read_yolo(paths["yolo"], "train")) == 2  # no stale images from the first run
    (tmp_path / "other" / "coco").mkdir(parents=True)
    (tmp_path / "other" / "coco" / "precious.json").write_text("{}")
    with pytest.raises(FileExistsError, match="precious|coco"):
        make_synthetic(tmp_path / "other", layouts=("coco",))
    assert (tmp_path / "other" / "coco" / "precious.json").exists()
    with pytest.raises(ValueError, match="layouts"):
        make_synthetic(tmp_path / "x", layouts=("kitti",))


def test_cli_prints_paths(tmp_path, capsys):
    main(["--out", str(tmp_path), "--num-train", "2", "--num-val", "1", "--image-size", "64x48",
          "--layouts", "yolo,voc", "--seed", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"yolo: {tmp_path / 'yolo' / 'data.yaml'}", f"voc: {tmp_path / 'voc'}"]
    split = read_yolo(tmp_path / "yolo" / "data.yaml", "val")
    assert len(split) == 1 and (split.records[0].width, split.records[0].height) == (64, 48)
    assert not (tmp_path / "coco").exists() and not (tmp_path / ".synthetic_images").exists()
