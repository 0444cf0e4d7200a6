"""COCO reader/writer, verify_images, to_coco_dict, and the category maps."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from yolo_common.data import (
    COCO80_TO_COCO91,
    COCO_CATEGORIES,
    COCO_CLASSES,
    VOC_CLASSES,
    coco80_to_coco91,
    coco91_to_coco80,
    read_coco,
    to_coco_dict,
    verify_images,
    write_coco,
)


def _make_coco(root, anns, *, split="val2017", images_subdir=False, size=(100, 50), categories=None):
    """One image ``a.png`` of ``size`` with the given annotation dicts (bbox xywh) in a COCO layout."""
    img_dir = root / "images" / split if images_subdir else root / split
    img_dir.mkdir(parents=True)
    Image.new("RGB", size, (90, 120, 30)).save(img_dir / "a.png")
    data = {
        "images": [{"id": 7, "file_name": "a.png", "width": size[0], "height": size[1]}],
        "annotations": [{"id": i + 1, "image_id": 7, "iscrowd": 0, **a} for i, a in enumerate(anns)],
        "categories": categories or [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
    }
    (root / "annotations").mkdir()
    ann = root / "annotations" / f"instances_{split}.json"
    ann.write_text(json.dumps(data))
    return ann


def test_xywh_to_xyxy_clip_and_zero_area(tmp_path, caplog):
    _make_coco(tmp_path, [
        {"bbox": [10, 20, 30, 25], "category_id": 3},  # inside -> [10, 20, 40, 45]
        {"bbox": [-5, 40, 20, 20], "category_id": 1, "iscrowd": 1},  # clipped -> [0, 40, 15, 50]
        {"bbox": [120, 0, 10, 10], "category_id": 1},  # right of the image: nothing left
        {"bbox": [50, 10, 0, 5], "category_id": 3},  # zero width
    ])
    with caplog.at_level(logging.WARNING, logger="yolo_common.data"):
        split = read_coco(tmp_path, "val2017")
    assert split.layout == "coco" and split.split == "val2017" and len(split) == 1
    r = split.records[0]
    assert r.image_id == 7 and (r.width, r.height) == (100, 50)
    np.testing.assert_allclose(r.boxes, [[10, 20, 40, 45], [0, 40, 15, 50]])
    assert r.category_ids.tolist() == [3, 1]
    assert r.iscrowd.tolist() == [False, True]
    assert split.skipped.counts == {"box clipped": 1, "zero-area box dropped": 2}
    assert [c["id"] for c in split.categories] == [1, 3]  # sorted by id, so class k = categories[k]
    warnings = [rec for rec in caplog.records if rec.name == "yolo_common.data"]
    assert len(warnings) == 1 and "zero-area box dropped: 2" in warnings[0].getMessage()


def test_train_val_aliases_and_images_subdir(tmp_path):
    _make_coco(tmp_path / "a", [{"bbox": [1, 1, 5, 5], "category_id": 1}])  # val2017 on disk
    assert read_coco(tmp_path / "a", "val").split == "val2017"
    _make_coco(tmp_path / "b", [{"bbox": [1, 1, 5, 5], "category_id": 1}], split="val", images_subdir=True)
    split = read_coco(tmp_path / "b", "val2017")  # only "val" exists, in images/val/
    assert split.split == "val" and split.records[0].path == tmp_path / "b" / "images" / "val" / "a.png"


def test_missing_pieces_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_coco(tmp_path / "nope")
    _make_coco(tmp_path, [])
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        read_coco(tmp_path, "train2017")
    shutil.rmtree(tmp_path / "val2017")
    with pytest.raises(FileNotFoundError, match="val2017"):
        read_coco(tmp_path, "val2017")
    with pytest.raises(FileNotFoundError, match="other.json"):
        read_coco(tmp_path, "val2017", ann_file=tmp_path / "other.json")


def test_malformed_json_names_file(tmp_path):
    ann = _make_coco(tmp_path, [])
    ann.write_text('{"images": [')
    with pytest.raises(ValueError, match="instances_val2017.json"):
        read_coco(tmp_path)
    ann.write_text('{"annotations": []}')
    with pytest.raises(ValueError, match="instances_val2017.json"):
        read_coco(tmp_path)


def test_unknown_category_or_image_is_an_error(tmp_path):
    _make_coco(tmp_path / "a", [{"bbox": [1, 1, 5, 5], "category_id": 99}])
    with pytest.raises(ValueError, match="category_id 99"):
        read_coco(tmp_path / "a")
    _make_coco(tmp_path / "b", [{"bbox": [1, 1, 5, 5], "category_id": 1, "image_id": 8}])
    with pytest.raises(ValueError, match="image_id 8"):
        read_coco(tmp_path / "b")


def test_missing_image_file_skipped(tmp_path):
    _make_coco(tmp_path, [{"bbox": [1, 1, 5, 5], "category_id": 1}])
    (tmp_path / "val2017" / "a.png").unlink()
    split = read_coco(tmp_path)
    assert len(split) == 0 and split.skipped.counts["image file missing"] == 1
    # verify_images carries the reader's counts over into its result.
    assert verify_images(split, progress=False).skipped.counts == {"image file missing": 1}


def test_verify_images_drops_undecodable(synthetic_paths, tmp_path, caplog):
    root = tmp_path / "coco"
    shutil.copytree(synthetic_paths["coco"], root)
    bad = sorted((root / "val2017").iterdir())[:2]
    for p in bad:
        p.write_bytes(b"not a jpeg at all")
    split = read_coco(root, "val")
    assert len(split) == 6  # the json is trusted: no decode on read
    with caplog.at_level(logging.WARNING, logger="yolo_common.data"):
        checked = verify_images(split, workers=2)
    assert len(checked) == 4 and {r.path.name for r in checked.records}.isdisjoint(p.name for p in bad)
    assert checked.skipped.counts["image does not decode"] == 2
    assert len(split.skipped.counts) == 0  # the input split is left alone
    assert len([r for r in caplog.records if r.name == "yolo_common.data"]) == 1


def test_to_coco_dict_is_valid_ground_truth(synthetic_paths):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    split = read_coco(synthetic_paths["coco"], "val")
    gt_dict = to_coco_dict(split)
    assert gt_dict["annotations"][0]["id"] == 1 and len(gt_dict["annotations"]) == split.num_boxes
    a = gt_dict["annotations"][0]
    x, y, w, h = a["bbox"]
    assert a["area"] == pytest.approx(w * h)
    np.testing.assert_allclose([x, y, x + w, y + h], split.records[0].boxes[0], atol=1e-3)
    # Perfect detections must score AP 1 against it: proves ids, bboxes and categories are consistent.
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                for a in gt_dict["annotations"]]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_to_coco_dict_category_remap(synthetic_paths):
    split = read_coco(synthetic_paths["coco"], "val")
    d = to_coco_dict(split, category_ids=[17, 5, 90])
    assert [c["id"] for c in d["categories"]] == [17, 5, 90]
    old = [int(c) for r in split.records for c in r.category_ids]
    assert [a["category_id"] for a in d["annotations"]] == [{1: 17, 2: 5, 3: 90}[c] for c in old]
    with pytest.raises(ValueError):
        to_coco_dict(split, category_ids=[1, 2])


def test_write_coco_round_trip(synthetic_paths, tmp_path):
    split = read_coco(synthetic_paths["coco"], "train")
    ann = write_coco(split, tmp_path, "mine")
    assert ann == tmp_path / "annotations" / "instances_mine.json"
    back = read_coco(tmp_path, "mine")
    assert [r.image_id for r in back.records] == [r.image_id for r in split.records]
    for a, b in zip(split.records, back.records):
        assert b.path.read_bytes() == a.path.read_bytes()
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        assert a.category_ids.tolist() == b.category_ids.tolist()


def test_category_maps():
    assert len(COCO_CLASSES) == len(COCO80_TO_COCO91) == len(COCO_CATEGORIES) == 80
    assert len(set(COCO80_TO_COCO91)) == 80 and all(1 <= i <= 90 for i in COCO80_TO_COCO91)
    assert coco80_to_coco91(0) == 1 and coco80_to_coco91(11) == 13 and coco80_to_coco91(79) == 90
    assert all(coco91_to_coco80(coco80_to_coco91(k)) == k for k in range(80))
    assert COCO_CLASSES[coco91_to_coco80(90)] == "toothbrush" and COCO_CLASSES[coco91_to_coco80(44)] == "bottle"
    with pytest.raises(KeyError):
        coco91_to_coco80(12)  # an id COCO defines but never annotated
    with pytest.raises(IndexError):
        coco80_to_coco91(80)
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES.index("person") == 14 and VOC_CLASSES[-1] == "tvmonitor"


# ---- issue 16: official area buckets and annotation quirks -------------------------------------------


def _coco_with_mask_areas(root, n_images=12, seed=0):
    """Images whose annotation areas (as for masks) differ from the box areas, across the S/M/L limits."""
    rng = np.random.default_rng(seed)
    img_dir = root / "val2017"
    img_dir.mkdir(parents=True)
    images, anns = [], []
    for i in range(n_images):
        Image.new("RGB", (400, 300), (80, 80, 80)).save(img_dir / f"{i}.png")
        images.append({"id": 100 + i, "file_name": f"{i}.png", "width": 400, "height": 300})
        for _ in range(rng.integers(2, 6)):
            w, h = rng.uniform(10, 160, 2)
            x, y = rng.uniform(0, 400 - w), rng.uniform(0, 300 - h)
            # mask area: 40-95% of the box, so many objects change bucket (32^2 and 96^2 limits)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": int(rng.choice([1, 3])),
                         "bbox": [x, y, w, h], "area": float(w * h * rng.uniform(0.4, 0.95)),
                         "iscrowd": int(rng.random() < 0.1)})
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"},
                                                                   {"id": 3, "name": "car"}]}
    (root / "annotations").mkdir()
    ann = root / "annotations" / "instances_val2017.json"
    ann.write_text(json.dumps(data))
    dets = []
    for a in anns:  # noisy detections of every object, plus a few false positives
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.08, 4) * [w, h, w, h]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": [x + j[0], y + j[1], w + j[2], h + j[3]], "score": float(rng.uniform(0.2, 1))})
    for i in range(n_images):
        dets.append({"image_id": 100 + i, "category_id": 1, "bbox": [5, 5, 40, 40], "score": 0.3})
    return ann, dets


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_area_buckets_equal_pycocotools_on_the_original_json(tmp_path, backend):
    """coco_map(read_coco -> to_coco_dict) == pycocotools on the original json, all 12 stats, on a set
    whose areas are not the box areas (before the fix APs/APm/APl came from w*h)."""
    from yolo_common.evaluation import coco_map

    ann, dets = _coco_with_mask_areas(tmp_path)
    ours = coco_map(to_coco_dict(read_coco(tmp_path, "val2017")), dets, backend=backend)
    reference = coco_map(str(ann), dets, backend="pycocotools")
    names = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    for k in names:
        assert ours[k] == pytest.approx(reference[k], abs=1e-6), k
    # the test can fail: the same GT with box areas gives different bucket stats
    split = read_coco(tmp_path, "val2017")
    for r in split.records:
        r.area[:] = np.nan
    boxy = coco_map(to_coco_dict(split), dets, backend="pycocotools")
    assert any(abs(boxy[k] - reference[k]) > 1e-3 for k in ("APs", "APm", "APl", "ARs", "ARm", "ARl"))


def test_area_iscrowd_and_ignore_survive_the_round_trip(tmp_path):
    _make_coco(tmp_path, [{"bbox": [1, 1, 20, 10], "category_id": 1, "area": 123.5},
                          {"bbox": [30, 5, 10, 10], "category_id": 3, "iscrowd": 1, "area": 40.0},
                          {"bbox": [5, 20, 10, 10], "category_id": 3, "ignore": 1}])
    (rec,) = read_coco(tmp_path, "val2017").records
    assert rec.area[:2].tolist() == [123.5, 40.0] and np.isnan(rec.area[2])
    d = to_coco_dict(read_coco(tmp_path, "val2017"))
    a = d["annotations"]
    assert [x["area"] for x in a] == [123.5, 40.0, 100.0]  # the last has none: box area
    assert [x["iscrowd"] for x in a] == [0, 1, 0] and a[2].get("ignore") == 1 and "ignore" not in a[0]


@pytest.mark.parametrize("mutate,needle", [
    (lambda d: d["images"].append(dict(d["images"][0])), r"duplicate image ids \[7\]"),
    (lambda d: d["categories"].append({"id": 3, "name": "truck"}), r"duplicate category ids \[3\]"),
    (lambda d: d["annotations"][0].update(iscrowd="0"), r"annotation 1 has iscrowd='0'"),
    (lambda d: d["annotations"][0].update(iscrowd=2), r"iscrowd=2"),
    (lambda d: d["images"][0].update(width=-100), r"images \[7\] have a width/height"),
    (lambda d: d["images"][0].update(height="50"), r"images \[7\] have a width/height"),
    (lambda d: d["annotations"][0].update(area=-1), r"area=-1"),
])
def test_annotation_quirks_are_clear_errors(tmp_path, mutate, needle):
    ann = _make_coco(tmp_path, [{"bbox": [1, 1, 20, 10], "category_id": 1}])
    data = json.loads(ann.read_text())
    mutate(data)
    ann.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=needle) as e:
        read_coco(tmp_path, "val2017")
    assert str(ann) in str(e.value)
