"""The whole workflow on CPU in minutes: tiny pretrain -> extract backbone -> detection -> VOC/COCO mAP.

    python -m yolov1.smoke                      # output under runs/smoke/ (git-ignored)
    python -m yolov1.smoke --out runs/smoke-quick --det-epochs 2

1. ``yolo_common.synthetic`` writes a shapes detection set in the VOC layout (its own class names).
2. An ImageNet-100-style folder (``Labels.json``, ``train.X1``, ``train.X2``, ``val.X``) is cut from it:
   one crop per object, the class folder named by a made-up wnid, so pretraining sees the same shapes.
3. ``pretrain_train`` -> ``extract_backbone`` -> ``detection_train`` with ``backbone=`` that file.

The network is the paper's layer list at a smaller scale (width 1/8, FC 256 wide, S=4 so 256 px input):
the full 448 px, 272M-parameter model takes seconds per image on a CPU.

**The small-data recipe** (``SMOKE_RECIPE``; the configs' defaults stay the paper's for real runs). Each
deviation was measured on this set (README, "Measured"):

- ``batch_norm=true`` in both stages. Without it, pretraining stays at chance (top-1 0.19 of 3 classes)
  and the detector never learns the classes. With it, pretraining reaches top-1 0.76-0.87 in 10 epochs.
- pretraining: SGD at the paper's LR with ``grad_clip_norm=10``, which the BN-free net needed not to diverge.
- detection: AdamW, LR 1e-3, decoupled weight decay 0.05, no dropout, and no clipping. SGD at 1e-2 diverges
  without the clip, and with it fits the boxes but not the classes in 750 steps (VOC07 mAP 0.003-0.007).
- LR steps at 80 % / 93 % of the epochs instead of the paper's 56 % / 78 %. The early drop cut the few
  useful epochs: 15 epochs with paper milestones gave 0.08, 25 epochs with late ones 0.30.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from yolo_common.preprocess import open_rgb

SMOKE_MODEL = {"width": 0.125, "batch_norm": "true"}  # both stages: the backbone must fit the detector
# the detection stage's deviations from the paper recipe (see the module docstring)
SMOKE_DETECT = {"optimizer": "adamw", "lr": 1e-3, "warmup_start": 1e-4, "weight_decay": 0.05, "dropout": 0.0}
LR_STEPS = (0.80, 0.93)   # fractions of the detection epochs where the LR drops 10x


def write_crops_imagenet(voc_root: Path, out: Path, *, size: int = 64, margin: float = 0.15) -> Path:
    """An ImageNet-100-style folder of object crops from a VOC-layout set (train split -> train.X*,
    val split -> val.X). Class ``k`` gets the folder ``n9000000k``; names go to ``Labels.json``."""
    from yolo_common.data import read_voc

    train, val = read_voc(voc_root, "train"), read_voc(voc_root, "val")
    if (out / "Labels.json").is_file():  # ours from an earlier run: stale crops would leak into val.X
        shutil.rmtree(out)
    wnids = [f"n{90000000 + k:08d}" for k in range(len(train.class_names))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "Labels.json").write_text(json.dumps({w: f"{n}, synthetic shape" for w, n in zip(wnids, train.class_names)},
                                                indent=1), encoding="utf-8")
    for split, folder_of in ((train, lambda k: f"train.X{1 + k % 2}"), (val, lambda k: "val.X")):
        for r in split.records:
            img = open_rgb(r.path)
            for j, (box, cid) in enumerate(zip(r.boxes, r.category_ids)):
                x1, y1, x2, y2 = box.tolist()
                m = margin * max(x2 - x1, y2 - y1)
                crop = img.crop((max(0, x1 - m), max(0, y1 - m), min(r.width, x2 + m), min(r.height, y2 + m)))
                if min(crop.size) < 4:
                    continue
                d = out / folder_of(int(cid)) / wnids[int(cid)]
                d.mkdir(parents=True, exist_ok=True)
                crop.resize((size, size), Image.BILINEAR).save(d / f"{r.path.stem}_{j}.JPEG", quality=92)
    return out


def run_smoke(out: str | Path = "runs/smoke", *, num_train: int = 480, num_val: int = 32, pre_epochs: int = 10,
              det_epochs: int = 25, S: int = 4, hidden: int = 256, batch_size: int = 16, seed: int = 0,
              num_workers: int = 0, max_train_batches: int = 0, responsibility: str = "darknet",
              threads: int = 1) -> dict:
    """Runs the three stages; returns the metrics and paths (also written to ``<out>/smoke.json``).

    ``threads`` fixes torch's intra-op thread count for the run (restored afterwards): the float sums of a
    conv or matmul are split by thread, so their bits, and after hundreds of steps the mAP, depend on it
    (two thread counts gave different mAPs in the issue's measurement). A fixed count makes the numbers
    reproducible: the README's figures are ``--threads 1``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        return _run_smoke(out, num_train=num_train, num_val=num_val, pre_epochs=pre_epochs, det_epochs=det_epochs,
                          S=S, hidden=hidden, batch_size=batch_size, seed=seed, num_workers=num_workers,
                          max_train_batches=max_train_batches, responsibility=responsibility, threads=threads)
    finally:
        torch.set_num_threads(before)


