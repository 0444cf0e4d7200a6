"""``bench-hyper``: the issue's three ratios, each against a baseline measured in the same run.

    python -m yolov9001.bench [--imgsz 640] [--images 64] [--steps 5] [--no-compile] [--json out.json]

1. Data loader, mosaic + affine (translate/scale) + HSV + flip at ``--imgsz`` from a RAM cache: samples/s of
   this project's dataset vs ultralytics' ``build_yolo_dataset`` with the same augmentation values on the same
   images (a spawned child process; skipped with a message when ultralytics is absent). Goal >= 1.5x.
2. Train step of Hyper-YOLO-N, eager vs ``--compile`` (inductor), per phase.
3. The HyperComputeModule's share of an eval forward.
4. The full data path (workers + ``DeviceBatches``) at ``--imgsz``: images/s with the CPU augmentation vs the
   device augmentation (``gpu_collate``, plus ``cuda_prefetch`` on CUDA), and the H2D bytes per image of each.
   On a CPU the device ops run on the CPU too, so the ratio is the cost of that path; on a GPU it is the point.
The images are the synthetic set at ``--imgsz`` x 3/4 ``--imgsz`` (photo-like 4:3), written to a temp folder.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
from yolo_common.device import resolve_device
from yolo_common.synthetic import make_synthetic

from .core.benchmark import bench_dataset, bench_pipeline, bench_train_step, hcm_share, latency_ms, ultralytics_rate
from .core.config import get_config
from .core.optim import build_optimizer
from .core.runtime import attach_runtime
from .models import build_model
from .utils.dataloaders import create_dataloader
from .utils.loss import DetectionLoss

AUG = {"mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0, "degrees": 0.0, "translate": 0.1, "scale": 0.5,
       "shear": 0.0, "perspective": 0.0, "fliplr": 0.5, "flipud": 0.0, "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=640, help="data-loader side (the issue's 640)")
    ap.add_argument("--train-imgsz", type=int, default=None, help="train-step side (default: 640 on CUDA, 320 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="train-step batch (default: 16 on CUDA, 4 on CPU)")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--samples", type=int, default=128, help="augmented samples timed per loader")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--pipeline-batch", type=int, default=16, help="part 4: batch size")
    ap.add_argument("--pipeline-workers", type=int, default=2, help="part 4: DataLoader workers")
    ap.add_argument("--pipeline-batches", type=int, default=8, help="part 4: timed batches per path")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    timg = args.train_imgsz or (640 if cuda else 320)
    batch = args.batch or (16 if cuda else 4)
    out: dict = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench_hyper_") as tmp:
        data = make_synthetic(tmp, layouts=("yolo",), num_train=args.images, num_val=4,
                              image_size=(args.imgsz, args.imgsz * 3 // 4), seed=0)["yolo"].parent
        cfg = get_config(hyp={**AUG, "imgsz": args.imgsz, "epochs": 100, "workers": 0})
        _, ds = create_dataloader(data, "train", cfg, augment=True, cache="ram", progress=False)
        ours = bench_dataset(ds, args.samples)
        out["loader"] = {"ours_samples_s": ours}
        theirs, why = ultralytics_rate(data, "train", cfg, args.samples)
        if theirs is None:
            print(f"[bench-hyper] ultralytics row skipped: {why}")
            out["loader"]["ultralytics"] = f"skipped: {why}"
        else:
            out["loader"].update(ultralytics_samples_s=theirs, ratio=ours / theirs)
        print(f"[bench-hyper] loader @{args.imgsz} (mosaic+affine+HSV+flip, RAM cache): ours {ours:.1f} samples/s"
              + (f", ultralytics {theirs:.1f} samples/s, ratio {ours / theirs:.2f}x (goal >= 1.5x)" if theirs else ""))

        out["pipeline"] = bench_data_path(data, args, device)

        tcfg = get_config(hyp={**AUG, "imgsz": timg, "batch_size": batch, "workers": 0, "nc": 3})
        loader, _ = create_dataloader(data, "train", tcfg, augment=True, cache="ram", progress=False)
        model = build_model(tcfg.to_dict()).to(device)
        attach_runtime(model, timg, tcfg)
        loss_fn = DetectionLoss(model, tcfg)
        opt = build_optimizer(model, tcfg, batch, 1)
        eager = bench_train_step(model, loss_fn, opt, loader, device, args.steps)
        out["train_step"] = {"imgsz": timg, "batch": batch, "eager_ms": eager}
        x = torch.rand(batch, 3, timg, timg, device=device)
        out["hcm_share_of_forward"] = hcm_share(model, x)
        out["latency_ms"] = {"b1": latency_ms(model, x[:1], device), f"b{batch}": latency_ms(model, x, device)}
        print(f"[bench-hyper] train step @{timg} b{batch} eager: " +
              ", ".join(f"{k} {v:.1f} ms" for k, v in eager.items()))
        out["dino"] = bench_dino(model, loss_fn, opt, loader, device, args, tcfg, timg, eager["total"])
        print(f"[bench-hyper] HCM share of the eval forward: {out['hcm_share_of_forward']:.1%}")
        if not args.no_compile:
            from .core.trainer import compile_model

            cm = compile_model(model, device)
            t = time.perf_counter()
            bench_train_step(cm, loss_fn, opt, loader, device, 1)
            first = time.perf_counter() - t
            comp = bench_train_step(cm, loss_fn, opt, loader, device, args.steps)
            out["train_step"].update(compiled_ms=comp, compile_first_steps_s=first,
                                     ratio_eager_over_compiled=eager["total"] / comp["total"])
            print(f"[bench-hyper] train step compiled: {comp['total']:.1f} ms (first 2 steps {first:.0f} s); "
                  f"eager / compiled = {eager['total'] / comp['total']:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return out


def bench_data_path(data, args, device) -> dict:
    """Part 4: CPU augmentation vs device augmentation, same hyp, cache, workers and batch."""
    cuda = device.type == "cuda"
    common = {**AUG, "imgsz": args.imgsz, "epochs": 100, "batch_size": args.pipeline_batch,
              "workers": args.pipeline_workers, "cache": "ram"}
    rows = {}
    # with mosaic every sample is already a full S x S canvas; without it (close_mosaic epochs) the device path
    # ships the unpadded image and its H2D bytes drop by the letterbox's share
    for phase, extra in (("mosaic", {}), ("no_mosaic", {"mosaic": 0.0})):
        for name, over in (("cpu_aug", {}), ("device_aug", {"gpu_collate": True, "cuda_prefetch": cuda})):
            rows[f"{phase}/{name}"] = bench_pipeline(data, get_config(hyp={**common, **extra, **over}), device,
                                                     args.pipeline_batches)
        c, d = rows[f"{phase}/cpu_aug"], rows[f"{phase}/device_aug"]
        ratio = d["images_s"] / c["images_s"]
        rows[f"{phase}/ratio_device_over_cpu"] = ratio
        print(f"[bench-hyper] full data path ({phase}) @{args.imgsz} b{args.pipeline_batch}, {args.pipeline_workers} "
              f"workers, on {device}: CPU aug {c['images_s']:.1f} img/s ({c['h2d_bytes_per_image'] / 1e3:.0f} kB/img "
              f"H2D), device aug {d['images_s']:.1f} img/s ({d['h2d_bytes_per_image'] / 1e3:.0f} kB/img H2D): "
              f"ratio {ratio:.2f}x" + ("" if cuda else " (device ops on the CPU here: the cost of the path)"))
    return rows


def bench_dino(model, loss_fn, opt, loader, device, args, tcfg, timg: int, base_ms: float) -> dict:
    """Train step with the DINOv3 teacher (every_n 1; low.yaml's terms + feature distillation) over the step
    without it. CPU: the tiny random teacher in fp32. CUDA: a random-init ViT-B/16 (the default teacher's
    shape; timing does not depend on the weights, which are gated) in fp16, and int8 when torchao is there."""
    from .core.distiller import Distiller

    rows = [("tiny-random", "fp32")] if device.type != "cuda" else [("vitb16-random", "fp16"),
                                                                  ("vitb16-random", "int8")]
    out = {}
    for name, quant in rows:
        cfg = copy.deepcopy(tcfg)
        cfg.dino = dataclasses.replace(cfg.dino, enabled=True, model_name=name, quant=quant, resolution=timg,
                                       objfor02=True, reg_weight_with_saliency=True, centroid_align=True,
                                       feat_distill=True)
        try:
            dist = Distiller(cfg, model, device)
            ms = bench_train_step(model, DetectionLoss(model, cfg), opt, loader, device, args.steps, distiller=dist)
            dist.close()
        except Exception as e:  # e.g. int8 without torchao: report the row as skipped, keep the bench going
            print(f"[bench-hyper] DINO {name} {quant}: skipped ({type(e).__name__}: {str(e)[:120]})")
            out[f"{name}/{quant}"] = f"skipped: {type(e).__name__}"
            continue
        out[f"{name}/{quant}"] = {"ms": ms, "ratio_over_no_teacher": ms["total"] / base_ms}
        print(f"[bench-hyper] train step with DINO teacher {name} ({quant}) @{timg}: {ms['total']:.1f} ms "
              f"(teacher {ms['teacher']:.1f} ms) = {ms['total'] / base_ms:.2f}x the step without it")
    return out


if __name__ == "__main__":
    main()
