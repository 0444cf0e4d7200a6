"""``python 9001.py <mode> [options]`` (also ``python -m yolov9001``): train | val | detect | benchmark | export.

Config precedence: defaults < ``--hyp`` file < ``--hypo`` < the explicit flags (``--epochs``, ``--img-size``...).
``attach_runtime`` runs after the weights are loaded and before any train / val / inference.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HYP = "models/hyps/high.yaml"
log = logging.getLogger("yolov9001")

# flag dest -> config key (applied last, type-checked like --hypo)
FLAG_KEYS = {"model": "model", "scale": "model_scale", "epochs": "epochs", "batch_size": "batch_size",
             "img_size": "imgsz", "workers": "workers", "cache": "cache", "cache_compression": "cache_compression"}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="9001.py", description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("train", "val", "detect", "benchmark", "export"))
    ap.add_argument("--model", default=None, help="model family: hyper (default)")
    ap.add_argument("--scale", default=None, help="Hyper-YOLO scale n s m l x t (default n)")
    ap.add_argument("--weights", default=None, help="weights (.pt) to load before running")
    ap.add_argument("--data", default=None, help="dataset root (train/val/benchmark) or image/folder/glob (detect)")
    ap.add_argument("--hyp", default=DEFAULT_HYP, help=f"hyp YAML (default {DEFAULT_HYP}); 'none' for defaults")
    ap.add_argument("--hypo", default="", help="inline overrides 'k:v,k:v' (dotted keys) or a YAML path")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cache", default=None, choices=("none", "ram", "disk", "hybrid"))
    ap.add_argument("--cache-compression", default=None, choices=("none", "lz4", "zstd"))
    ap.add_argument("--compile", action="store_true", help="torch.compile (inductor; options in core/trainer.py)")
    ap.add_argument("--resume", default=None, help="checkpoint file or run dir (picks checkpoints/last.pt, best.pt)")
    ap.add_argument("--log", default="INFO", help="INFO | DEBUG | WARNING, optionally ',HEAVY' (TB image grids, "
                                                  "weight histograms)")
    ap.add_argument("--tb-only", action="store_true", help="TensorBoard + files only: no progress bars, "
                                                           "warnings only on the console")
    ap.add_argument("--log-dir", default="runs", help="base run dir; runs are exp, exp2, ... unless resuming")
    ap.add_argument("--name", default="exp", help="run name stem under --log-dir")
    ap.add_argument("--out", default=None, help="export: .onnx path; detect: output folder")
    ap.add_argument("--steps", type=int, default=5, help="benchmark: timed train steps")
    return ap


def setup_logging(spec: str, tb_only: bool) -> tuple[bool, bool]:
    """-> (heavy, progress). ``spec`` = LEVEL[,HEAVY]."""
    parts = [p.strip().upper() for p in spec.split(",") if p.strip()]
    heavy = "HEAVY" in parts
    levels = [p for p in parts if p != "HEAVY"] or ["INFO"]
    if levels[0] not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SystemExit(f"error: --log {spec!r}: level must be DEBUG, INFO, WARNING or ERROR (plus ,HEAVY)")
    level = logging.WARNING if tb_only else getattr(logging, levels[0])
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return heavy, not tb_only


def find_hyp(hyp: str) -> Path | None:
    if hyp.lower() == "none":
        return None
    p = Path(hyp)
    if p.is_file():
        return p
    if not p.is_absolute() and (PROJECT_ROOT / p).is_file():
        return PROJECT_ROOT / p
    raise FileNotFoundError(f"--hyp {hyp} does not exist")


def make_config(args, saved: dict | None = None):
    """The run's YOLOConfig: a checkpoint's saved config (resume / val / detect / export) or ``--hyp`` (fresh
    runs) as the base, then ``--hypo``, then the explicit flags; validated once, after every layer (so
    low.yaml's ``dino.enabled: true`` can be switched off by ``--hypo dino.enabled:false``)."""
    from .core.config import get_config, parse_hypo

    hyp = parse_hypo(args.hypo)
    hyp.update({key: getattr(args, dest) for dest, key in FLAG_KEYS.items() if getattr(args, dest) is not None})
    hyp_path = None if saved is not None else find_hyp(args.hyp)
    if saved is not None and args.hyp not in (DEFAULT_HYP, "none"):
        # the checkpoint's config is the base here; say so rather than drop the flag silently
        log.warning("--hyp %s is not applied: the checkpoint's saved config is the base (use --hypo to change "
                    "keys)", args.hyp)
    return get_config({"hyp": saved} if saved else None, hyp=hyp, hyp_path=hyp_path)


def load_for_inference(args, device):
    """(model with runtime attached, cfg, names) from ``--weights`` (its saved config is the base)."""
    from yolo_common.checkpoint import load_checkpoint

    from .core.runtime import attach_runtime
    from .core.trainer import load_weights
    from .models import build_model

    if not args.weights:
        raise SystemExit(f"error: {args.mode} needs --weights (a checkpoint from 9001.py train)")
    ck = load_checkpoint(args.weights, map_location="cpu")
    saved = ck.get("config") if isinstance(ck, dict) else None
    cfg = make_config(args, saved)
    names = ck.get("names") or [f"class_{i}" for i in range(cfg.nc or 80)]
    cfg.nc = cfg.nc or len(names)
    model = build_model(cfg.to_dict())
    load_weights(model, args.weights)
    model.to(device).eval()
    attach_runtime(model, cfg.imgsz, cfg)
    return model, cfg, names


def cmd_train(args, device, heavy, progress):
    from yolo_common.device import seed_everything

    from .core.rundir import increment_run_dir, resolve_resume, run_dir_of
    from .core.trainer import Trainer

    resume = None
    if args.resume:
        from yolo_common.checkpoint import load_checkpoint

        resume = resolve_resume(args.resume)
        saved = load_checkpoint(resume, map_location="cpu")
        cfg = make_config(args, saved["config"])
        data = args.data or saved["data"]
        run_dir = run_dir_of(resume)
    else:
        if not args.data:
            raise SystemExit("error: train needs --data (a YOLO or COCO dataset root)")
        cfg = make_config(args)
        data = args.data
        if cfg.dino.enabled:   # a gated teacher without a token stops here, before a run dir is claimed
            from .core.distiller import teacher_width

            teacher_width(cfg)
        run_dir = shared_run_dir(args, device, increment_run_dir)
    seed_everything(cfg.seed)
    log.info("run dir %s", run_dir)
    trainer = Trainer(cfg, data, run_dir, device, weights=args.weights, resume=resume, compile=args.compile,
                      heavy=heavy, progress=progress)
    result = trainer.train()
    print(json.dumps(result, indent=1))
    return result


def shared_run_dir(args, device, increment_run_dir) -> Path:
    """A new run dir, made by rank 0 only and broadcast, so torchrun jobs write one ``exp<N>``."""
    from yolo_common.distributed import init_distributed

    info = init_distributed(device)
    if info.world_size == 1:
        return increment_run_dir(args.log_dir, args.name)
    import torch.distributed as dist

    box = [str(increment_run_dir(args.log_dir, args.name)) if info.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def cmd_val(args, device, heavy, progress):
    from yolo_common.runlog import markdown_table

    from .core.rundir import increment_run_dir
    from .core.validator import evaluate
    from .utils.dataloaders import create_dataloader
    from .utils.plots import pr_curve

    model, cfg, names = load_for_inference(args, device)
    if not args.data:
        raise SystemExit("error: val needs --data")
    loader, _ = create_dataloader(args.data, "val", cfg, augment=False, shuffle=False, progress=progress)
    if loader.dataset.split.class_names != names:
        log.warning("class names of --data %s differ from the checkpoint's %s", loader.dataset.split.class_names,
                    names)
    ev = evaluate(model, loader, device, progress=progress)
    out = Path(args.out) if args.out else increment_run_dir(Path(args.log_dir) / "val", args.name)
    out.mkdir(parents=True, exist_ok=True)
    stats = ev["coco"]
    (out / "metrics.json").write_text(json.dumps({"coco": stats, "images": ev["images"], "weights": args.weights,
                                                  "data": args.data}, indent=1, default=float))
    (out / "detections.json").write_text(json.dumps(ev["detections"]))
    pr_curve(ev["gt"], ev["detections"], out / "pr_curve.png")
    from yolo_common.draw import samples_grid

    split = loader.dataset.split
    samples_grid(split.records, ev["detections"], split.categories, out / "samples" / "val.png", n=4)
    table = markdown_table([{"class": k, "AP": v} for k, v in stats["per_class"].items()])
    (out / "per_class.md").write_text(table + "\n")
    print(markdown_table([{k: stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}]))
    print(markdown_table([{k: stats[k] for k in ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl")}]))
    print(table)
    print(f"results in {out}")
    return stats


def cmd_detect(args, device, heavy, progress):
    from .core.predict import detect
    from .core.rundir import increment_run_dir

    model, cfg, names = load_for_inference(args, device)
    if not args.data:
        raise SystemExit("error: detect needs --data (an image, a folder or a glob)")
    out = Path(args.out) if args.out else increment_run_dir(Path(args.log_dir) / "detect", args.name)
    res = detect(model, cfg, names, args.data, out, device)
    print(json.dumps(res, indent=1))
    return res


def cmd_export(args, device, heavy, progress):
    from .core.export import export_onnx

    model, cfg, names = load_for_inference(args, torch_cpu())
    out = Path(args.out) if args.out else Path(args.weights).resolve().parent.parent / "onnx" / (
        Path(args.weights).stem + ".onnx")
    path = export_onnx(model, out, cfg, names)
    print(f"exported {path} (raw contract, dynamic batch, imgsz {cfg.imgsz}); score it with:\n"
          f"  python -m yolo_common.onnx_eval --model {path} --data <dataset> --split val --out <dir>")
    return {"onnx": str(path)}


def cmd_benchmark(args, device, heavy, progress):
    from .core.benchmark import run_benchmark

    if not args.data:
        raise SystemExit("error: benchmark needs --data")
    cfg = make_config(args)
    res = run_benchmark(cfg, args.data, device, compile=args.compile, steps=args.steps)
    print(json.dumps(res, indent=1, default=float))
    return res


def torch_cpu():
    import torch

    return torch.device("cpu")


def main(argv: list[str] | None = None):
    args = build_parser().parse_args(argv)
    heavy, progress = setup_logging(args.log, args.tb_only)
    from yolo_common.device import resolve_device

    from .core.config import ConfigError
    from .core.trainer import NonFiniteLoss
    from .utils.dino_teacher import DinoLoadError

    try:
        device = resolve_device(args.device)
        return {"train": cmd_train, "val": cmd_val, "detect": cmd_detect, "export": cmd_export,
                "benchmark": cmd_benchmark}[args.mode](args, device, heavy, progress)
    except (ConfigError, FileNotFoundError, ValueError, NonFiniteLoss, DinoLoadError) as e:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise  # --log DEBUG: the full traceback
        raise SystemExit(f"error: {e}") from None
