"""``hyper-smoke``: the whole platform on the synthetic shapes set, on the CPU, in a few minutes.

    python -m yolov9001.smoke --out runs/smoke

1. writes the synthetic set (YOLO + COCO layouts; 128 train / 32 val images at 160 px);
2. trains Hyper-YOLO-N (``9001.py train``, SGD, 30 epochs at 160 px; warm-up and nominal batch shortened
   for a 128-image set: ``SMOKE_HYPO``);
3. ``val`` on best.pt (12 COCO stats, per-class table, PR curve), ``detect`` on the val images,
   ``export`` to ONNX, and the ONNX file scored by ``yolo_common.onnx_eval`` on the same split;
4. ``summary.md``: torch AP vs ONNX AP, and where every output is.

``--dino`` (``hyper-smoke-dino``) trains with the tiny random DINOv3 teacher and every distillation term on
(``DINO_HYPO``) and adds each term's share of the training loss to the summary. A random teacher carries no
knowledge: this checks that the whole path runs and learns, not that distillation helps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from yolo_common.onnx_eval import evaluate_onnx
from yolo_common.runlog import markdown_table, write_summary
from yolo_common.synthetic import make_synthetic

from .cli import main as cli

SMOKE_HYPO = "nbs:16,warmup_epochs:2,warmup_min_iters:0,close_mosaic:5,mixup:0,copy_paste:0,lr0:0.02,val_interval:5"
DINO_HYPO = ("dino.enabled:true,dino.model_name:tiny-random,dino.resolution:160,dino.max_epochs:1000,"
             "dino.objfor02:true,dino.reg_weight_with_saliency:true,dino.centroid_align:true,dino.cls_proto:true,"
             "dino.contrast:true,dino.feat_distill:true,dino.bb_lr_gate:true")
TERMS = ("centroid", "contrast", "feat")


def dino_shares(run_dir: Path) -> list[dict]:
    """Mean of each DINO term over the steps that had it, and its share of the mean total loss."""
    import math

    rows = [json.loads(x) for x in (run_dir / "logs" / "train.jsonl").read_text().splitlines()]
    with_dino = [r for r in rows if "dino/total" in r]
    total = sum(r["loss"] for r in with_dino) / max(len(with_dino), 1)
    out = []
    for k in (*TERMS, "total"):
        vals = [r[f"dino/{k}"] for r in with_dino if f"dino/{k}" in r and math.isfinite(r[f"dino/{k}"])]
        mean = sum(vals) / max(len(vals), 1)
        out.append({"term": f"dino/{k}", "mean per step": mean, "share of the total loss": mean / max(total, 1e-12),
                    "steps": len(vals)})
    return out


def run(out: Path, epochs: int = 30, imgsz: int = 160, num_train: int = 128, num_val: int = 32,
        workers: int = 2, dino: bool = False) -> dict:
    t0 = time.time()
    paths = make_synthetic(out / "data", layouts=("yolo", "coco"), num_train=num_train, num_val=num_val,
                           image_size=imgsz, seed=0)
    yolo = paths["yolo"].parent
    common = ["--img-size", str(imgsz), "--device", "cpu", "--log-dir", str(out)]
    train = cli(["train", "--data", str(yolo), "--epochs", str(epochs), "--batch-size", "16", "--workers",
                 str(workers), "--hypo", SMOKE_HYPO + ("," + DINO_HYPO if dino else ""), "--name", "train", *common])
    run_dir = Path(train["run_dir"])
    best = run_dir / "checkpoints" / "best.pt"
    val = cli(["val", "--data", str(yolo), "--weights", str(best), "--out", str(out / "val"), *common])
    det = cli(["detect", "--data", str(yolo / "images" / "val"), "--weights", str(best), "--out",
               str(out / "detect"), *common])
    onnx = cli(["export", "--weights", str(best), "--out", str(out / "onnx" / "hyper-n.onnx"), *common])["onnx"]
    ort = evaluate_onnx(onnx, paths["yolo"], "val", out_dir=out / "onnx_eval", progress=False)
    rows = [{"where": "torch (9001.py val)", "AP": val["AP"], "AP50": val["AP50"], "AP75": val["AP75"]},
            {"where": "ONNX Runtime (yolo_common.onnx_eval)", "AP": ort["coco"]["AP"], "AP50": ort["coco"]["AP50"],
             "AP75": ort["coco"]["AP75"]}]
    result = {"train": train, "val": {k: val[k] for k in ("AP", "AP50", "AP75")},
              "onnx": {k: ort["coco"][k] for k in ("AP", "AP50", "AP75")},
              "onnx_minus_torch_AP": ort["coco"]["AP"] - val["AP"], "detect": det, "seconds": time.time() - t0}
    extra = {}
    if dino:
        result["dino_shares"] = dino_shares(run_dir)
        extra["DINO terms (tiny random teacher; share = term / total training loss, means over steps)"] = \
            markdown_table(result["dino_shares"])
    write_summary(out / "summary.md", {
        "Hyper-YOLO-N on the synthetic shapes set" + (" with the DINOv3 teacher" if dino else ""):
            markdown_table(rows), **extra,
        "Outputs": markdown_table([{"what": k, "path": v} for k, v in (
            ("run (checkpoints, logs, tb, curves)", str(run_dir)), ("val (metrics, per-class, PR curve)",
                                                                    str(out / "val")),
            ("detect (annotated images, detections.json)", str(out / "detect")), ("onnx", onnx),
            ("onnx_eval (metrics.json)", str(out / "onnx_eval")))]),
    }, title="yolov9001-hyper smoke")
    (out / "smoke.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"\nsmoke done in {result['seconds']:.0f} s: torch AP50 {val['AP50']:.3f} AP {val['AP']:.3f}; "
          f"ONNX AP50 {ort['coco']['AP50']:.3f} AP {ort['coco']['AP']:.3f}; summary {out / 'summary.md'}")
    for r in result.get("dino_shares", []):
        print(f"  {r['term']}: {r['mean per step']:.4f} per step, {r['share of the total loss']:.1%} of the loss")
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/smoke"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dino", action="store_true", help="train with the tiny DINOv3 teacher, every term on")
    args = ap.parse_args(argv)
    return run(args.out, epochs=args.epochs, workers=args.workers, dino=args.dino)


if __name__ == "__main__":
    main()
