#!/usr/bin/env python
"""Shows, picture by picture and by a machine check, that every augmentation keeps boxes on their objects.

Default mode runs two suites. Each starts from the base hyp (``--hyp``, else the defaults), sets every
augmentation magnitude to 0, and then turns one knob per case:

- ``cpu_ops/``: the DataLoader's CPU transforms: mosaic, mixup, copy-paste;
- ``gpu_ops/``: the batch ops of ``gpu_collate``: affine terms, flips, HSV and a combination. They run on
  CUDA when present, else on the CPU; the overlay names the device.

Each case writes ``--samples`` pictures ``<case>_<k>.jpg``. A picture is a grid of ``--cpu-batch`` /
``--gpu-batch`` canvases, with the YOLO-normalised boxes drawn back and the hyp values and timings overlaid.
It also runs the box-mask check of ``yolov9001.utils.aug_checks`` and appends one row to ``checks.csv``.
A case that fails the check is named at the end, and the tool exits 1.

``--full-pipeline`` runs the training DataLoader as configured: the hyp as given, plus the workers,
prefetch, ``--gpu-collate``, ``--cuda-prefetch`` and cache flags. It writes ``full_pipeline/pipeline_<k>.jpg``
grids, a per-batch ``metrics.csv`` and the same check over the whole pipeline.

    python tools/validate_augmentations.py --data /path/to/dataset --hyp models/hyps/low.yaml --cpu-batch 1 --gpu-batch 4
    python tools/validate_augmentations.py --data /path/to/dataset --full-pipeline --batch-size 32 --num-workers 8 \\
        --prefetch-factor 2 --gpu-collate --cuda-prefetch --img-size 640 --cache ram --ram-compress
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from yolov9001.core.config import ConfigError, get_config  # noqa: E402
from yolov9001.utils import aug_checks as C  # noqa: E402
from yolov9001.utils.batches import DeviceBatches, batch_nbytes  # noqa: E402
from yolov9001.utils.dataloaders import create_dataloader  # noqa: E402
from yolo_common.data import UnreadableImage  # noqa: E402

from yolov9001.utils.dataset import DetectionDataset  # noqa: E402
from yolov9001.utils.datasets import load_dataset_split  # noqa: E402
from yolov9001.utils.device_collate import DeviceCollate, is_packed, pack_collate  # noqa: E402
from yolov9001.utils.progress import bar  # noqa: E402

# every augmentation magnitude the suites set to 0 before turning one knob on
ZEROED = ("degrees", "translate", "scale", "shear", "perspective", "fliplr", "flipud", "hsv_h", "hsv_s", "hsv_v",
          "mosaic", "mixup", "copy_paste")
CPU_CASES = [("mosaic_only", {"mosaic": 1.0}), ("mixup_only", {"mixup": 1.0}), ("copy_paste_only", {"copy_paste": 1.0})]
GPU_CASES = [
    ("rotate_symmetric_deg_30", {"degrees": 30.0}),
    ("translate_0.2", {"translate": 0.2}),
    ("scale_0.5", {"scale": 0.5}),
    ("shear_10", {"shear": 10.0}),
    ("perspective_0.0005", {"perspective": 0.0005}),
    ("fliplr", {"fliplr": 1.0}),
    ("flipud", {"flipud": 1.0}),
    ("hsv", {"hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4}),
    ("combo", {"degrees": 10.0, "translate": 0.1, "scale": 0.5, "shear": 2.0, "fliplr": 0.5, "hsv_h": 0.015,
               "hsv_s": 0.7, "hsv_v": 0.4}),
]
PASS_FRACTION = 0.95   # of the judged boxes, on their objects
MIN_RECALL = 0.8       # of the object pixels, inside some kept box
METRICS = ["batch", "warmup", "images", "cpu_fetch_ms", "gpu_total_ms", "gpu_aug_ms", "gpu_letterbox_ms", "h2d_bytes",
           "h2d_bytes_per_image", "buffer_depth", "cuda_mem_allocated_mb", "cuda_mem_reserved_mb",
           "cuda_mem_max_allocated_mb", "cache_hits", "cache_misses", "item_load_ms", "item_letterbox_ms",
           "item_cpu_aug_ms", "boxes"]
CHECKS = ["suite", "case", "device", "images", "skipped", "boxes", "boxes_judged", "boxes_ok", "fraction_ok", "recall",
          "min_fill", "boxes_match_mask_run", "boxes_match_cpu_path", "passed", "ms_per_image"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="dataset root (YOLO or COCO layout, as create_dataloader reads); "
                    "'synthetic': generate yolo_common's synthetic set (48 images, 4:3) under --out/synthetic")
    ap.add_argument("--split", default="train")
    ap.add_argument("--hyp", default=None, help="hyp YAML to seed the settings (default: the built-in defaults)")
    ap.add_argument("--cpu-batch", type=int, default=1, help="canvases per picture in the cpu_ops suite")
    ap.add_argument("--gpu-batch", type=int, default=4, help="batch size (canvases per picture) of the gpu_ops suite")
    ap.add_argument("--full-pipeline", action="store_true", help="the end-to-end DataLoader path instead of the suites")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--prefetch-factor", type=int, default=2)
    ap.add_argument("--gpu-collate", action="store_true")
    ap.add_argument("--cuda-prefetch", action="store_true")
    ap.add_argument("--buffer-depth", type=int, default=2, help="batches the CUDA prefetcher keeps in flight")
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--cache", choices=("none", "ram", "disk", "hybrid"), default="none")
    ap.add_argument("--ram-compress", action="store_true", help="keep the cache's images lz4-compressed")
    ap.add_argument("--samples", type=int, default=2, help="pictures per case (suites) or grids (full pipeline)")
    ap.add_argument("--per-grid", type=int, default=8, help="canvases per full-pipeline grid")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda[:N]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="aug_outcomes")
    return ap.parse_args(argv)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def min_fill(cfg) -> float:
    """A rotated / sheared / warped box is the hull of a turned rectangle: its fill falls with angle and aspect
    ratio (0.19 for an 8:1 bar at 30 degrees), so only a low floor there; the edge test does the work."""
    return 0.1 if (cfg.degrees or cfg.shear or cfg.perspective) else 0.7


def knob_text(cfg, keys) -> str:
    return " ".join(f"{k}={getattr(cfg, k):g}" for k in keys)


def _boxes_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.float().cpu(), b.float().cpu(), atol=1e-3))


def result_row(suite, case, device, n, skipped, check: C.BoxCheck, cfg, match: bool, match_cpu, ms) -> dict:
    passed = (match and match_cpu is not False and check.judged > 0 and check.fraction >= PASS_FRACTION
              and check.recall >= MIN_RECALL)
    return {"suite": suite, "case": case, "device": device, "images": n, "skipped": skipped, "boxes": check.boxes,
            "boxes_judged": check.judged, "boxes_ok": check.ok, "fraction_ok": round(check.fraction, 4),
            "recall": round(check.recall, 4), "min_fill": min_fill(cfg), "boxes_match_mask_run": match,
            "boxes_match_cpu_path": "" if match_cpu is None else match_cpu, "passed": passed, "ms_per_image": ms}


class Suites:
    """Default mode: one-knob cases on the CPU ops and on the device ops."""

    def __init__(self, args, base, split, device):
        self.args, self.base, self.split, self.device = args, base, split, device
        self.names = split.class_names
        self.rows: list[dict] = []
        self.images_written = 0
        self.skipped: set[str] = set()

    def case_cfg(self, over: dict):
        cfg = dataclasses.replace(self.base, **{k: 0.0 for k in ZEROED})
        return dataclasses.replace(cfg, **over)

    def run(self, suite: str, cases) -> None:
        out = Path(self.args.out) / suite
        out.mkdir(parents=True, exist_ok=True)
        for name, over in bar(cases, desc=suite, unit="case"):
            cfg = self.case_cfg(over)
            if suite == "cpu_ops":
                self._cpu_case(name, cfg, over, out)
            else:
                self._gpu_case(name, cfg, over, out)

    def _dataset(self, cls, cfg, device_mode: bool):
        return cls(self.split, cfg, self.args.img_size, augment=True, seed=self.args.seed, device_mode=device_mode)

    def _items(self, k: int, per: int, *datasets):
        """``per`` readable samples for picture k from each dataset (an unreadable file is skipped, named once)."""
        out, i, tried = [], k * per, 0
        while len(out) < per and tried < len(self.split):
            j = i % len(self.split)
            i, tried = i + 1, tried + 1
            try:
                out.append(tuple(ds[j] for ds in datasets))
            except UnreadableImage as e:
                if str(e) not in self.skipped:
                    print(f"skipped: {e}", file=sys.stderr)
                self.skipped.add(str(e))
        return out

    def _cpu_case(self, name, cfg, over, out):
        ds, mask_ds = self._dataset(DetectionDataset, cfg, False), self._dataset(C.BoxMaskDataset, cfg, False)
        check, match, t_total, n = C.BoxCheck(), True, 0.0, 0
        for k in range(self.args.samples):
            tiles = []
            for (img, target, meta), (mimg, mtarget, _) in self._items(k, self.args.cpu_batch, ds, mask_ds):
                match &= _boxes_equal(target, mtarget)
                check.add(C.check_boxes(mimg.numpy(), mtarget[:, 1:].numpy(), min_fill(cfg)))
                times = meta["times_ms"]
                t_total += times["load"] + times["letterbox"] + times["cpu_aug"]
                tiles.append(C.annotate(img.numpy(), target[:, 1:].numpy(), target[:, 0].long().tolist(), self.names, [
                    f"{name} [cpu]  {knob_text(cfg, over)}",
                    f"load {times['load']:.1f} ms  aug {times['cpu_aug']:.1f} ms  boxes {len(target)}"]))
                n += 1
            if tiles:
                C.grid(tiles).save(out / f"{name}_{k + 1}.jpg", quality=90)
                self.images_written += 1
        self.rows.append(result_row("cpu_ops", name, "cpu", n, len(self.skipped), check, cfg, match, None,
                                    round(t_total / max(n, 1), 3)))

    def _gpu_case(self, name, cfg, over, out):
        ds = self._dataset(DetectionDataset, cfg, True)
        mask_ds = self._dataset(C.BoxMaskDataset, cfg, True)
        cpu_ds = self._dataset(DetectionDataset, cfg, False)   # the CPU ops, same draws: same boxes expected
        collate = DeviceCollate(self.args.img_size, cfg.pad_value, self.device, profile=True)
        mask_collate = DeviceCollate(self.args.img_size, 0, self.device, colour=False)
        check, match, match_cpu, t_total, n = C.BoxCheck(), True, True, 0.0, 0
        for k in range(self.args.samples):
            items = self._items(k, self.args.gpu_batch, ds, mask_ds, cpu_ds)
            if not items:
                continue
            x, targets, _ = collate(pack_collate([a for a, _, _ in items]))
            ms = collate.last_ms
            t_total += sum(ms.values())
            mx, mtargets, _ = mask_collate(pack_collate([b for _, b, _ in items]))
            match &= _boxes_equal(targets, mtargets)
            imgs = (x * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
            masks = (mx * 255).permute(0, 2, 3, 1).cpu().numpy()
            targets, mtargets = targets.cpu(), mtargets.cpu()
            tiles = []
            for j, (_, _, (_, cpu_t, _)) in enumerate(items):
                t = targets[targets[:, 0] == j]
                mt = mtargets[mtargets[:, 0] == j]
                match_cpu &= _boxes_equal(t[:, 1:], cpu_t)
                check.add(C.check_boxes(masks[j], mt[:, 2:].numpy(), min_fill(cfg)))
                tiles.append(C.annotate(imgs[j], t[:, 2:].numpy(), t[:, 1].long().tolist(), self.names, [
                    f"{name} [{self.device}]  {knob_text(cfg, over)}",
                    f"batch {len(items)}: h2d {ms['h2d']:.1f} ms  letterbox {ms['letterbox']:.1f} ms  "
                    f"aug {ms['aug']:.1f} ms"]))
                n += 1
            C.grid(tiles).save(out / f"{name}_{k + 1}.jpg", quality=90)
            self.images_written += 1
        self.rows.append(result_row("gpu_ops", name, str(self.device), n, len(self.skipped), check, cfg, match,
                                    match_cpu, round(t_total / max(n, 1), 3)))


def full_pipeline(args, base, device, rows: list[dict]) -> int:
    """The training DataLoader as configured; returns the number of grids written. The timed pass runs alone;
    the box-mask loader (same sampler, same draws) runs after it, so it does not load the CPU being measured."""
    over = {"batch_size": args.batch_size, "workers": args.num_workers, "prefetch_factor": args.prefetch_factor,
            "gpu_collate": args.gpu_collate, "cuda_prefetch": args.cuda_prefetch, "buffer_depth": args.buffer_depth,
            "imgsz": args.img_size, "cache": args.cache, "cache_compression": "lz4" if args.ram_compress else "none",
            "close_mosaic": 0, "seed": args.seed}
    cfg = dataclasses.replace(base, **over)
    out = Path(args.out) / "full_pipeline"
    out.mkdir(parents=True, exist_ok=True)
    loader, ds = create_dataloader(args.data, args.split, cfg, augment=True, progress=True)
    batches = DeviceBatches(loader, cfg, device, profile=True)
    source = iter(batches.prefetcher if batches.prefetcher is not None else loader)
    n_batches = min(args.samples + 1, len(loader))   # the first one includes the worker start-up (warmup=1)
    kept, written = [], 0
    with (out / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, METRICS)
        w.writeheader()
        for b in bar(range(n_batches), desc="full pipeline", unit="batch"):
            t0 = time.perf_counter()
            batch = next(source)
            t1 = time.perf_counter()
            metas = batch["metas"] if is_packed(batch) else batch[2]
            nbytes = batch_nbytes(batch)
            x, targets, _ = batches.convert(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t2 = time.perf_counter()
            ms = batches.collate.last_ms if is_packed(batch) else {}
            kept.append(targets.cpu())
            times = [m["times_ms"] for m in metas]
            mem = {}
            if device.type == "cuda":
                mb = 2 ** 20
                mem = {"cuda_mem_allocated_mb": round(torch.cuda.memory_allocated(device) / mb, 1),
                       "cuda_mem_reserved_mb": round(torch.cuda.memory_reserved(device) / mb, 1),
                       "cuda_mem_max_allocated_mb": round(torch.cuda.max_memory_allocated(device) / mb, 1)}
            reads = ds.cache.reads
            w.writerow({"batch": b, "warmup": int(b == 0), "images": len(x), "cpu_fetch_ms": round((t1 - t0) * 1e3, 3),
                        "gpu_total_ms": round((t2 - t1) * 1e3, 3), "gpu_aug_ms": round(ms.get("aug", 0.0), 3),
                        "gpu_letterbox_ms": round(ms.get("letterbox", 0.0), 3), "h2d_bytes": nbytes,
                        "h2d_bytes_per_image": nbytes // max(len(x), 1),
                        "buffer_depth": cfg.buffer_depth if cfg.cuda_prefetch else 0,
                        "cuda_mem_allocated_mb": "", "cuda_mem_reserved_mb": "", "cuda_mem_max_allocated_mb": "",
                        **mem, "cache_hits": reads["hits"], "cache_misses": reads["misses"],
                        **{f"item_{k}_ms": round(float(np.mean([t[k] for t in times])), 3)
                           for k in ("load", "letterbox", "cpu_aug")},
                        "boxes": len(targets)})
            if (b >= 1 or n_batches == 1) and written < args.samples:   # grids from the timed batches
                imgs = (x * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()
                t_cpu = targets.cpu()
                tiles = []
                for j in range(min(args.per_grid, len(x))):
                    t = t_cpu[t_cpu[:, 0] == j]
                    tiles.append(C.annotate(imgs[j], t[:, 2:].numpy(), t[:, 1].long().tolist(), ds.split.class_names, [
                        f"pipeline [{device}] gpu_collate={cfg.gpu_collate} cuda_prefetch={cfg.cuda_prefetch}",
                        f"fetch {(t1 - t0) * 1e3:.1f} ms  device {(t2 - t1) * 1e3:.1f} ms  cache {cfg.cache}"]))
                C.grid(tiles).save(out / f"pipeline_{written + 1}.jpg", quality=90)
                written += 1
    del source
    # the check: the same sampler order and draws over box masks (no cache, HSV off)
    mask_cfg = dataclasses.replace(cfg, cache="none", cache_compression="none")
    mask_loader, _ = create_dataloader(args.data, args.split, mask_cfg, augment=True, progress=False,
                                       dataset_cls=C.BoxMaskDataset)
    mask_batches = DeviceBatches(mask_loader, mask_cfg, device)
    mask_batches.collate.pad_value, mask_batches.collate.colour = 0, False
    check, match = C.BoxCheck(), True
    for targets, (mx, mtargets, _) in zip(kept, mask_batches):
        match &= _boxes_equal(targets, mtargets)
        mimgs = (mx * 255).permute(0, 2, 3, 1).cpu().numpy()
        mtargets = mtargets.cpu()
        for j in range(len(mx)):
            check.add(C.check_boxes(mimgs[j], mtargets[mtargets[:, 0] == j][:, 2:].numpy(), min_fill(cfg)))
    rows.append(result_row("full_pipeline", "pipeline", str(device), sum(len(t[:, 0].unique()) for t in kept),
                           int(ds.skipped), check, cfg, match, None, ""))
    return written


def print_table(rows: list[dict], keys: list[str]) -> None:
    """The common Markdown table (the same one summary.md files use), on stdout."""
    from yolo_common.runlog import markdown_table

    print(markdown_table(rows, headers=keys, floatfmt=".4g"))


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    if args.data == "synthetic":
        from yolo_common.synthetic import make_synthetic

        root = Path(args.out) / "synthetic"
        if not (root / "yolo" / "data.yaml").is_file():
            make_synthetic(root, layouts=("yolo",), num_train=48, num_val=8,
                           image_size=(args.img_size, args.img_size * 3 // 4), seed=args.seed)
        args.data = str(root / "yolo")
    try:
        base = get_config(hyp_path=args.hyp) if args.hyp else get_config()
        base = dataclasses.replace(base, augment=True, imgsz=args.img_size, close_mosaic=0, seed=args.seed)
        split = load_dataset_split(args.data, args.split)
        if not len(split):
            raise ValueError(f"--data {args.data}: split {args.split!r} has no images")
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if args.full_pipeline:
        written = full_pipeline(args, base, device, rows)
    else:
        suites = Suites(args, base, split, device)
        suites.run("cpu_ops", CPU_CASES)
        suites.run("gpu_ops", GPU_CASES)
        rows, written = suites.rows, suites.images_written
    with (Path(args.out) / "checks.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, CHECKS)
        w.writeheader()
        w.writerows(rows)
    print()
    print_table(rows, ["suite", "case", "device", "images", "boxes_judged", "boxes_ok", "fraction_ok", "recall",
                       "min_fill", "boxes_match_mask_run", "boxes_match_cpu_path", "passed"])
    failed = [r["case"] for r in rows if not r["passed"]]
    print()
    print_table([{"cases": len(rows), "images_written": written, "failures": len(failed),
                  "seconds": round(time.time() - t0, 1), "out": args.out}],
                ["cases", "images_written", "failures", "seconds", "out"])
    if failed:
        print(f"FAILED: {', '.join(failed)}: boxes do not stay on their objects (see {Path(args.out) / 'checks.csv'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
