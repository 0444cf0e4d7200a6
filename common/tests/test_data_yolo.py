"""YOLO (ultralytics) layout reader/writer and its bad-data contract."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml
from PIL import Image

from yolo_common.data import DatasetSplit, ImageRecord, read_yolo, write_yolo
from yolo_common.data.yolo import label_path


def _make_yolo(root, labels, *, names=("cat", "dog"), size=(200, 100), split="val", extra=None):
    """Images ``<stem>.png`` of ``size`` with label text ``labels[stem]`` (None: no label file)."""
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    for stem, text in labels.items():
        Image.new("RGB", size, (10, 200, 90)).save(root / "images" / split / f"{stem}.png")
        if text is not None:
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    data = {"path": ".", split: f"images/{split}", "names": list(names), **(extra or {})}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_normalised_to_pixels_and_missing_label(tmp_path):
    y = _make_yolo(tmp_path, {"a": "1 0.5 0.5 0.2 0.4\n\n0 0.25 0.75 0.1 0.2\n", "b": None, "c": ""})
    split = read_yolo(y, "val")
    assert split.layout == "yolo" and split.root == tmp_path and split.class_names == ["cat", "dog"]
    assert [r.path.stem for r in split.records] == ["a", "b", "c"] and [r.image_id for r in split.records] == [0, 1, 2]
    a = split.records[0]
    assert (a.width, a.height) == (200, 100)
    np.testing.assert_allclose(a.boxes, [[80, 30, 120, 70], [40, 65, 60, 85]], atol=1e-4)
    assert a.category_ids.tolist() == [1, 0]
    assert len(split.records[1]) == 0 and len(split.records[2]) == 0  # background images are kept
    assert split.skipped.counts == {}


def test_names_as_dict_and_image_list_file(tmp_path):
    y = _make_yolo(tmp_path, {"a": "5 0.5 0.5 0.2 0.2\n"}, names=())
    (tmp_path / "val.txt").write_text("./images/val/a.png\n")
    data = yaml.safe_load(y.read_text())
    data.update(names={2: "x", 5: "y"}, val="val.txt")
    y.write_text(yaml.safe_dump(data))
    split = read_yolo(y, "val")
    assert split.categories == [{"id": 2, "name": "x"}, {"id": 5, "name": "y"}]
    assert split.records[0].category_ids.tolist() == [5]


@pytest.mark.parametrize("line, pattern", [
    ("0 0.5 0.5 0.2", "a.txt:2: expected 5 fields"),
    ("0 0.5 0.5 0.2 0.2 0.7", "a.txt:2: expected 5 fields"),
    ("0 0.5 half 0.2 0.2", "a.txt:2: non-numeric"),
    ("2 0.5 0.5 0.2 0.2", "a.txt:2: class id 2 not in names"),
    ("-1 0.5 0.5 0.2 0.2", "a.txt:2: class id -1"),
    ("0.5 0.5 0.5 0.2 0.2", "a.txt:2: class id 0.5"),
    ("0 nan 0.5 0.2 0.2", "a.txt:2: non-finite"),
])
def test_malformed_label_names_file_and_line(tmp_path, line, pattern):
    y = _make_yolo(tmp_path, {"a": f"1 0.5 0.5 0.2 0.2\n{line}\n"})
    with pytest.raises(ValueError, match=pattern):
        read_yolo(y)


def test_clip_and_zero_area_counted(tmp_path):
    y = _make_yolo(tmp_path, {"a": "0 0.95 0.5 0.3 0.2\n1 0.5 0.5 0 0.2\n0 1.0 0.5 0.2 0.2\n"})
    split = read_yolo(y)
    np.testing.assert_allclose(split.records[0].boxes, [[160, 40, 200, 60], [180, 40, 200, 60]], atol=1e-4)
    # The last box ends at exactly 1.1, so it is clipped too; the zero-width one is dropped.
    assert split.skipped.counts == {"box clipped": 2, "zero-area box dropped": 1}


def test_undecodable_images_skipped_and_warned_once(tmp_path, caplog):
    y = _make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "0 0.5 0.5 0.2 0.2\n", "c": "1 0.5 0.5 0.2 0.2\n"})
    for stem in "ab":
        (tmp_path / "images" / "val" / f"{stem}.png").write_bytes(b"\x89PNG garbage")
    with caplog.at_level(logging.WARNING, logger="yolo_common.data"):
        split = read_yolo(y)
    assert [r.path.stem for r in split.records] == ["c"]
    assert split.skipped.counts == {"image does not decode": 2}
    msgs = [r.getMessage() for r in caplog.records if r.name == "yolo_common.data"]
    assert len(msgs) == 1 and "image does not decode: 2" in msgs[0]


def test_missing_pieces(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        read_yolo(tmp_path / "missing.yaml")
    y = _make_yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(FileNotFoundError, match="no 'train' split"):
        read_yolo(y, "train")
    data = yaml.safe_load(y.read_text())
    y.write_text(yaml.safe_dump({**data, "train": "images/train"}))
    with pytest.raises(FileNotFoundError, match=r"images/train"):
        read_yolo(y, "train")
    (tmp_path / "labels" / "val" / "a.txt").unlink()
    (tmp_path / "labels" / "val").rmdir()
    with pytest.raises(FileNotFoundError, match=r"labels/val"):
        read_yolo(y, "val")
    y.write_text(yaml.safe_dump({**data, "path": "elsewhere"}))
    with pytest.raises(FileNotFoundError, match="elsewhere"):
        read_yolo(y, "val")


def test_label_path_rule(tmp_path):
    assert label_path(tmp_path / "images" / "x" / "images" / "a.jpg") == tmp_path / "images" / "x" / "labels" / "a.txt"
    assert label_path(tmp_path / "pics" / "a.jpeg") == tmp_path / "pics" / "a.txt"


def _split(tmp_path, categories, boxes, cids, iscrowd=None):
    Image.new("RGB", (64, 32)).save(tmp_path / "src.png")
    rec = ImageRecord(path=tmp_path / "src.png", width=64, height=32, boxes=boxes, category_ids=cids,
                      iscrowd=iscrowd)
    return DatasetSplit(records=[rec], categories=categories, root=tmp_path, split="x", layout="coco")


def test_write_yolo_maps_by_name_and_skips_crowd(tmp_path):
    split = _split(tmp_path, [{"id": 10, "name": "dog"}, {"id": 20, "name": "cat"}],
                   [[0, 0, 32, 16], [16, 8, 48, 24], [1, 1, 3, 3]], [10, 20, 20], iscrowd=[0, 0, 1])
    y = write_yolo(split, tmp_path / "out", "val", names=["cat", "bird", "dog"])
    text = (tmp_path / "out" / "labels" / "val" / "src.txt").read_text().splitlines()
    assert text == ["2 0.250000 0.250000 0.500000 0.500000", "0 0.500000 0.500000 0.500000 0.500000"]
    data = yaml.safe_load(y.read_text())
    assert data["names"] == {0: "cat", 1: "bird", 2: "dog"} and data["val"] == "images/val"
    back = read_yolo(y, "val")
    np.testing.assert_allclose(back.records[0].boxes, [[0, 0, 32, 16], [16, 8, 48, 24]], atol=1e-3)
    with pytest.raises(ValueError, match="dog"):
        write_yolo(split, tmp_path / "out2", "val", names=["cat"])


def test_write_yolo_updates_yaml_and_refuses_other_names(tmp_path):
    cats = [{"id": 0, "name": "a"}, {"id": 1, "name": "b"}]
    split = _split(tmp_path, cats, [[0, 0, 10, 10]], [1])
    write_yolo(split, tmp_path / "out", "train")
    y = write_yolo(split, tmp_path / "out", "val")
    data = yaml.safe_load(y.read_text())
    assert data["train"] == "images/train" and data["val"] == "images/val" and data["nc"] == 2
    assert len(read_yolo(y, "train")) == 1
    with pytest.raises(ValueError, match="already has names"):
        write_yolo(split, tmp_path / "out", "test", names=["a", "b", "c"])
