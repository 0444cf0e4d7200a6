"""Pascal VOC layout reader/writer and its bad-data contract."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from yolo_common.data import VOC_CLASSES, DatasetSplit, ImageRecord, read_voc, write_voc

_XML = """<annotation><filename>{id}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
_OBJ = """<object><name>{name}</name><difficult>{d}</difficult>
<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"""


def _make_voc(parent, images, *, split="val", year="2012", size=(120, 80)):
    """``images``: {id: [(name, (xmin, ymin, xmax, ymax) 1-based, difficult), ...]} -> VOCdevkit under parent."""
    voc = parent / "VOCdevkit" / f"VOC{year}"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    for img_id, objs in images.items():
        Image.new("RGB", size, (1, 2, 3)).save(voc / "JPEGImages" / f"{img_id}.jpg")
        objects = "".join(_OBJ.format(name=n, b=b, d=int(d)) for n, b, d in objs)
        (voc / "Annotations" / f"{img_id}.xml").write_text(_XML.format(id=img_id, w=size[0], h=size[1],
                                                                        objects=objects))
    (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
    return voc


def test_one_based_pixels_to_zero_based_xyxy_and_difficult(tmp_path):
    _make_voc(tmp_path, {"000001": [("dog", (1, 1, 10, 20), 0), ("person", (50, 30, 60, 40), 1)],
                         "000002": [("cat", (5, 5, 6, 6), 0)]})
    split = read_voc(tmp_path, "val")
    assert split.layout == "voc" and len(split) == 2 and split.class_names == list(VOC_CLASSES)
    r = split.records[0]
    assert (r.width, r.height) == (120, 80) and r.path.name == "000001.jpg"
    # VOC's xmin=1..xmax=10 covers 10 pixels: [0, 10) in 0-based continuous coordinates.
    np.testing.assert_allclose(r.boxes, [[0, 0, 10, 20], [49, 29, 60, 40]])
    assert r.category_ids.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert r.difficult.tolist() == [False, True]
    np.testing.assert_allclose(split.records[1].boxes, [[4, 4, 6, 6]])


def test_root_forms_are_equivalent(tmp_path):
    voc = _make_voc(tmp_path, {"a": [("dog", (1, 1, 10, 20), 0)]})
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        split = read_voc(root, "val")
        assert split.root == voc and split.records[0].boxes.tolist() == [[0, 0, 10, 20]]


def test_unknown_class_names_xml_and_class(tmp_path):
    _make_voc(tmp_path, {"a": [("unicorn", (1, 1, 10, 20), 0)]})
    with pytest.raises(ValueError, match=r"a\.xml.*'unicorn'"):
        read_voc(tmp_path)
    split = read_voc(tmp_path, class_names=["horse", "unicorn"])
    assert split.records[0].category_ids.tolist() == [1] and split.class_names == ["horse", "unicorn"]


def test_missing_pieces(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_voc(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        read_voc(tmp_path)
    voc = _make_voc(tmp_path, {"a": [("dog", (1, 1, 10, 20), 0)]})
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/train\.txt"):
        read_voc(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        read_voc(tmp_path, "val", year="2007")
    (voc / "Annotations" / "a.xml").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.xml"):
        read_voc(tmp_path)


def test_malformed_xml_names_file(tmp_path):
    voc = _make_voc(tmp_path, {"a": [("dog", (1, 1, 10, 20), 0)], "b": [("dog", (1, 1, 10, 20), 0)]})
    (voc / "Annotations" / "b.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match=r"b\.xml"):
        read_voc(tmp_path)
    (voc / "Annotations" / "b.xml").write_text(_XML.format(id="b", w=9, h=9, objects=_OBJ.format(
        name="dog", b=("one", 1, 2, 2), d=0)))
    with pytest.raises(ValueError, match=r"b\.xml"):
        read_voc(tmp_path)


def test_clip_missing_image_and_size_fallback(tmp_path, caplog):
    voc = _make_voc(tmp_path, {"a": [("dog", (100, 1, 130, 20), 0), ("dog", (125, 1, 130, 20), 0)],
                               "b": [("dog", (1, 1, 10, 20), 0)], "c": [("cat", (1, 1, 10, 20), 0)]})
    (voc / "JPEGImages" / "b.jpg").unlink()
    xml = voc / "Annotations" / "c.xml"
    xml.write_text(xml.read_text().replace("<width>120</width>", "<width>0</width>"))
    with caplog.at_level(logging.WARNING, logger="yolo_common.data"):
        split = read_voc(tmp_path)
    assert [r.path.stem for r in split.records] == ["a", "c"]
    np.testing.assert_allclose(split.records[0].boxes, [[99, 0, 120, 20]])
    assert split.records[1].width == 120  # from the JPEG header, since the xml said 0
    assert split.skipped.counts == {"box clipped": 1, "zero-area box dropped": 1, "image file missing": 1}
    assert len([r for r in caplog.records if r.name == "yolo_common.data"]) == 1


def test_write_voc_round_trip_with_sidecar_classes(tmp_path):
    Image.new("RGB", (50, 40)).save(tmp_path / "img.png")
    rec = ImageRecord(path=tmp_path / "img.png", width=50, height=40,
                      boxes=[[0, 0, 10.4, 20], [5.6, 6, 30, 39.7], [1, 1, 2, 2]], category_ids=[8, 3, 3],
                      iscrowd=[0, 0, 1], difficult=[1, 0, 0])
    split = DatasetSplit(records=[rec], categories=[{"id": 3, "name": "b"}, {"id": 8, "name": "a"}],
                         root=tmp_path, split="x", layout="coco")
    voc = write_voc(split, tmp_path / "out", "mine", year="2007")
    assert (voc / "JPEGImages" / "img.png").is_file()  # kept its own name; the xml says which
    back = read_voc(tmp_path / "out", "mine", year="2007")
    assert back.class_names == ["b", "a"]  # from class_names.txt, in the split's category order
    r = back.records[0]
    np.testing.assert_allclose(r.boxes, [[0, 0, 10, 20], [6, 6, 30, 40], [1, 1, 2, 2]], atol=0)
    assert r.category_ids.tolist() == [1, 0, 0] and r.difficult.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="not in class_names"):
        read_voc(tmp_path / "out", "mine", year="2007", class_names=VOC_CLASSES)
