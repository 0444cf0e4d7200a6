"""Ultralytics YOLO layout: ``data.yaml`` + ``images/<split>/*`` + ``labels/<split>/*.txt``.

Each label line is ``cls cx cy w h``, normalised to the image size.

YOLO labels carry no image size, so every image header is opened (header only, no pixel decode, in
threads since the cost is file-open latency). Images whose header does not parse are skipped and counted;
a truncated JPEG with a good header is not caught here (``verify_images`` decodes fully).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ._boxes import clip_boxes
from ._files import IMAGE_SUFFIXES, image_sizes, link_or_copy, read_text, report_skipped, safe_file_name, unique_names
from .records import DatasetSplit, ImageRecord, SkipCounter

log = logging.getLogger("yolo_common.data")


def _load_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise FileNotFoundError(f"YOLO data yaml {path} does not exist")
    try:
        data = yaml.safe_load(read_text(path, "YOLO data yaml"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: malformed yaml ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'path', 'train', 'val', 'names'")
    return data


def _names(data: dict, yaml_path: Path) -> list[dict]:
    """``names`` as list (index = class id) or dict ``{id: name}`` -> categories sorted by id."""
    names = data.get("names")
    if isinstance(names, (list, tuple)):
        return [{"id": k, "name": str(n)} for k, n in enumerate(names)]
    if isinstance(names, dict):
        try:
            return sorted(({"id": int(k), "name": str(v)} for k, v in names.items()), key=lambda c: c["id"])
        except ValueError as e:
            raise ValueError(f"{yaml_path}: 'names' keys must be integer class ids ({e})") from e
    raise ValueError(f"{yaml_path}: 'names' missing or not a list/dict")


def _dataset_root(data: dict, yaml_path: Path) -> Path:
    # A relative ``path`` is taken relative to the yaml (ultralytics resolves it against its own
    # datasets dir instead; write_yolo writes absolute paths so both agree).
    p = Path(str(data.get("path") or "."))
    return p if p.is_absolute() else (yaml_path.parent / p)


def _image_files(entry, root: Path, yaml_path: Path, split: str) -> list[Path]:
    """Images for one split entry: a directory, a ``.txt`` list of images, or a list of those."""
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    files: list[Path] = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file() and p.suffix == ".txt":
            # Ultralytics convention: lines starting with "./" are relative to the list's folder.
            for line in read_text(p, "YOLO image list").splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    files.append(q if q.is_absolute() else (p.parent / q if line.startswith("./") else root / q))
        else:
            raise FileNotFoundError(f"YOLO split {split!r} of {yaml_path}: {p} does not exist "
                                    f"(expected an image directory or a .txt image list)")
    return files


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the label of ``.../images/x/a.jpg`` is ``.../labels/x/a.txt`` (last ``images`` part)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")  # no images/ folder: label sits beside the image


def _parse_label(path: Path, ncls_ids: set[int], width: int, height: int):
    """Rows ``(cls, x1, y1, x2, y2)`` in pixels; ValueError naming ``file:line`` on anything malformed."""
    rows = []
    for lineno, line in enumerate(read_text(path, "YOLO label file").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"{path}:{lineno}: expected 5 fields 'cls cx cy w h', got {len(fields)}: {line!r}")
        try:
            vals = [float(v) for v in fields]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: non-numeric field in {line!r}") from None
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{path}:{lineno}: non-finite value in {line!r}")
        cls, cx, cy, w, h = vals
        if cls != int(cls) or int(cls) not in ncls_ids:
            raise ValueError(f"{path}:{lineno}: class id {fields[0]} not in names (ids {sorted(ncls_ids)})")
        rows.append((int(cls), (cx - w / 2) * width, (cy - h / 2) * height,
                     (cx + w / 2) * width, (cy + h / 2) * height))
    return rows


def read_yolo(data_yaml: str | Path, split: str = "val") -> DatasetSplit:
    """Read one split of an ultralytics-layout dataset.

    Args:
        data_yaml: the dataset yaml (``path``, ``train``, ``val``, ``names`` as list or ``{id: name}``).
        split: key of the yaml naming the split's images (a directory, a .txt list, or a list of those).

    Returns:
        The split: category ids are YOLO class ids, ``image_id`` the running index over the sorted images,
        sizes from image headers (EXIF-rotated like ultralytics, since labels are normalised to the
        rotated image). A missing label file means an image without objects. Undecodable images,
        clipped and zero-area boxes are counted in ``split.skipped`` and logged once.

    Raises:
        FileNotFoundError: the yaml, the split entry, its images or its labels directory is missing.
        ValueError: a malformed yaml, label line (named ``file:line``) or a class id outside ``names``.
    """
    yaml_path = Path(data_yaml)
    data = _load_yaml(yaml_path)
    categories = _names(data, yaml_path)
    root = _dataset_root(data, yaml_path)
    if not root.is_dir():
        raise FileNotFoundError(f"YOLO dataset root {root} (from 'path' in {yaml_path}) does not exist")
    if data.get(split) in (None, ""):
        have = [k for k in ("train", "val", "test") if data.get(k)]
        raise FileNotFoundError(f"{yaml_path} defines no {split!r} split (has {have})")
    images = _image_files(data[split], root, yaml_path, split)
    labels = [label_path(p) for p in images]
    label_dirs = {lp.parent for lp in labels}
    if images and not any(d.is_dir() for d in label_dirs):
        raise FileNotFoundError(f"YOLO labels for split {split!r} not found: expected "
                                f"{sorted(label_dirs)[0]} (labels/ mirrors images/)")

    skipped = SkipCounter()
    ids = {c["id"] for c in categories}
    records, label_files = [], []
    for img, lbl, size in zip(images, labels, image_sizes(images, exif=True)):
        if isinstance(size, Exception):
            skipped.add("image does not decode", str(img))
            continue
        w, h = size
        rows = []
        if lbl.is_file():
            label_files.append(lbl)
            rows = _parse_label(lbl, ids, w, h)
        arr = np.array(rows, np.float64).reshape(-1, 5)
        boxes, keep = clip_boxes(arr[:, 1:], w, h, skipped, str(lbl))
        records.append(ImageRecord(path=img, width=w, height=h, boxes=boxes[keep],
                                   category_ids=arr[keep, 0].astype(np.int64), image_id=len(records)))

    out = DatasetSplit(records=records, categories=categories, root=root, split=split, layout="yolo",
                       annotation_files=[yaml_path, *label_files], skipped=skipped)
    report_skipped(skipped, f"{yaml_path} [{split}]")
    return out


def write_yolo(split: DatasetSplit, out_root: str | Path, split_name: str,
               names: list[str] | None = None, *, skip_crowd: bool = True, skip_difficult: bool = False) -> Path:
    """Write ``split`` as ``<out_root>/{images,labels}/<split_name>/`` and create or update ``data.yaml``.

    Args:
        names: the class list of the dataset (class index = position). Categories are matched by name, so
            a split can be written into a dataset with a larger class list. Default: ``split.class_names``.
        skip_crowd: leave crowd regions out (YOLO has no crowd flag; training on them as objects hurts,
            and it is what ultralytics' own COCO conversion does).
        skip_difficult: leave VOC difficult objects out.

    Returns:
        The ``data.yaml`` path (its ``path`` is absolute, ``names`` a ``{id: name}`` dict).

    Raises:
        ValueError: a category name not in ``names``, two images with one file name, or an existing
            data.yaml with a different class list.
    """
    import yaml

    out_root = Path(out_root).resolve()
    names = list(split.class_names if names is None else names)
    index = {n: k for k, n in enumerate(names)}
    missing = [c["name"] for c in split.categories if c["name"] not in index]
    if missing:
        raise ValueError(f"categories {missing} are not in names {names}")
    cls_of = {c["id"]: index[c["name"]] for c in split.categories}

    img_dir, lbl_dir = out_root / "images" / split_name, out_root / "labels" / split_name
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    n_dropped = 0
    for r, name in zip(split.records, unique_names(split.records, lambda p: safe_file_name(p.name))):
        link_or_copy(r.path, img_dir / name)
        drop = np.zeros(len(r), bool)
        if skip_crowd:
            drop |= r.iscrowd
        if skip_difficult:
            drop |= r.difficult
        n_dropped += int(np.sum(drop))
        lines = []
        for (x1, y1, x2, y2), cid in zip(r.boxes[~drop].tolist(), r.category_ids[~drop].tolist()):
            # 6 decimals: 1e-6 of a 4000 px side is 0.004 px, far inside the 1 px round-trip budget.
            lines.append(f"{cls_of[cid]} {(x1 + x2) / 2 / r.width:.6f} {(y1 + y2) / 2 / r.height:.6f} "
                         f"{(x2 - x1) / r.width:.6f} {(y2 - y1) / r.height:.6f}")
        (lbl_dir / Path(name).with_suffix(".txt")).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    if n_dropped:
        log.warning("write_yolo(%s): left out %d crowd/difficult boxes", out_root, n_dropped)

    yaml_path = out_root / "data.yaml"
    data = _load_yaml(yaml_path) if yaml_path.exists() else {}
    if "names" in data and [c["name"] for c in _names(data, yaml_path)] != names:
        raise ValueError(f"{yaml_path} already has names {data['names']}, not {names}")
    data.update(path=str(out_root), names=dict(enumerate(names)), nc=len(names))
    data[split_name] = f"images/{split_name}"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_path
