"""Datasets for a run: the COCO2017 tree (or the synthetic set) -> ultralytics' YOLO layout + provenance.

Ultralytics trains from a YOLO-layout ``data.yaml``; the ONNX evaluator scores against COCO json. Both are
made from one reading of the data with ``yolo_common``'s readers and writers (``read_coco`` + ``write_yolo``,
which hardlinks images, so the converted tree costs label files only), so training, in-training validation
and the final evaluation see the same images:

- ``<run-root>/data/yolo/``: images (hardlinks) + labels, ``data.yaml``;
- ``<run-root>/dataset.yaml``: what the trainers get (absolute paths);
- ``<run-root>/provenance.json``: paths, image/box counts, annotation hashes of train and val.

The evaluation split is ``eval_data`` / ``eval_split`` in the returned :class:`RunData`: the COCO root itself
(``val2017``, original 91-id categories; capped with ``max_images`` at evaluation time).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

COCO_REQUIRED = ("train2017", "val2017", "annotations/instances_train2017.json", "annotations/instances_val2017.json")


@dataclass
class RunData:
    """Where a run's data lives (all absolute paths)."""

    dataset_yaml: Path  # the YOLO data.yaml ultralytics trains and validates on
    eval_data: Path  # what yolo_common.onnx_eval reads (a COCO root)
    eval_split: str
    class_names: list[str]
    provenance: Path
    num_train: int
    num_val: int

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> RunData:
        return cls(**{k: (Path(v) if k in ("dataset_yaml", "eval_data", "provenance") else v) for k, v in d.items()})


def resolve_coco_dir(coco_dir: str | Path | None) -> Path:
    """The COCO2017 root from the flag or ``COCO_DIR``, checked; FileNotFoundError listing what is missing."""
    raw = coco_dir if coco_dir is not None else os.environ.get("COCO_DIR")
    if not raw:
        raise FileNotFoundError("--data coco needs the COCO2017 root: pass --coco-dir DIR or set COCO_DIR "
                                f"(expected DIR/{', DIR/'.join(COCO_REQUIRED)})")
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"COCO dir {root} does not exist (expected {', '.join(COCO_REQUIRED)} inside it)")
    missing = [p for p in COCO_REQUIRED if not (root / p).exists()]
    if missing:
        raise FileNotFoundError(f"COCO dir {root} is incomplete; missing: {', '.join(missing)} "
                                f"(standard COCO2017 layout: train2017/, val2017/, annotations/instances_*.json)")
    return root.resolve()


def prepare_data(cfg, run_root: str | Path) -> RunData:
    """Build (or reuse) the run's YOLO dataset and provenance.

    Args:
        cfg: the :class:`~yolov10_qat.config.RunConfig` (data, coco_dir, max_*_images, synthetic_*, seed).
        run_root: the run root.

    Returns:
        A :class:`RunData`; also written to ``<run-root>/data/run_data.json`` so ``--resume`` reuses it.
    """
    from yolo_common.data import read_coco, verify_images, write_provenance, write_yolo

    run_root = Path(run_root).resolve()
    data_dir = run_root / "data"
    cached = data_dir / "run_data.json"
    if cached.is_file():
        rd = RunData.from_dict(json.loads(cached.read_text(encoding="utf-8")))
        if rd.dataset_yaml.is_file():
            return rd

    if cfg.data == "synthetic":
        from yolo_common.synthetic import make_synthetic

        coco_root = make_synthetic(data_dir / "synthetic", layouts=("coco",), num_train=cfg.synthetic_train,
                                   num_val=cfg.synthetic_val, image_size=cfg.synthetic_size, seed=cfg.seed)["coco"]
    else:
        coco_root = resolve_coco_dir(cfg.coco_dir)

    t0 = time.perf_counter()
    _log(f"data: reading {coco_root} (train2017, val2017)")
    train = read_coco(coco_root, "train2017")
    val = read_coco(coco_root, "val2017")
    if cfg.max_train_images is not None:
        train = replace(train, records=train.records[:cfg.max_train_images])
    if cfg.max_val_images is not None:
        val = replace(val, records=val.records[:cfg.max_val_images])
    if cfg.verify_images:
        train, val = verify_images(train), verify_images(val)
    if not train.records or not val.records:
        raise ValueError(f"{coco_root}: empty split (train {len(train.records)}, val {len(val.records)} images)")

    names = list(train.class_names)
    yolo_root = data_dir / "yolo"
    if yolo_root.exists():
        shutil.rmtree(yolo_root)  # a half-written tree from an interrupted conversion
    # write_yolo has no progress bar of its own (COCO train2017: 118k hardlinks + label files, a minute or so)
    _log(f"data: writing the YOLO layout ({len(train.records)} train + {len(val.records)} val images, "
         f"hardlinks + labels) -> {yolo_root}")
    write_yolo(train, yolo_root, "train", names)
    yolo_yaml = write_yolo(val, yolo_root, "val", names)
    dataset_yaml = run_root / "dataset.yaml"
    shutil.copyfile(yolo_yaml, dataset_yaml)
    prov = run_root / "provenance.json"
    write_provenance(prov, train, val)

    rd = RunData(dataset_yaml=dataset_yaml, eval_data=Path(coco_root), eval_split="val2017", class_names=names,
                 provenance=prov, num_train=len(train.records), num_val=len(val.records))
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(rd.to_dict(), indent=2) + "\n", encoding="utf-8")
    _log(f"data: ready in {time.perf_counter() - t0:.1f} s")
    return rd


def _log(msg: str) -> None:
    print(f"[yolov10-qat] {msg}", flush=True)