def _run_smoke(out, *, num_train, num_val, pre_epochs, det_epochs, S, hidden, batch_size, seed, num_workers,
               max_train_batches, responsibility, threads) -> dict:
    from yolo_common.synthetic import make_synthetic

    from . import detection_train, pretrain_train
    from .checkpoints import extract_backbone

    out = Path(out)
    for stage in ("pretrain", "detect"):  # a re-run starts clean instead of appending to the old logs
        if (out / stage / "config.json").is_file():
            shutil.rmtree(out / stage)
    t0 = time.perf_counter()
    size = 64 * S
    voc = make_synthetic(out / "data", layouts=("voc",), num_train=num_train, num_val=num_val, image_size=size,
                         max_objects=3, seed=seed)["voc"]
    imagenet = write_crops_imagenet(voc, out / "data" / "imagenet100")
    t_data = time.perf_counter() - t0

    common = [f"seed={seed}", f"num_workers={num_workers}", "verify_images=true", f"batch_size={batch_size}",
              f"max_train_batches={max_train_batches}", "log_every=5",
              *(f"{k}={v}" for k, v in SMOKE_MODEL.items())]
    pre = pretrain_train.main([f"data_root={imagenet}", f"output_dir={out}", "run_name=pretrain", "image_size=64",
                               f"epochs={pre_epochs}", f"lr_milestones={max(1, pre_epochs * 2 // 3)}",
                               "eval_every=1", "grad_clip_norm=10", *common])
    backbone = extract_backbone(pre["run_dir"])
    det = detection_train.main([f"data_root={voc}", "train_split=2012:train", "val_split=2012:val",
                                f"output_dir={out}", "run_name=detect", f"S={S}", f"hidden={hidden}",
                                f"epochs={det_epochs}",
                                "lr_milestones=" + ",".join(f"{f * det_epochs:.2f}" for f in LR_STEPS),
                                f"eval_every={max(1, det_epochs // 5)}", f"backbone={backbone}",
                                f"responsibility={responsibility}", *common,
                                *(f"{k}={v}" for k, v in SMOKE_DETECT.items())])
    onnx = export_and_score(det["run_dir"], voc)
    result = {
        "pretrain": {k: pre["metrics"].get(k) for k in ("top1", "top5", "val_loss")},
        "onnx": onnx,
        "detect": {k: det["metrics"].get(k) for k in detection_train.METRIC_KEYS},
        "backbone": str(backbone), "pretrain_run": str(pre["run_dir"]), "detect_run": str(det["run_dir"]),
        "data_s": round(t_data, 1), "total_s": round(time.perf_counter() - t0, 1),
        "settings": {"num_train": num_train, "num_val": num_val, "pre_epochs": pre_epochs, "det_epochs": det_epochs,
                     "S": S, "hidden": hidden, "batch_size": batch_size, "seed": seed, "threads": threads,
                     "responsibility": responsibility, **SMOKE_MODEL, **SMOKE_DETECT, "lr_steps": LR_STEPS},
    }
    (out / "smoke.json").write_text(json.dumps(result, indent=2, default=float) + "\n", encoding="utf-8")
    return result


def export_and_score(detect_run, voc_root) -> dict:
    """The detection run's last checkpoint -> ``<run>/export/yolov1-S<S>.onnx`` -> ``evaluate_onnx`` on the
    same val split (COCO AP from yolo_common's shared evaluator, next to the run's own)."""
    from yolo_common.onnx_eval import evaluate_onnx

    from .evaluate import load_detector
    from .export import export_onnx

    model, meta = load_detector(detect_run)
    path = export_onnx(model, meta, Path(detect_run) / "export" / f"yolov1-S{meta['config']['S']}.onnx")
    m = evaluate_onnx(path, voc_root, "val", out_dir=Path(detect_run) / "export" / "onnx_eval", batch=8,
                      providers=("CPUExecutionProvider",), warmup=1, progress=False)
    return {"model": str(path), "coco_AP": m["coco"]["AP"], "coco_AP50": m["coco"]["AP50"],
            "inference_ms": m["latency"]["inference_ms"]["mean"]}


def default_out() -> Path:
    """``<project>/runs/smoke`` for the editable install (src layout), else ``./runs/smoke``."""
    project = Path(__file__).resolve().parents[2]
    return (project if (project / "pyproject.toml").is_file() else Path.cwd()) / "runs" / "smoke"


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m yolov1.smoke", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(default_out()), help="output folder (default: the project's runs/smoke)")
    ap.add_argument("--num-train", type=int, default=480)
    ap.add_argument("--num-val", type=int, default=32)
    ap.add_argument("--pre-epochs", type=int, default=10)
    ap.add_argument("--det-epochs", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (fixed: results depend on it)")
    ap.add_argument("--responsibility", choices=("darknet", "iou"), default="darknet",
                    help="tie rule when no predictor overlaps an object (see loss.py)")
    a = ap.parse_args(argv)
    r = run_smoke(a.out, num_train=a.num_train, num_val=a.num_val, pre_epochs=a.pre_epochs, det_epochs=a.det_epochs,
                  batch_size=a.batch_size, seed=a.seed, responsibility=a.responsibility, threads=a.threads)
    print(f"\nsmoke done in {r['total_s']:.0f} s ({a.out}/smoke.json)")
    print(f"pretrain: top-1 {r['pretrain']['top1']:.3f}, top-5 {r['pretrain']['top5']:.3f}")
    d = r["detect"]
    print(f"detect:   VOC07 mAP@0.5 {d['voc07_mAP']:.4f}, VOC mAP@0.5 (all-point) {d['voc_mAP']:.4f}, "
          f"COCO AP {d['coco_AP']:.4f}, AP50 {d['coco_AP50']:.4f}")
    print(f"onnx:     COCO AP {r['onnx']['coco_AP']:.4f} / AP50 {r['onnx']['coco_AP50']:.4f} through "
          f"yolo_common.onnx_eval ({r['onnx']['model']})")
    return r


if __name__ == "__main__":
    main()
