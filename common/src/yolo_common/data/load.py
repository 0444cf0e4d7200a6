"""``load_split``: read a split without saying which layout it is in."""

from __future__ import annotations

import re
from pathlib import Path

from .records import DatasetSplit


def detect_layout(path: str | Path) -> str:
    """"yolo", "coco" or "voc" for ``path``, judged from what is on disk.

    A ``.yaml``/``.yml`` file or a directory holding ``data.yaml`` is YOLO; a directory holding
    ``annotations/`` is COCO; ``VOCdevkit``, a directory holding it, or a directory holding ``ImageSets/``
    (a ``VOC<year>`` folder) is VOC.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it exists but matches none of the layouts (the message says what was looked for).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist")
    if p.is_file():
        if p.suffix in (".yaml", ".yml"):
            return "yolo"
        raise ValueError(f"{p}: a file, but not a YOLO data yaml (.yaml/.yml)")
    if (p / "data.yaml").is_file():
        return "yolo"
    if (p / "annotations").is_dir():
        return "coco"
    if p.name == "VOCdevkit" or (p / "VOCdevkit").is_dir() or (p / "ImageSets").is_dir():
        return "voc"
    raise ValueError(f"{p}: cannot tell the dataset layout; expected a YOLO data .yaml (or a folder with "
                     f"data.yaml), a COCO root with annotations/, or a VOC root with VOCdevkit/")


def load_split(path: str | Path, split: str | None = None, **kwargs) -> DatasetSplit:
    """Read ``split`` of the dataset at ``path``, whatever its layout (see ``detect_layout``).

    Args:
        path: YOLO data yaml (or its folder), COCO root, or VOC root / VOCdevkit / VOC<year> folder.
        split: split name; default is each reader's own ("val2017", "val", "val").
        **kwargs: passed to the reader (``ann_file`` for COCO, ``year``/``class_names`` for VOC).

    Raises:
        FileNotFoundError: the path, split or annotation file is missing.
        ValueError: the layout cannot be told, or the reader found malformed annotations.
    """
    p = Path(path)
    layout = detect_layout(p)
    args = {} if split is None else {"split": split}
    if layout == "yolo":
        from .yolo import read_yolo

        return read_yolo(p / "data.yaml" if p.is_dir() else p, **args, **kwargs)
    if layout == "coco":
        from .coco import read_coco

        return read_coco(p, **args, **kwargs)
    from .voc import read_voc

    # VOCdevkit with a single VOC<year> inside (e.g. only VOC2007): use that year unless told otherwise.
    devkit = p if p.name == "VOCdevkit" else p / "VOCdevkit"
    if "year" not in kwargs and devkit.is_dir():
        years = sorted(m.group(1) for d in devkit.iterdir() if (m := re.fullmatch(r"VOC(\d{4})", d.name)))
        if len(years) == 1:
            kwargs["year"] = years[0]
    return read_voc(p, **args, **kwargs)
