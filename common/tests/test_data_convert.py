"""Round trips between layouts, load_split dispatch, and provenance."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from yolo_common.data import (
    DatasetSplit,
    ImageRecord,
    detect_layout,
    load_split,
    provenance,
    read_coco,
    read_voc,
    read_yolo,
    write_coco,
    write_provenance,
    write_voc,
    write_yolo,
)


def _named_boxes(split):
    """Per image file name: sorted list of (class name, box) so layouts can be compared by name."""
    name = {c["id"]: c["name"] for c in split.categories}
    return {r.path.name: sorted(((name[c], tuple(b)) for b, c in zip(r.boxes.tolist(), r.category_ids.tolist())))
            for r in split.records}


def _assert_same(a, b, atol):
    na, nb = _named_boxes(a), _named_boxes(b)
    assert na.keys() == nb.keys()
    for k in na:
        assert [n for n, _ in na[k]] == [n for n, _ in nb[k]], k
        np.testing.assert_allclose([bx for _, bx in na[k]], [bx for _, bx in nb[k]], atol=atol, err_msg=k)


@pytest.fixture
def sparse_coco(synthetic_paths, tmp_path):
    """The synthetic val split with COCO-like sparse ids and fractional, sometimes edge-touching boxes."""
    src = read_coco(synthetic_paths["coco"], "val")
    rng = np.random.default_rng(1)
    records = []
    for r in src.records:
        b = r.boxes + rng.uniform(-0.45, 0.45, r.boxes.shape).astype(np.float32)
        b = np.clip(b, 0, [r.width, r.height, r.width, r.height]).astype(np.float32)
        records.append(ImageRecord(path=r.path, width=r.width, height=r.height, boxes=b,
                                   category_ids=[{1: 90, 2: 5, 3: 44}[c] for c in r.category_ids.tolist()],
                                   image_id=r.image_id))
    split = DatasetSplit(records=records, categories=[{"id": 90, "name": "triangle"}, {"id": 5, "name": "circle"},
                                                      {"id": 44, "name": "square"}],
                         root=src.root, split="val2017", layout="coco")
    write_coco(split, tmp_path / "coco", "val2017")
    return read_coco(tmp_path / "coco", "val2017")


def test_coco_yolo_coco_round_trip(sparse_coco, tmp_path):
    assert [c["id"] for c in sparse_coco.categories] == [5, 44, 90]
    y = write_yolo(sparse_coco, tmp_path / "yolo", "val")
    yolo = read_yolo(y, "val")
    assert yolo.class_names == ["circle", "square", "triangle"]  # class k = k-th category by COCO id
    _assert_same(sparse_coco, yolo, atol=1e-2)
    # Back to COCO with the original sparse ids restored.
    write_coco(yolo, tmp_path / "coco2", "val2017", category_ids=[5, 44, 90])
    back = read_coco(tmp_path / "coco2", "val2017")
    assert back.categories == sparse_coco.categories
    _assert_same(sparse_coco, back, atol=1.0)
    for a, b in zip(sparse_coco.records, back.records):
        assert a.category_ids.tolist() == b.category_ids.tolist()


def test_coco_voc_coco_round_trip(sparse_coco, tmp_path):
    write_voc(sparse_coco, tmp_path / "voc", "val")
    voc = read_voc(tmp_path / "voc", "val")
    assert voc.class_names == ["circle", "square", "triangle"]
    _assert_same(sparse_coco, voc, atol=0.5 + 1e-3)  # VOC stores integers: rounding costs <= 0.5 px
    write_coco(voc, tmp_path / "coco2", "val2017")
    _assert_same(sparse_coco, read_coco(tmp_path / "coco2", "val2017"), atol=1.0)


def test_synthetic_layouts_agree(synthetic_paths):
    coco = read_coco(synthetic_paths["coco"], "train")
    yolo = read_yolo(synthetic_paths["yolo"], "train")
    voc = read_voc(synthetic_paths["voc"], "train")
    assert len(coco) == len(yolo) == len(voc) == 8
    _assert_same(coco, yolo, atol=1e-3)
    _assert_same(coco, voc, atol=0)  # synthetic boxes are whole pixels: VOC stores them exactly


def test_load_split_dispatch(synthetic_paths, tmp_path):
    coco, yaml_path, voc = synthetic_paths["coco"], synthetic_paths["yolo"], synthetic_paths["voc"]
    assert detect_layout(coco) == "coco" and detect_layout(yaml_path) == "yolo" and detect_layout(voc) == "voc"
    assert load_split(coco, "val").layout == "coco"
    assert load_split(yaml_path, "val").layout == "yolo"
    assert load_split(yaml_path.parent, "train").layout == "yolo"  # folder holding data.yaml
    for p in (voc, voc / "VOCdevkit", voc / "VOCdevkit" / "VOC2012"):
        assert len(load_split(p, "val")) == 6
    assert load_split(coco).split == "val2017"  # each reader's default split
    # A devkit holding only VOC2007 is read without naming the year.
    shutil.copytree(voc / "VOCdevkit" / "VOC2012", tmp_path / "v" / "VOCdevkit" / "VOC2007")
    assert len(load_split(tmp_path / "v", "train")) == 8
    with pytest.raises(FileNotFoundError, match="missing"):
        load_split(tmp_path / "missing", "val")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="cannot tell the dataset layout"):
        load_split(tmp_path / "plain", "val")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="x.json"):
        load_split(tmp_path / "x.json", "val")


def test_provenance(synthetic_paths, tmp_path):
    coco = read_coco(synthetic_paths["coco"], "val")
    yolo_root = tmp_path / "yolo"
    shutil.copytree(synthetic_paths["yolo"].parent, yolo_root)
    # Re-point the copied yaml at the copy (write_yolo wrote an absolute path).
    y = yolo_root / "data.yaml"
    y.write_text(y.read_text().replace(str(synthetic_paths["yolo"].parent), str(yolo_root)))
    yolo = read_yolo(y, "val")
    info = write_provenance(tmp_path / "prov" / "data.json", coco, yolo)
    assert json.loads((tmp_path / "prov" / "data.json").read_text()) == info
    pc, py = info["splits"]
    ann = synthetic_paths["coco"] / "annotations" / "instances_val2017.json"
    assert pc["layout"] == "coco" and pc["split"] == "val2017" and pc["images"] == 6
    assert pc["boxes"] == coco.num_boxes and pc["crowd_boxes"] == 0 and pc["skipped"]["counts"] == {}
    assert pc["annotation_files"] == [{"path": str(ann), "sha256": hashlib.sha256(ann.read_bytes()).hexdigest(),
                                       "bytes": ann.stat().st_size}]
    assert py["layout"] == "yolo" and py["annotation_file_count"] == 7  # data.yaml + 6 labels
    assert info["generated"].endswith("+00:00")
    # The combined digest moves when any one label changes, and only then.
    assert provenance(yolo)["splits"][0]["annotations_sha256"] == py["annotations_sha256"]
    label = sorted((yolo_root / "labels" / "val").glob("*.txt"))[3]
    label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert provenance(yolo)["splits"][0]["annotations_sha256"] != py["annotations_sha256"]
