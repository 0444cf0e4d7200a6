"""Non-UTF-8 bytes: in text files they are an error naming the file; in file names they are carried
(POSIX names are bytes) through provenance and the writers instead of crashing at the end of a run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from yolo_common.data import load_split, provenance, read_voc, read_yolo, write_coco, write_voc, write_yolo

LATIN1 = "caf\xe9".encode("latin-1")  # b"caf\xe9": not UTF-8


@pytest.fixture
def yolo_copy(synthetic_paths, tmp_path):
    src = synthetic_paths["yolo"].parent
    dst = tmp_path / "yolo"
    shutil.copytree(src, dst)
    data = yaml.safe_load((dst / "data.yaml").read_text())
    data["path"] = str(dst)
    (dst / "data.yaml").write_text(yaml.safe_dump(data))
    return dst


def test_non_utf8_label_file(yolo_copy):
    label = sorted((yolo_copy / "labels" / "val").glob("*.txt"))[0]
    label.write_bytes(label.read_bytes() + b"# " + LATIN1 + b"\n")
    with pytest.raises(ValueError, match=rf"{label.name}: YOLO label file is not UTF-8 text \(byte \d+"):
        read_yolo(yolo_copy / "data.yaml", "val")


def test_non_utf8_data_yaml(yolo_copy):
    y = yolo_copy / "data.yaml"
    y.write_bytes(y.read_bytes() + b"# " + LATIN1 + b"\n")
    with pytest.raises(ValueError, match="data.yaml: YOLO data yaml is not UTF-8"):
        read_yolo(y, "val")


def test_non_utf8_image_list(yolo_copy):
    lst = yolo_copy / "val.txt"
    lst.write_bytes(b"./images/val/" + LATIN1 + b".jpg\n")
    data = yaml.safe_load((yolo_copy / "data.yaml").read_text())
    data["val"] = "val.txt"
    (yolo_copy / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="val.txt: YOLO image list is not UTF-8"):
        read_yolo(yolo_copy / "data.yaml", "val")


@pytest.mark.parametrize("which", ["split list", "class names"])
def test_non_utf8_voc_text_files(synthetic_paths, tmp_path, which):
    root = tmp_path / "voc"
    shutil.copytree(synthetic_paths["voc"], root)
    voc = next(root.rglob("ImageSets")).parent
    target = voc / "ImageSets" / "Main" / "val.txt" if which == "split list" else voc / "class_names.txt"
    target.write_bytes(target.read_bytes() + LATIN1 + b"\n")
    with pytest.raises(ValueError, match=rf"{target.name}: .* is not UTF-8"):
        read_voc(root, "val")


@pytest.fixture
def non_utf8_named_split(synthetic_paths, tmp_path):
    """A COCO split one of whose images has a Latin-1 file name."""
    root = tmp_path / "coco"
    shutil.copytree(synthetic_paths["coco"], root)
    split = load_split(root, "val2017")
    rec = split.records[0]
    weird = Path(os.fsdecode(os.fsencode(str(rec.path.parent)) + b"/" + LATIN1 + b".jpg"))
    os.rename(rec.path, weird)
    rec.path = weird
    return split


def test_provenance_and_writers_carry_non_utf8_names(non_utf8_named_split, tmp_path):
    split = non_utf8_named_split
    info = provenance(split)
    json.dumps(info).encode("utf-8")  # writable as UTF-8 JSON (used to raise UnicodeEncodeError)
    voc = write_voc(split, tmp_path / "out_voc", "val")
    back = read_voc(tmp_path / "out_voc", "val")
    assert len(back) == len(split) and any("%xe9" in r.path.name for r in back.records)
    ann = write_coco(split, tmp_path / "out_coco", "val2017")
    assert len(load_split(tmp_path / "out_coco", "val2017")) == len(split)
    json.loads(ann.read_text(encoding="utf-8"))
    y = write_yolo(split, tmp_path / "out_yolo", "val")
    assert len(read_yolo(y, "val")) == len(split)
    assert Image.open(next((voc / "JPEGImages").glob("caf%xe9*"))).size == (split.records[0].width,
                                                                             split.records[0].height)
