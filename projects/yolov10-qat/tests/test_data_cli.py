"""Data preparation (COCO layout -> YOLO + provenance) and the CLI's errors for a bad --coco-dir."""

from __future__ import annotations

import json

import pytest

from yolov10_qat.cli import main
from yolov10_qat.config import smoke_config
from yolov10_qat.data import COCO_REQUIRED, prepare_data, resolve_coco_dir


def test_missing_coco_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("COCO_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="--coco-dir DIR or set COCO_DIR"):
        main(["run", "--preset", "full", "--data", "coco", "--run-root", str(tmp_path / "r1")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["run", "--data", "coco", "--coco-dir", str(tmp_path / "nope"), "--run-root", str(tmp_path / "r2")])


def test_incomplete_coco_dir_lists_what_is_missing(tmp_path, monkeypatch):
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2017.json").write_text("{}")
    monkeypatch.setenv("COCO_DIR", str(root))  # the env var is honoured too
    with pytest.raises(FileNotFoundError) as e:
        main(["fp16", "--data", "coco", "--run-root", str(tmp_path / "r")])
    msg = str(e.value)
    assert "train2017" in msg and "annotations/instances_train2017.json" in msg
    assert "missing: train2017, annotations/instances_train2017.json" in msg
    assert "val2017," not in msg.split("missing:")[1]  # what exists is not reported missing


def test_coco_layout_becomes_yolo_with_provenance(synthetic_coco, tmp_path):
    assert resolve_coco_dir(synthetic_coco) == synthetic_coco.resolve()
    assert all((synthetic_coco / p).exists() for p in COCO_REQUIRED)
    cfg = smoke_config(data="coco", coco_dir=str(synthetic_coco), max_train_images=4, max_val_images=3).resolve()
    rd = prepare_data(cfg, tmp_path)
    assert (rd.num_train, rd.num_val) == (4, 3)
    import yaml

    ds = yaml.safe_load(rd.dataset_yaml.read_text())
    assert ds["names"] == {0: "circle", 1: "square", 2: "triangle"} and ds["nc"] == 3
    labels = sorted((tmp_path / "data" / "yolo" / "labels" / "train").glob("*.txt"))
    images = sorted((tmp_path / "data" / "yolo" / "images" / "train").glob("*.jpg"))
    assert len(labels) == len(images) == 4
    # hardlinked, not copied
    assert images[0].stat().st_ino == (synthetic_coco / "train2017" / images[0].name).stat().st_ino
    rows = [line.split() for line in labels[0].read_text().splitlines()]
    assert rows and all(len(r) == 5 and 0 <= float(r[1]) <= 1 for r in rows)
    prov = json.loads(rd.provenance.read_text())
    assert [s["images"] for s in prov["splits"]] == [4, 3]
    assert rd.eval_data == synthetic_coco and rd.eval_split == "val2017"
    # a second call reuses the converted tree (what --resume relies on)
    assert prepare_data(cfg, tmp_path) == rd
