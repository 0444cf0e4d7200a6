"""``summary.md``: data provenance, recipe, quant scheme, artifact pointers, COCO AP table and latency."""

from __future__ import annotations

import json
from pathlib import Path

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def ap_rows(base: dict, qat: dict) -> list[dict]:
    """One row per COCO stat: baseline, QAT, QAT - baseline (``None`` where a bucket has no objects: -1)."""
    rows = []
    for k in AP_KEYS:
        b, q = base.get("coco", {}).get(k), qat.get("coco", {}).get(k)
        ok = isinstance(b, (int, float)) and isinstance(q, (int, float)) and b >= 0 and q >= 0
        rows.append({"metric": k, "baseline": b, "qat-w4a16": q, "diff (qat - baseline)": (q - b) if ok else None})
    return rows


def latency_rows(base: dict, qat: dict) -> list[dict]:
    rows = []
    for name, m in (("baseline", base), ("qat-w4a16", qat)):
        lat = m.get("latency", {})
        inf = lat.get("inference_ms", {})
        rows.append({"model": name, "mean ms": inf.get("mean"), "p50 ms": inf.get("p50"), "p90 ms": inf.get("p90"),
                     "images/s": lat.get("images_per_s"), "provider": m.get("provider"),
                     "images": m.get("num_images")})
    return rows


def write_summary(run_root: str | Path) -> Path:
    """Write ``<run-root>/summary.md`` from what the run root holds; returns its path."""
    from yolo_common.runlog import format_summary

    root = Path(run_root)
    cfg = _read_json(root / "run.json")
    prov = _read_json(root / "provenance.json")
    base = _read_json(root / "baseline-coco" / "metrics.json")
    qat = _read_json(root / "qat-w4a16-coco" / "metrics.json")
    state = _read_json(root / "state.json")

    data_rows = [{"split": f"{s.get('split')} (train)" if i == 0 else f"{s.get('split')} (val)",
                  "root": s.get("root"), "images": s.get("images"), "boxes": s.get("boxes"),
                  "categories": s.get("categories")} for i, s in enumerate(prov.get("splits", []))]
    ev = base.get("dataset", {}).get("splits", [{}])[0] if base else {}
    eval_text = (f"ONNX evaluation (`yolo_common.onnx_eval.evaluate_onnx`, both models, same images and settings): "
                 f"`{ev.get('root')}` split `{ev.get('split')}`, {base.get('num_images')} images, "
                 f"{ev.get('boxes')} boxes; settings `{json.dumps(base.get('settings', {}))}`.")
    args = cfg.get("train_args", {})
    hyp_rows = [{"key": k, "value": cfg.get(k)} for k in ("preset", "data", "model", "imgsz", "epochs", "batch",
                                                          "seed", "deterministic", "device", "amp")]
    hyp_rows += [{"key": k, "value": args.get(k)} for k in ("optimizer", "lr0", "lrf", "cos_lr", "momentum",
                                                           "weight_decay", "warmup_epochs", "warmup_momentum",
                                                           "warmup_bias_lr", "close_mosaic", "mosaic")]
    sched = ("cosine (one_cycle)" if args.get("cos_lr") else "linear") + (
        f" from lr0={args.get('lr0')} to lr0*lrf={args.get('lr0', 0) * args.get('lrf', 0):g}, "
        f"{args.get('warmup_epochs')} warmup epochs")
    scheme = cfg.get("scheme")
    qat_layers = state.get("qat_layers", {})
    quant_text = (f"Scheme `{scheme}`: Brevitas `QuantConv2d`, weight-only, signed narrow-range per-output-channel "
                  f"int{{4,8}} (`Int8WeightPerChannelFloat`, `weight_bit_width` per layer, STATS/max scale), "
                  f"inputs/outputs/bias float. Training graph: {qat_layers.get('total', '?')} quantized convs "
                  f"({qat_layers.get('w4', '?')} at 4 bit, {qat_layers.get('w8', '?')} at 8 bit); the DFL conv "
                  f"stays float. Exported QCDQ chains: {state.get('qcdq', {})}.")
    pointers = "\n".join(f"- {name}: TensorBoard `{root / name / 'tb'}`, loss curve `{root / name / 'curves' / 'loss.png'}`"
                         f", weights `{root / name / 'weights'}`" for name in ("fp16", "qat-w4a16"))
    onnx_files = sorted(p.name for p in (root / "onnx").glob("*.onnx"))
    sections = [
        ("Data", data_rows),
        ("Evaluation data", eval_text),
        ("Hyperparameters", hyp_rows),
        ("LR schedule", sched),
        ("Recipe keys not mapped from quantized-yolov5 hyp.scratch.yaml",
         [{"key": k, "reason": v} for k, v in cfg.get("not_mapped", {}).items()] or "none"),
        ("Quantization", quant_text),
        ("Artifacts", pointers + f"\n- ONNX: {', '.join(onnx_files)} in `{root / 'onnx'}`"),
        ("Pictures", "\n".join(f"- [samples/{k}.png](samples/{k}.png): 4 val images, ground truth | the {k} "
                               f"ONNX model's detections (score >= 0.3)"
                               for k in ("baseline", "qat") if (root / "samples" / f"{k}.png").is_file())
         or "none"),
        ("COCO AP (ONNX Runtime, same images for both)", ap_rows(base, qat)),
        ("Latency (per image, ONNX Runtime)", latency_rows(base, qat)),
        ("Model files (size on disk; latency: session.run, batch 1, CPU EP, one random input)", file_rows(state)),
        ("Per-layer quantization (QAT model)", quant_section(root, state)),
    ]
    path = root / "summary.md"
    path.write_text(format_summary(sections, title=f"yolov10-qat run {root.name}", floatfmt=".4f"), encoding="utf-8")
    return path


def quant_section(root: Path, state: dict):
    """The link to ``qat-w4a16/quant_report.{csv,png}`` and its five layers with the largest relative error."""
    rep = state.get("quant_report")
    if not rep:
        return "not written (the quant_report step has not run)"
    rows = [{"layer": w["layer"], "bits": w["bits"], "rel. MSE": w["rel_mse"], "levels min / median":
             f"{w['levels_min']} / {w['levels_median']:g}"} for w in rep["worst"]]
    link = ("[qat-w4a16/quant_report.csv](qat-w4a16/quant_report.csv) and "
            "[qat-w4a16/quant_report.png](qat-w4a16/quant_report.png): every quantized conv's bits, levels used per "
            "channel, weight MSE / max error of the fake-quantized weight against its latent fp32 weight, scale "
            f"range ({rep['layers']} layers). The five with the largest relative MSE:")
    from yolo_common.runlog import markdown_table

    return link + "\n\n" + markdown_table(rows, floatfmt=".3g")


def file_rows(state: dict):
    """fp32 / QCDQ / INT4 / folded: what each file is, its size and its speed (``Run.deploy_files``)."""
    what = {"baseline (fp32)": "the float model", "QAT QCDQ": "Brevitas export: fp32 weights, Q -> Clip -> DQ at run time",
            "QAT INT4": "INT4 weight initializers + DequantizeLinear (opset 21); outputs = QCDQ's",
            "QAT folded float": "dequantized weights as fp32 constants (deploy); outputs = QCDQ's up to rounding"}
    files = state.get("files")
    if not files:
        return "not written (the export step has not run)"
    return [{"file": Path(v["path"]).name, "what": what.get(k, k), "MB": v["bytes"] / 1e6,
             "latency ms": v["latency_ms"]} for k, v in files.items()]
