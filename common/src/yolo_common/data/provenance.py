"""Provenance: what data a run saw, as a JSON-able dict (paths, counts, what was skipped, file hashes)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from ._files import display_path
from .records import DatasetSplit

# Past this many annotation files (YOLO labels, VOC xmls: one per image) only the combined digest is
# listed; per-file hashes of 118k labels would make the JSON megabytes long for no reader.
_MAX_LISTED_FILES = 32


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _rel(path: Path, root: Path) -> str:
    try:
        return display_path(path.resolve().relative_to(root.resolve()).as_posix())
    except ValueError:
        return display_path(path.name)


def split_provenance(split: DatasetSplit) -> dict:
    """Provenance of one split (see ``provenance``)."""
    files = sorted(split.annotation_files, key=lambda p: _rel(Path(p), split.root))
    # One digest over every annotation file: relative path + content hash, so it survives moving the
    # dataset but changes when any label, xml or json changes. Costs one read of the annotations.
    combined = hashlib.sha256()
    listed = []
    for f in files:
        f = Path(f)
        digest = _sha256(f)
        combined.update(f"{_rel(f, split.root)}\0{digest}\n".encode())
        if len(files) <= _MAX_LISTED_FILES:
            listed.append({"path": display_path(f), "sha256": digest, "bytes": f.stat().st_size})
    return {
        "root": display_path(split.root),
        "layout": split.layout,
        "split": split.split,
        "images": len(split.records),
        "boxes": split.num_boxes,
        "crowd_boxes": int(sum(int(r.iscrowd.sum()) for r in split.records)),
        "difficult_boxes": int(sum(int(r.difficult.sum()) for r in split.records)),
        "categories": len(split.categories),
        "skipped": {"counts": dict(sorted(split.skipped.counts.items())), "summary": split.skipped.summary()},
        "annotation_files": listed,
        "annotation_file_count": len(files),
        "annotations_sha256": combined.hexdigest(),
    }


def provenance(*splits: DatasetSplit) -> dict:
    """Provenance of the given splits.

    Returns:
        ``{"generated": ISO-8601 UTC time, "splits": [per split: root, layout, split, images, boxes,
        crowd_boxes, difficult_boxes, categories, skipped {counts, summary}, annotation_files
        [{path, sha256, bytes}] (listed when there are at most 32), annotation_file_count,
        annotations_sha256 (one digest over all annotation files, e.g. every YOLO label)]}``.
    """
    return {"generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "splits": [split_provenance(s) for s in splits]}


def write_provenance(path: str | Path, *splits: DatasetSplit) -> dict:
    """Write ``provenance(*splits)`` as JSON to ``path`` (parents created) and return it."""
    info = provenance(*splits)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info
