"""``python -m yolov10_qat <command>``: fp16, qat-w4a16, export, eval, summary, run, bench.

    python -m yolov10_qat run --preset smoke --data synthetic          # minutes on a CPU
    python -m yolov10_qat run --preset full --data coco --coco-dir /data/coco2017
    python -m yolov10_qat run --resume runs/yolov10-qat/<run-id>        # continue an interrupted run
    python -m yolov10_qat fp16 --preset smoke --run-root R             # one step into run root R
    python -m yolov10_qat export|eval|summary --run-root R
    python -m yolov10_qat bench [--device cpu|cuda] [--imgsz N] [--batch N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .config import DATA_KINDS, PRESET_BUILDERS, PRESETS, SCHEMES


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--preset", choices=PRESETS, default="full", help="full: yolov10m/640/300 ep on COCO; "
                   "smoke: yolov10n/128/2 ep on 16+8 synthetic images, CPU")
    g.add_argument("--data", choices=DATA_KINDS, default=None, help="default: coco (full), synthetic (smoke)")
    g.add_argument("--coco-dir", default=None, help="COCO2017 root (train2017/, val2017/, annotations/); "
                   "default env COCO_DIR")
    g.add_argument("--run-root", default=None, help="default: ./runs/yolov10-qat/<timestamp>-<preset>")
    g.add_argument("--resume", default=None, metavar="RUN_ROOT", help="continue the run in RUN_ROOT")
    g.add_argument("--epochs", type=int)
    g.add_argument("--imgsz", type=int)
    g.add_argument("--batch", type=int)
    g.add_argument("--model", help="ultralytics model YAML, e.g. yolov10m.yaml (always random init)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    g.add_argument("--seed", type=int)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="FP16 autocast + GradScaler on CUDA for both trainings (default: on; off on CPU anyway)")
    g.add_argument("--workers", type=int)
    g.add_argument("--scheme", choices=SCHEMES, help="QAT layer scheme (default w4)")
    g.add_argument("--max-train-images", type=int, help="train on the first N images only (dry run)")
    g.add_argument("--max-val-images", type=int, help="validate/evaluate on the first N val images only")
    g.add_argument("--providers", nargs="+", help="ONNX Runtime providers for the evaluation")
    g.add_argument("--verify-images", action="store_true", default=None,
                   help="decode every image once while preparing the data; unreadable ones are left out (counted)")
    g.add_argument("--trust-checkpoint", action="store_true",
                   help="allow unpickling a weights/*.pt this run did not record writing (resume, export); "
                        "a malicious .pt can run code: only for files you trust")


_FIELDS = ("data", "coco_dir", "epochs", "imgsz", "batch", "model", "device", "seed", "amp", "workers", "scheme",
           "max_train_images", "max_val_images", "verify_images")


def config_from_args(a: argparse.Namespace):
    """The RunConfig of the preset with every given flag applied."""
    over = {k: getattr(a, k) for k in _FIELDS if getattr(a, k, None) is not None}
    if a.providers:
        over["providers"] = tuple(a.providers)
    if a.run_root:
        over["run_root"] = a.run_root
    return PRESET_BUILDERS[a.preset](**over)


def open_or_create(a: argparse.Namespace, *, create: bool):
    """The run named by ``--resume``/``--run-root`` (existing), or a new one when ``create``."""
    from pathlib import Path

    from .pipeline import Run

    root = a.resume or a.run_root
    if root and (Path(root) / "run.json").is_file():
        # Everything but device/workers/providers is fixed by run.json; Run.open refuses changes to it.
        over = {k: getattr(a, k) for k in _FIELDS}
        over["providers"] = tuple(a.providers) if a.providers else None
        run = Run.open(root, **over)
        run.trust_checkpoint = a.trust_checkpoint
        return run
    if a.resume:
        raise FileNotFoundError(f"--resume {a.resume}: no run.json there (not a yolov10-qat run root)")
    if not create:
        raise FileNotFoundError(f"--run-root {root}: no run.json there; run `fp16`/`qat-w4a16`/`run` first")
    run = Run.create(config_from_args(a))
    run.trust_checkpoint = a.trust_checkpoint
    return run


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m yolov10_qat", description="YOLOv10 from scratch: FP16 baseline vs "
                                 "Brevitas W4A16 QAT, ONNX export and one evaluator.")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in (("run", "every step end to end"), ("fp16", "train the FP16/AMP baseline"),
                        ("qat-w4a16", "train the Brevitas W4A16 QAT model"), ("export", "export both to ONNX"),
                        ("eval", "evaluate both ONNX models"), ("summary", "write summary.md")):
        _common(sub.add_parser(name, help=help_))
    b = sub.add_parser("bench", help="training step time: W4 QAT model vs float model")
    b.add_argument("--model", default="yolov10m.yaml")
    b.add_argument("--imgsz", type=int, default=None, help="default 320 on cpu, 640 on cuda")
    b.add_argument("--batch", type=int, default=None, help="default 2 on cpu, 16 on cuda")
    b.add_argument("--device", default="auto")
    b.add_argument("--steps", type=int, default=None, help="timed steps (default 5 on cpu, 30 on cuda)")
    b.add_argument("--warmup", type=int, default=2)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command == "bench":
        from .bench import main as bench_main

        bench_main(a)
        return 0
    creating = a.command in ("run", "fp16", "qat-w4a16")
    run = open_or_create(a, create=creating)
    print(f"[yolov10-qat] run root: {run.root}", flush=True)
    if a.command == "run":
        run.run_all()
    elif a.command == "fp16":
        run.train("fp16")
    elif a.command == "qat-w4a16":
        run.train("qat")
    elif a.command == "export":
        run.export()
    elif a.command == "eval":
        run.evaluate()
    elif a.command == "summary":
        print(run.summary().read_text(encoding="utf-8"))
    print(f"[yolov10-qat] run root: {run.root}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

