"""Finding a split: the seed's YOLO and COCO layouts under one ``--data`` root, read by ``yolo_common``.

- YOLO: ``<root>/images/<split>/`` + ``<root>/labels/<split>/`` (+ optional ``data.yaml`` for names);
  also a ``data.yaml`` path itself.
- COCO: ``<root>/images/<split>/`` (or ``<root>/<split>/``) + ``<root>/annotations/instances_<split>.json``.
Class names: data.yaml, else the COCO categories, else ``class_0..class_{nc-1}`` from the largest label id.
A YOLO root without data.yaml gets a generated one in the cache folder (the dataset is never written to).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from yolo_common.data import DatasetSplit, load_split
from yolo_common.data.yolo import read_yolo

SPLIT_ALIASES = {"train": ("train", "train2017"), "val": ("val", "val2017", "valid"), "test": ("test", "test2017")}


def cache_root(root: Path) -> Path:
    """Where generated files and caches of a dataset go: ``~/.cache/yolov9001/<hash of the root>``."""
    base = Path.home() / ".cache" / "yolov9001"
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return base / f"{root.name}-{digest}"


def detect_format(root: Path) -> str:
    """"yolo" or "coco" for a ``--data`` root; a clear error naming what was looked for otherwise."""
    if not root.exists():
        raise FileNotFoundError(f"--data {root} does not exist")
    if root.is_file():
        if root.suffix in (".yaml", ".yml"):
            return "yolo"
        raise ValueError(f"--data {root} is a file, not a dataset root or a data.yaml")
    if (root / "annotations").is_dir():
        return "coco"
    if (root / "labels").is_dir() or (root / "data.yaml").is_file():
        return "yolo"
    raise ValueError(f"--data {root}: neither a YOLO root (images/<split>, labels/<split>, optional data.yaml) "
                     f"nor a COCO root (images/<split>, annotations/instances_<split>.json)")


def _split_name(root: Path, split: str, fmt: str) -> str:
    for name in SPLIT_ALIASES.get(split, (split,)):
        if fmt == "yolo" and (root / "images" / name).is_dir():
            return name
        if fmt == "coco" and (root / "annotations" / f"instances_{name}.json").is_file():
            return name
    return split


def _yolo_yaml(root: Path, split: str) -> Path:
    """data.yaml for a YOLO root: its own when present (with ``split`` defined), else a generated one."""
    own = root / "data.yaml"
    data = {}
    if own.is_file():
        data = yaml.safe_load(own.read_text(encoding="utf-8")) or {}
        if data.get(split):
            return own
    names = data.get("names")
    if names is None:
        max_id = -1
        for label in (root / "labels" / split).glob("*.txt"):
            for line_no, line in enumerate(label.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        max_id = max(max_id, int(float(line.split()[0])))
                    except ValueError:
                        raise ValueError(f"{label}:{line_no}: class id {line.split()[0]!r} is not a number") from None
        names = [f"class_{i}" for i in range(max_id + 1)]
    gen = {"path": str(root.resolve()), split: f"images/{split}", "names": names}
    out = cache_root(root) / f"data_{split}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(gen))
    return out


def load_dataset_split(data: str | Path, split: str) -> DatasetSplit:
    """The records and class names of ``split`` under ``--data`` (YOLO or COCO, auto-detected)."""
    root = Path(data)
    fmt = detect_format(root)
    if fmt == "yolo":
        if root.is_file():
            return read_yolo(root, split)
        name = _split_name(root, split, fmt)
        if not (root / "images" / name).is_dir():
            have = sorted(p.name for p in (root / "images").iterdir()) if (root / "images").is_dir() else []
            raise FileNotFoundError(f"{root}: no images/{split} folder (found splits: {have or 'none'})")
        return read_yolo(_yolo_yaml(root, name), name)
    return load_split(root, _split_name(root, split, fmt))
