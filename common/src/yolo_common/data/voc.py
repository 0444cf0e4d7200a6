"""Pascal VOC layout: ``VOCdevkit/VOC<year>/{Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt}``.

Sizes come from the xml (images are only opened when the xml has none). Category id = index into the
class list (``VOC_CLASSES`` unless told otherwise).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._boxes import clip_boxes
from ._files import image_size, link_or_copy, list_names, read_text, report_skipped, safe_file_name, unique_names
from .categories import VOC_CLASSES
from .records import DatasetSplit, ImageRecord, SkipCounter

# write_voc leaves the class list here when it is not VOC's own, so a VOC-layout copy of another dataset
# reads back without the caller having to know its classes. Real VOC releases have no such file.
CLASS_NAMES_FILE = "class_names.txt"


def _read_names(path: Path) -> list[str]:
    return [n.strip() for n in read_text(path, "class-names file").splitlines() if n.strip()]


def find_voc_dir(root: str | Path, year: str = "2012") -> Path:
    """The ``VOC<year>`` directory for ``root``: the folder holding ``VOCdevkit``, ``VOCdevkit``, or ``VOC<year>`` itself.

    When ``root`` already is a VOC directory (has ``ImageSets/`` or ``Annotations/``), it is used whatever its year.

    Raises:
        FileNotFoundError: none of the three shapes matches (the message lists what was tried).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"VOC root {root} does not exist")
    if (root / "ImageSets").is_dir() or (root / "Annotations").is_dir():
        return root
    tried = [root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}"]
    for d in tried:
        if d.is_dir():
            return d
    raise FileNotFoundError(f"no VOC{year} directory under {root}: tried {tried[0]}, {tried[1]} and {root} itself "
                            f"(expected VOCdevkit/VOC{year}/ with Annotations/, JPEGImages/, ImageSets/Main/)")


def _text(node, tag, xml_path, default=None):
    child = node.find(tag)
    if child is None or child.text is None:
        if default is not None:
            return default
        raise ValueError(f"{xml_path}: missing <{tag}>")
    return child.text.strip()


def _parse_xml(xml_path: Path, index: dict[str, int]):
    """``(filename, width, height, boxes, category_ids, difficult)`` from one annotation file."""
    try:
        tree = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml_path}: malformed xml ({e})") from e
    size = tree.find("size")
    try:
        w = int(float(_text(size, "width", xml_path))) if size is not None else 0
        h = int(float(_text(size, "height", xml_path))) if size is not None else 0
        rows, cids, diff = [], [], []
        for obj in tree.iter("object"):
            name = _text(obj, "name", xml_path)
            if name not in index:
                raise ValueError(f"{xml_path}: class name {name!r} not in class_names {list(index)}")
            bb = obj.find("bndbox")
            if bb is None:
                raise ValueError(f"{xml_path}: object {name!r} has no <bndbox>")
            x1, y1, x2, y2 = (float(_text(bb, t, xml_path)) for t in ("xmin", "ymin", "xmax", "ymax"))
            # VOC pixel coordinates are 1-based and inclusive: a box over pixels xmin..xmax covers the
            # continuous 0-based interval [xmin - 1, xmax]. So x1 = xmin - 1, x2 = xmax (same for y);
            # write_voc inverts this exactly.
            rows.append((x1 - 1, y1 - 1, x2, y2))
            cids.append(index[name])
            diff.append(bool(int(float(_text(obj, "difficult", xml_path, default="0")))))
    except ValueError as e:
        if str(xml_path) in str(e):
            raise
        raise ValueError(f"{xml_path}: bad number ({e})") from e
    filename = _text(tree, "filename", xml_path, default="")
    return filename, w, h, rows, cids, diff


