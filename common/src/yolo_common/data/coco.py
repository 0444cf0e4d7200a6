"""COCO layout: ``<root>/<split>/`` (or ``<root>/images/<split>/``) + ``<root>/annotations/instances_<split>.json``.

The json is trusted for image sizes (decoding 118k images to check costs minutes); ``verify_images`` is
the opt-in full check.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ._boxes import clip_boxes
from ._files import image_size, link_or_copy, list_names, report_skipped, safe_file_name, unique_names
from .records import DatasetSplit, ImageRecord, SkipCounter

# "train"/"val" are what everyone types; the files on disk are named train2017/val2017 (and the other way).
_ALIASES = {"train": "train2017", "val": "val2017", "test": "test2017",
            "train2017": "train", "val2017": "val", "test2017": "test"}


def _resolve(root: Path, split: str, ann_file: Path | None) -> tuple[str, Path, Path]:
    """Find ``(split_name, image_dir, ann_file)``; raise FileNotFoundError naming what is missing."""
    if not root.is_dir():
        raise FileNotFoundError(f"COCO root {root} does not exist (expected <root>/annotations/ and "
                                f"<root>/<split>/ or <root>/images/<split>/)")
    names = [split] + ([_ALIASES[split]] if split in _ALIASES else [])

    def pieces(name):
        ann = Path(ann_file) if ann_file is not None else root / "annotations" / f"instances_{name}.json"
        return ann, [root / name, root / "images" / name]

    for name in names:
        ann, img_dirs = pieces(name)
        img_dir = next((d for d in img_dirs if d.is_dir()), None)
        if ann.is_file() and img_dir is not None:
            return name, img_dir, ann
    # Report against the name that half-exists (e.g. val2017 when "val" was asked), else the one typed.
    name = next((n for n in names if pieces(n)[0].is_file() or any(d.is_dir() for d in pieces(n)[1])), split)
    ann, img_dirs = pieces(name)
    if not ann.is_file():
        raise FileNotFoundError(f"COCO annotation file {ann} does not exist (split {name!r}; tried {names})")
    raise FileNotFoundError(f"COCO image directory for split {name!r} not found: expected {img_dirs[0]} "
                            f"or {img_dirs[1]}")


def _check_unique(ann: Path, what: str, ids: list[int]) -> None:
    """Duplicate ids silently merge images (the union of their boxes) or inflate the class count."""
    seen, dup = set(), []
    for i in ids:
        if i in seen:
            dup.append(i)
        seen.add(i)
    if dup:
        raise ValueError(f"{ann}: duplicate {what} ids {sorted(set(dup))[:10]}")


def _flag(a: dict, key: str, ann: Path) -> bool:
    """``iscrowd`` / ``ignore``: 0/1 (or a JSON bool); a string such as "0" is an error, not True."""
    v = a.get(key, 0)
    if isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1)):
        return bool(v)
    raise ValueError(f"{ann}: annotation {a.get('id', '?')} has {key}={v!r}; expected 0 or 1")


def _area(a: dict, ann: Path) -> float:
    v = a.get("area")
    if v is None:
        return float("nan")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"{ann}: annotation {a.get('id', '?')} has area={v!r}; expected a number >= 0")
    return float(v)


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed COCO json ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO instances file (no 'images' list)")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise ValueError(f"{path}: COCO key {key!r} is not a list")
    return data


def read_coco(root: str | Path, split: str = "val2017", *, ann_file: str | Path | None = None) -> DatasetSplit:
    """Read one split of a COCO-layout dataset.

    Args:
        root: dataset root holding ``annotations/`` and ``<split>/`` or ``images/<split>/``.
        split: split name; "train"/"val" and "train2017"/"val2017" stand for each other when only one exists.
        ann_file: annotation json to use instead of ``<root>/annotations/instances_<split>.json``.

    Returns:
        The split; ``image_id`` is COCO's image id, category ids are the json's ids. Images listed in the
        json but missing on disk are skipped; boxes are clipped to the image and zero-area ones dropped
        (all counted in ``split.skipped`` and logged once).

    Raises:
        FileNotFoundError: root, image directory or annotation file missing (the message names it).
        ValueError: malformed json, or an annotation with an unknown image/category id or a bad bbox.
    """
    root = Path(root)
    name, img_dir, ann = _resolve(root, split, ann_file)
    data = _load_json(ann)
    skipped = SkipCounter()

    try:
        categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in data.get("categories", [])]
        images = [(int(im["id"]), str(im["file_name"]), im.get("width"), im.get("height")) for im in data["images"]]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{ann}: malformed COCO image or category entry ({e!r})") from e
    _check_unique(ann, "image", [im[0] for im in images])
    _check_unique(ann, "category", [c["id"] for c in categories])
    bad_size = [im[0] for im in images if any(v is not None and (not isinstance(v, (int, float)) or
                                                                  isinstance(v, bool) or v <= 0) for v in im[2:])]
    if bad_size:
        raise ValueError(f"{ann}: images {bad_size[:10]} have a width/height that is not a positive number")
    cat_ids = {c["id"] for c in categories}

    # Group annotations per image once (a per-image scan would be O(images * annotations)).
    per_image: dict[int, list] = {im[0]: [] for im in images}
    for a in data.get("annotations", []):
        try:
            img_id, cid, bbox = int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{ann}: malformed annotation {a.get('id', '?') if isinstance(a, dict) else a!r} "
                             f"({e!r})") from e
        if len(bbox) != 4:
            raise ValueError(f"{ann}: annotation {a.get('id', '?')} has bbox {bbox}, expected [x, y, w, h]")
        if cid not in cat_ids:
            raise ValueError(f"{ann}: annotation {a.get('id', '?')} has category_id {cid} not in categories")
        if img_id not in per_image:
            raise ValueError(f"{ann}: annotation {a.get('id', '?')} refers to unknown image_id {img_id}")
        per_image[img_id].append((bbox, cid, _flag(a, "iscrowd", ann), _area(a, ann), _flag(a, "ignore", ann)))

    on_disk = list_names(img_dir)
    records = []
    for img_id, file_name, w, h in images:
        path = img_dir / file_name
        if not (file_name in on_disk or ("/" in file_name and path.is_file())):
            skipped.add("image file missing", str(path))
            continue
        if not w or not h:  # some hand-made jsons leave sizes out; the header is cheap
            try:
                w, h = image_size(path)
            except Exception:
                skipped.add("image does not decode", str(path))
                continue
        anns = per_image[img_id]
        xywh = np.array([a[0] for a in anns], np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        boxes, keep = clip_boxes(xyxy, int(w), int(h), skipped, file_name)
        records.append(ImageRecord(
            path=path, width=int(w), height=int(h), boxes=boxes[keep],
            category_ids=np.array([a[1] for a in anns], np.int64)[keep],
            iscrowd=np.array([a[2] for a in anns], bool)[keep], image_id=img_id,
            area=np.array([a[3] for a in anns], np.float32)[keep],
            ignore=np.array([a[4] for a in anns], bool)[keep]))

    out = DatasetSplit(records=records, categories=categories, root=root, split=name, layout="coco",
                       annotation_files=[ann], skipped=skipped)
    report_skipped(skipped, ann)
    return out


def verify_images(split: DatasetSplit, *, workers: int = 8, progress: bool = True) -> DatasetSplit:
    """Fully decode every image; drop and count the ones that fail. Works for any layout.

    Costs a full decode per image (minutes on COCO train2017, hence opt-in; readers only trust the
    annotation file or the image header), so a tqdm bar shows progress (``progress=False`` hides it;
    one line every 30 s when stderr is not a terminal).
    An image whose decoded size differs from the record's is kept but counted (its boxes may be wrong).

    Returns:
        A new DatasetSplit with the undecodable images removed; ``skipped`` extends the input's counts.
    """
    from PIL import Image
    from tqdm import tqdm

    def check(r: ImageRecord):
        try:
            with Image.open(r.path) as im:
                im.load()
                return None if im.size == (r.width, r.height) else "size"
        except Exception:  # truncated/corrupt/missing: any failure means the loader would fail too
            return "decode"

    bar = tqdm(total=len(split.records), unit="img", desc="verify_images", disable=not progress,
               mininterval=0.1 if sys.stderr.isatty() else 30)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, bar:
        results = []
        for res in pool.map(check, split.records):
            results.append(res)
            bar.update()
    new = SkipCounter()  # this pass only, so the one warning does not repeat the reader's counts
    records = []
    for r, res in zip(split.records, results):
        if res == "decode":
            new.add("image does not decode", str(r.path))
            continue
        if res == "size":
            new.add("decoded size differs from annotation (kept)", str(r.path))
        records.append(r)
    report_skipped(new, f"verify_images({split.root}, {split.split})")
    skipped = SkipCounter()
    skipped.update(split.skipped)
    skipped.update(new)
    return DatasetSplit(records=records, categories=split.categories, root=split.root, split=split.split,
                        layout=split.layout, annotation_files=list(split.annotation_files), skipped=skipped)


def to_coco_dict(split: DatasetSplit, *, category_ids: Sequence[int] | None = None) -> dict:
    """A COCO ground-truth dict (``images``, ``annotations``, ``categories``) for any split.

    Args:
        split: any layout. ``file_name`` is the image's file name (writers flatten into one folder);
            ``image_id`` is ``record.image_id``; annotation ids run from 1 (COCO eval treats id 0 as unset).
        category_ids: output id for each class index k (``split.categories[k]``), e.g. ``COCO80_TO_COCO91``
            to turn a YOLO-layout COCO back into COCO's sparse ids. Default: keep the split's own ids.

    Returns:
        A dict that pycocotools / faster-coco-eval load as ground truth. ``area`` is the record's source
        area where it has one (COCO's mask area: it decides APs/APm/APl, so the stats equal pycocotools
        on the original json) and the box area otherwise (YOLO, VOC, synthetic). Crowd flags are written,
        ``ignore`` where set; difficult flags are not (COCO has no such field).
    """
    cats = split.categories
    if category_ids is not None:
        if len(category_ids) != len(cats):
            raise ValueError(f"category_ids has {len(category_ids)} ids for {len(cats)} categories")
        remap = {c["id"]: int(new) for c, new in zip(cats, category_ids)}
    else:
        remap = {c["id"]: c["id"] for c in cats}
    images, annotations = [], []
    for r in split.records:
        images.append({"id": int(r.image_id), "file_name": safe_file_name(r.path.name), "width": int(r.width),
                       "height": int(r.height)})
        for box, cid, crowd, area, ign in zip(r.boxes.tolist(), r.category_ids.tolist(), r.iscrowd.tolist(),
                                              r.area.tolist(), r.ignore.tolist()):
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            # The source's own area (COCO: the mask area, which sets the S/M/L buckets); box area otherwise.
            area = area if math.isfinite(area) else w * h
            # 3 decimals: float32 -> float prints 12.300000190734863 otherwise; 1e-3 px is far below 1 px.
            a = {"id": len(annotations) + 1, "image_id": int(r.image_id), "category_id": remap[cid],
                 "bbox": [round(v, 3) for v in (x1, y1, w, h)], "area": round(area, 3), "iscrowd": int(crowd)}
            if ign:
                a["ignore"] = 1
            annotations.append(a)
    return {
        # info/licenses: some pycocotools versions copy them in loadRes and fail when absent.
        "info": {"description": f"{split.layout} {split.split} from {split.root.name}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": remap[c["id"]], "name": c["name"]} for c in cats],
    }


def write_coco(split: DatasetSplit, out_root: str | Path, split_name: str, *,
               category_ids: Sequence[int] | None = None) -> Path:
    """Write ``split`` as ``<out_root>/<split_name>/`` images + ``<out_root>/annotations/instances_<split_name>.json``.

    Images are hardlinked (no extra disk) or copied when on another device.

    Args:
        category_ids: see ``to_coco_dict``.

    Returns:
        The annotation json path.
    """
    out_root = Path(out_root)
    names = unique_names(split.records, lambda p: safe_file_name(p.name))
    img_dir = out_root / split_name
    img_dir.mkdir(parents=True, exist_ok=True)
    for r, name in zip(split.records, names):
        link_or_copy(r.path, img_dir / name)
    ann = out_root / "annotations" / f"instances_{split_name}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(to_coco_dict(split, category_ids=category_ids)), encoding="utf-8")
    return ann
