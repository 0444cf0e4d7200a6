"""demo: the shared pipeline end to end on the embedded synthetic data (no downloads, ~a minute on 2 cores).

    python tasks/demo_common.py --out runs/demo [--num-val 32] [--imgsz 320] [--seed 0]

1. generate the seeded shapes set in the COCO, YOLO and VOC layouts (``yolo_common.synthetic``);
2. read the val split back in all three layouts and check they hold the same boxes;
3. write ``provenance.json`` (paths, counts, annotation sha256);
4. export a small random-init detector to ONNX (raw contract) with its letterbox stamped in the metadata;
5. score it with the ONNX COCO evaluator on the COCO and YOLO layouts: ``eval-coco/metrics.json``,
   ``eval-yolo/metrics.json`` (the two must agree: same images, same boxes);
6. write ``summary.md``.

The detector is untrained, so its AP is ~0: the demo shows that every stage runs and agrees, not a model.
The yolov10-qat smoke pipeline replaces this as the workspace demo once that project exists.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import bench_common_onnx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/demo"))
    ap.add_argument("--num-train", type=int, default=16)
    ap.add_argument("--num-val", type=int, default=32)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)

    from yolo_common.data import load_split, write_provenance
    from yolo_common.onnx_eval import evaluate_onnx, summary_table, write_model_metadata
    from yolo_common.preprocess import ULTRALYTICS
    from yolo_common.runlog import markdown_table, write_summary
    from yolo_common.synthetic import make_synthetic

    t0 = time.perf_counter()
    out = ns.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[demo] 1/5 synthetic set -> {out / 'data'}", flush=True)
    paths = make_synthetic(out / "data", num_train=ns.num_train, num_val=ns.num_val, image_size=(320, 240),
                           seed=ns.seed)

    print("[demo] 2/5 reading the val split in every layout", flush=True)
    splits = {"coco": load_split(paths["coco"], "val2017"), "yolo": load_split(paths["yolo"], "val"),
              "voc": load_split(paths["voc"], "val")}
    ref = splits["coco"]
    for name, s in splits.items():
        if len(s) != len(ref) or s.num_boxes != ref.num_boxes or s.class_names != ref.class_names:
            raise SystemExit(f"[demo] layout {name} disagrees with coco: {len(s)} images / {s.num_boxes} boxes")
        by_name = {r.path.name: r for r in s.records}
        worst = max(float(np.abs(by_name[r.path.name].boxes - r.boxes).max(initial=0)) for r in ref.records)
        if worst > 1.0:
            raise SystemExit(f"[demo] layout {name}: boxes differ from coco by {worst:.2f} px")

    print("[demo] 3/5 provenance", flush=True)
    write_provenance(out / "provenance.json", *splits.values())

    print("[demo] 4/5 exporting a random-init detector to ONNX", flush=True)
    model = bench_common_onnx.build_bench_detector(len(ref.categories), ns.seed, imgsz=ns.imgsz)
    onnx_path = bench_common_onnx.export_onnx(model, _mk(out / "onnx") / "demo-detector.onnx",
                                              ns.imgsz)
    write_model_metadata(onnx_path, "raw", ULTRALYTICS.with_size(ns.imgsz), ref.class_names)

    print("[demo] 5/5 ONNX COCO evaluation (COCO and YOLO layouts)", flush=True)
    results = {}
    for layout, data, split in (("coco", paths["coco"], "val2017"), ("yolo", paths["yolo"], "val")):
        results[layout] = evaluate_onnx(onnx_path, data, split, out_dir=out / f"eval-{layout}",
                                        providers=("CPUExecutionProvider",))
    a, b = results["coco"]["coco"], results["yolo"]["coco"]
    gap = max(abs(a[k] - b[k]) for k in ("AP", "AP50", "AP75", "AR100"))
    # AP of an untrained model is ~0 on both, so also require the same detections (same images, same model)
    if results["coco"]["num_detections"] != results["yolo"]["num_detections"]:
        gap = float("inf")
    if gap > 1e-6:
        raise SystemExit(f"[demo] the two layouts score differently (max |diff| {gap:.3g})")
    print(summary_table(results["coco"]))

    rows = [{"layout": k, "images": len(s), "boxes": s.num_boxes, "skipped": s.skipped.summary()}
            for k, s in splits.items()]
    lat = results["coco"]["latency"]
    write_summary(out / "summary.md", {
        "Data (val split, three layouts)": markdown_table(rows),
        "ONNX evaluation (untrained detector: AP ~0 is expected)": markdown_table(
            [{"layout": k, **{m: r["coco"][m] for m in ("AP", "AP50", "AR100")}} for k, r in results.items()]),
        "Latency (CPUExecutionProvider)": markdown_table(
            [{"mean ms": lat["inference_ms"]["mean"], "p50 ms": lat["inference_ms"]["p50"],
              "p90 ms": lat["inference_ms"]["p90"], "images/s": lat["images_per_s"]}], floatfmt=".2f"),
        "Files": "\n".join(f"- `{p.relative_to(out)}`" for p in sorted(out.rglob("*.json")) if "data" not in p.parts),
    }, title="yolo_common demo")
    print(f"[demo] done in {time.perf_counter() - t0:.1f} s: {out / 'summary.md'}")
    print(json.dumps({"AP": a["AP"], "layouts_agree": True, "out": str(out)}))
    return 0


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