def read_voc(root: str | Path, split: str = "val", year: str = "2012", *,
             class_names: Sequence[str] | None = None) -> DatasetSplit:
    """Read one split (``ImageSets/Main/<split>.txt``) of a Pascal VOC layout dataset.

    Args:
        root: folder containing ``VOCdevkit/``, ``VOCdevkit`` itself, or ``VOCdevkit/VOC<year>``.
        split: "train", "val", "trainval" or "test".
        year: picks ``VOC<year>`` inside ``VOCdevkit``.
        class_names: class list; category id = index. Default: the ``class_names.txt`` that ``write_voc``
            leaves for non-VOC classes if present, else ``VOC_CLASSES``.

    Returns:
        The split, with ``difficult`` flags kept (VOC AP ignores those objects), ``image_id`` the running
        index. Missing images, clipped and zero-area boxes are counted in ``split.skipped`` and logged once.

    Raises:
        FileNotFoundError: root, the split file or an annotation xml is missing (the message names it).
        ValueError: malformed xml, or a class name not in ``class_names`` (names the xml and the class).
    """
    voc = find_voc_dir(root, year)
    if class_names is None:
        sidecar = voc / CLASS_NAMES_FILE
        class_names = _read_names(sidecar) if sidecar.is_file() else VOC_CLASSES
    index = {n: k for k, n in enumerate(class_names)}
    split_file = voc / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"VOC split file {split_file} does not exist")
    # Main/<split>.txt has one id per line; the per-class files (<class>_<split>.txt) add a flag column.
    ids = [line.split()[0] for line in read_text(split_file, "VOC split list").splitlines() if line.strip()]

    skipped = SkipCounter()
    jpeg_dir = voc / "JPEGImages"
    on_disk = list_names(jpeg_dir)
    records, xmls = [], []
    for img_id in ids:
        xml_path = voc / "Annotations" / f"{img_id}.xml"
        if not xml_path.is_file():
            raise FileNotFoundError(f"VOC annotation {xml_path} (listed in {split_file}) does not exist")
        xmls.append(xml_path)
        filename, w, h, rows, cids, diff = _parse_xml(xml_path, index)
        name = next((n for n in (filename, f"{img_id}.jpg") if n and n in on_disk), None)
        if name is None:
            skipped.add("image file missing", str(jpeg_dir / (filename or f"{img_id}.jpg")))
            continue
        if w <= 0 or h <= 0:  # a few hand-made xmls carry 0x0; the header is cheap
            try:
                w, h = image_size(jpeg_dir / name)
            except Exception:
                skipped.add("image does not decode", str(jpeg_dir / name))
                continue
        boxes, keep = clip_boxes(np.array(rows, np.float32).reshape(-1, 4), w, h, skipped, xml_path.name)
        records.append(ImageRecord(path=jpeg_dir / name, width=w, height=h, boxes=boxes[keep],
                                   category_ids=np.array(cids, np.int64)[keep],
                                   difficult=np.array(diff, bool)[keep], image_id=len(records)))

    categories = [{"id": k, "name": n} for k, n in enumerate(class_names)]
    out = DatasetSplit(records=records, categories=categories, root=voc, split=split, layout="voc",
                       annotation_files=[split_file, *xmls], skipped=skipped)
    report_skipped(skipped, split_file)
    return out


def write_voc(split: DatasetSplit, out_root: str | Path, split_name: str, year: str = "2012") -> Path:
    """Write ``split`` as ``<out_root>/VOCdevkit/VOC<year>/`` (JPEGImages, Annotations, ImageSets/Main).

    Image ids are the file stems; images are hardlinked (or copied) under their own name, so PNGs stay
    PNGs (the xml's ``<filename>`` says which). Boxes are written as VOC's 1-based integers (rounded, so
    within 0.5 px). Crowd regions become ``difficult`` (both mean "ignored by the metric"). When the class
    list is not ``VOC_CLASSES`` it is saved to ``class_names.txt`` for ``read_voc``.

    Returns:
        The ``VOC<year>`` directory.
    """
    voc = Path(out_root) / "VOCdevkit" / f"VOC{year}"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    names = split.class_names
    if tuple(names) != VOC_CLASSES:
        sidecar = voc / CLASS_NAMES_FILE
        if sidecar.is_file() and _read_names(sidecar) != names:
            raise ValueError(f"{sidecar} lists other classes than {names}")
        sidecar.write_text("".join(n + "\n" for n in names), encoding="utf-8")
    cls_name = {c["id"]: c["name"] for c in split.categories}

    # Non-UTF-8 file names (POSIX names are bytes) are written under an escaped UTF-8 name: the xml, the
    # split list and the image name must agree, and XML / the list can only hold UTF-8.
    stems = unique_names(split.records, lambda p: safe_file_name(p.stem))
    for r, stem in zip(split.records, stems):
        image_name = stem + r.path.suffix
        link_or_copy(r.path, voc / "JPEGImages" / image_name)
        ann = ET.Element("annotation")
        ET.SubElement(ann, "folder").text = f"VOC{year}"
        ET.SubElement(ann, "filename").text = image_name
        size = ET.SubElement(ann, "size")
        for tag, v in (("width", r.width), ("height", r.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(int(v))
        ET.SubElement(ann, "segmented").text = "0"
        for box, cid, crowd, diff in zip(r.boxes.tolist(), r.category_ids.tolist(), r.iscrowd.tolist(),
                                         r.difficult.tolist()):
            # Inverse of read_voc: xmin = x1 + 1, xmax = x2, kept at least one pixel wide.
            xmin, ymin = round(box[0]) + 1, round(box[1]) + 1
            xmax, ymax = max(round(box[2]), xmin), max(round(box[3]), ymin)
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = cls_name[cid]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = str(int(diff or crowd))
            bb = ET.SubElement(obj, "bndbox")
            for tag, v in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
                ET.SubElement(bb, tag).text = str(int(v))
        ET.indent(ann)
        ET.ElementTree(ann).write(voc / "Annotations" / f"{stem}.xml", encoding="utf-8")
    (voc / "ImageSets" / "Main" / f"{split_name}.txt").write_text("".join(s + "\n" for s in stems),
                                                                    encoding="utf-8")
    return voc
