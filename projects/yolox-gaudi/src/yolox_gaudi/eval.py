"""Evaluate a YOLOX checkpoint on a COCO split (``yolo_common.evaluation.coco_map``).

    python -m yolox_gaudi.eval --name yolox-s -c runs/yolox-s/checkpoints/best.pt --data_dir /data/COCO \\
        [--use_hpu --autocast] [-b 32] [--conf 0.001] [--nms 0.65] [--tsize 640] [--preproc cv2] [--legacy]
        [--test] [key value ...]

Official Megvii ``.pth`` files work too (their ``model`` entry); ``--preproc cv2`` evaluates them on
pixels made exactly as Megvii's ``preproc`` makes them (cv2 decode + resize), ``--legacy`` adds Megvii's
normalisation for weights from before 0.1.1rc0. Writes ``metrics.json`` and ``detections.json`` to
``--out`` (default ``runs/eval/<name>``). Megvii's eval script uses conf 0.001. ``--test`` runs on COCO
test-dev (``annotations/image_info_test-dev2017.json``, ``test2017/``), which has no public labels: it
writes ``yolox_testdev_2017.json`` for the evaluation server and scores nothing.
"""

from __future__ import annotations

import argparse
import json
import sys


TESTDEV_ANN = "image_info_test-dev2017.json"
TESTDEV_RESULT = "yolox_testdev_2017.json"


def _size(text: str) -> tuple[int, int]:
    """``640`` -> (640, 640); ``480,640`` -> (480, 640)."""
    try:
        vals = [int(v) for v in text.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected S or H,W, got {text!r}") from None
    if len(vals) == 1:
        vals *= 2
    if len(vals) != 2 or min(vals) <= 0 or any(v % 32 for v in vals):
        raise argparse.ArgumentTypeError(f"expected S or H,W (multiples of 32), got {text!r}")
    return vals[0], vals[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m yolox_gaudi.eval", description=__doc__.splitlines()[0])
    p.add_argument("-n", "--name", "--model-name", dest="name", default="yolox-s")
    p.add_argument("-f", "--exp_file", "--exp-file", dest="exp_file", default=None,
                   help="experiment file defining `class Exp` (Megvii's -f); wins over --name")
    p.add_argument("-c", "--ckpt", "--ckpt-path", dest="ckpt", required=True, help="checkpoint (.pt / .pth)")
    p.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None,
                   help="COCO root (default: $YOLOX_DATADIR, else ./datasets/COCO)")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--use_hpu", "--hpu", dest="use_hpu", action="store_true")
    p.add_argument("--autocast", "--hmp", dest="autocast", action="store_true", help="BF16 autocast")
    p.add_argument("--fp16", action="store_true", help="fp16 autocast (CUDA)")
    p.add_argument("--conf", type=float, default=0.001, help="score threshold (Megvii's eval: 0.001)")
    p.add_argument("--nms", type=float, default=None, help="NMS IoU (default: the config's 0.65)")
    p.add_argument("--tsize", type=_size, default=None, help="test size: S or H,W (default: the config's)")
    p.add_argument("--preproc", choices=("pil", "cv2"), default="pil",
                   help="pil: the letterbox training uses; cv2: Megvii's preproc (for official weights)")
    p.add_argument("--legacy", action="store_true",
                   help="Megvii's --legacy: cv2 preproc + RGB ImageNet mean/std, for weights before 0.1.1rc0")
    p.add_argument("--test", action="store_true", help="COCO test-dev: write the result json, score nothing")
    p.add_argument("--split", default=None, help="split (default: the config's val2017)")
    p.add_argument("--out", default=None, help="output folder (default runs/eval/<name>)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: key value ...")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .config import get_exp, load_exp_file

    try:
        exp = (load_exp_file(args.exp_file) if args.exp_file else get_exp(args.name)).merge(args.opts)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .train import wants_hpu

    if wants_hpu(args):          # --device auto on a Gaudi host too (issue 13 bug 7)
        from . import hpu

        try:
            hpu.configure_env(bf16=args.autocast)
            if args.use_hpu or args.device.startswith("hpu"):     # asked for by name: fail here, clearly
                hpu.import_core()
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from .trainer import DeviceError, UsageError

    try:
        metrics = run(args, exp)
    except (FileNotFoundError, DeviceError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, float)}, indent=1))
    return 0


def run(args, exp) -> dict:
    """Loads the checkpoint, evaluates, writes metrics.json / detections.json; returns the metrics."""
    import os
    from pathlib import Path

    import torch
    from yolo_common.checkpoint import load_checkpoint
    from yolo_common.device import autocast, resolve_device

    from . import hpu
    from yolo_common.data import read_coco

    from .data import build_eval_loader, load_dataset_split
    from .engine import evaluate
    from .model import build_from_checkpoint
    from yolo_common.checkpoint import atomic_write_json

    from .trainer import DeviceError, UsageError, resolve_data_dir, setup_logging

    setup_logging(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.nms is not None:
        exp.nmsthre = args.nms
    if args.tsize is not None:
        exp.test_size = args.tsize
    exp.test_conf = args.conf
    try:
        device = resolve_device("hpu" if args.use_hpu else args.device)
    except RuntimeError as e:
        raise DeviceError(str(e)) from e
    data_dir = resolve_data_dir(args)
    if args.test:
        ann = Path(data_dir) / "annotations" / TESTDEV_ANN
        if not ann.is_file():
            raise FileNotFoundError(f"--test needs COCO test-dev's {ann} (and {Path(data_dir) / 'test2017'})")
        split = read_coco(data_dir, args.split or "test2017", ann_file=ann)
    else:
        split = load_dataset_split(data_dir, args.split or exp.val_split)
    if len(split.categories) != exp.num_classes:
        raise UsageError(f"{data_dir} has {len(split.categories)} categories but num_classes={exp.num_classes}; "
                         f"add `num_classes {len(split.categories)}`")
    ck = load_checkpoint(args.ckpt)
    try:
        model = build_from_checkpoint(exp, ck, args.ckpt, use_checkpoint_exp=not args.exp_file)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if exp.num_classes != len(split.categories):
        raise UsageError(f"{args.ckpt} was trained with {exp.num_classes} classes but {data_dir} has "
                         f"{len(split.categories)} categories")
    model.to(device)
    precision = "bf16" if args.autocast else "fp16" if args.fp16 else "fp32"
    amp = (lambda: autocast(device, precision)) if precision != "fp32" else None
    steps = hpu.HpuSteps() if device.type == "hpu" else None
    preproc = "legacy" if args.legacy else args.preproc
    loader = build_eval_loader(split, exp.test_size, args.batch_size, min(exp.data_num_workers, os.cpu_count() or 1),
                               preproc=preproc)
    metrics, dets = evaluate(model, loader, split, device, exp, amp=amp, steps=steps, score=not args.test)
    out = Path(args.out or Path("runs") / "eval" / exp.name)
    metrics.update(checkpoint=str(args.ckpt), preproc=preproc, test_size=list(exp.test_size))
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / (TESTDEV_RESULT if args.test else "detections.json"), dets)
    if args.test:
        print(f"test-dev: {len(dets)} detections on {metrics['images']} images written to {out / TESTDEV_RESULT}; "
              f"zip it and upload it to the COCO detection server (test-dev has no public labels)")
    return metrics


if __name__ == "__main__":
    sys.exit(main())
