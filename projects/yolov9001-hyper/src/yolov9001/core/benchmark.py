"""``benchmark`` mode: where the time goes, measured in one process, printed as numbers and ratios.

1. data: augmented samples/s of this project's dataset (mosaic + affine + HSV + flip, RAM cache), and, when
   ultralytics is installed, of ultralytics' ``build_yolo_dataset`` with the same augmentation set on the
   same images (ultralytics is only the baseline; its row is skipped with a message where it is absent);
2. train step split into data / forward / loss+assign / backward / optimizer (mean ms of ``steps`` steps
   after warm-up), and the HyperComputeModule's share of the forward;
3. inference latency at batch 1 and batch N, eager and (``--compile``) torch.compile.
"""

from __future__ import annotations

import logging
import time

import torch

from ..models import build_model
from ..utils.dataloaders import create_dataloader
from ..utils.batches import DeviceBatches
from ..utils.loss import DetectionLoss
from .optim import build_optimizer
from .runtime import attach_runtime

log = logging.getLogger("yolov9001.bench")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_dataset(ds, n: int) -> float:
    """Samples/s of ``ds[i]`` for i in 0..n-1 (single process: per-sample CPU cost)."""
    ds[0]
    t = time.perf_counter()
    for i in range(n):
        ds[i % len(ds)]
    return n / (time.perf_counter() - t)


def _ultralytics_rate(img_dir: str, over: dict, n: int) -> float:
    """Runs in a spawned child: importing ultralytics patches ``PIL.Image.open`` process-wide (and may try to
    pip-install plugins on an unreadable file), which must never leak into this project's process."""
    import os
    import tempfile

    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolov9001_ul_"))
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    names = {i: f"class_{i}" for i in range(1000)}
    ds = build_yolo_dataset(get_cfg(overrides=over), img_dir, 16, {"names": names, "nc": len(names), "channels": 3},
                            mode="train", stride=32)
    return bench_dataset(ds, n)


def ultralytics_rate(data, split_name: str, cfg, n: int) -> tuple[float | None, str]:
    """ultralytics' training dataset with the same augmentation values, samples/s (or None, reason)."""
    import importlib.util
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from pathlib import Path

    if importlib.util.find_spec("ultralytics") is None:
        return None, "ultralytics not installed (pip install 'yolov9001-hyper[bench]' adds the baseline row)"
    img_dir = Path(data) / "images" / split_name
    if not img_dir.is_dir():
        return None, f"the ultralytics baseline needs a YOLO layout (no {img_dir})"
    over = {"imgsz": cfg["imgsz"], "mosaic": 1.0, "mixup": 0.0, "copy_paste": 0.0, "degrees": cfg["degrees"],
            "translate": cfg["translate"], "scale": cfg["scale"], "shear": cfg["shear"],
            "perspective": cfg["perspective"], "fliplr": cfg["fliplr"], "flipud": cfg["flipud"],
            "hsv_h": cfg["hsv_h"], "hsv_s": cfg["hsv_s"], "hsv_v": cfg["hsv_v"], "cache": "ram",
            "close_mosaic": 0, "plots": False}
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_ultralytics_rate, str(img_dir), over, n).result(), ""


def bench_train_step(model, loss_fn, optimizer, loader, device, steps: int = 5, distiller=None) -> dict:
    """Mean ms per phase over ``steps`` steps (after one warm-up step); with a ``core.distiller.Distiller``
    the DINOv3 teacher runs every step (its time is the ``teacher`` phase) and the loss gets its terms."""
    model.train()
    times = {k: 0.0 for k in ("data", "forward", "teacher", "loss_assign", "backward", "optimizer")}
    batches = DeviceBatches(loader, loader.dataset.cfg, device)
    it = iter(batches)
    for s in range(steps + 1):
        t0 = time.perf_counter()
        try:
            x, targets, metas = next(it)
        except StopIteration:
            it = iter(batches)
            x, targets, metas = next(it)
        _sync(device)
        t1 = time.perf_counter()
        feats = model(x)
        _sync(device)
        t2 = time.perf_counter()
        dino = distiller.batch(x, [m["index"] for m in metas], 0, 0) if distiller is not None else None
        _sync(device)
        tt = time.perf_counter()
        loss, _ = loss_fn(feats, targets, dino=dino) if dino is not None else loss_fn(feats, targets)
        _sync(device)
        t3 = time.perf_counter()
        loss.backward()
        _sync(device)
        t4 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t5 = time.perf_counter()
        if s:
            for k, a, b in (("data", t0, t1), ("forward", t1, t2), ("teacher", t2, tt), ("loss_assign", tt, t3),
                            ("backward", t3, t4), ("optimizer", t4, t5)):
                times[k] += (b - a) * 1000 / steps
    times["total"] = sum(times.values())
    return times


def bench_pipeline(data, cfg, device, batches: int = 8) -> dict:
    """Full data path as training runs it (DataLoader workers, then ``DeviceBatches`` to the model input on
    ``device``): images/s over ``batches`` batches, and the bytes per image that the host -> device copy
    moves. The first ``workers x prefetch_factor + 1`` batches are dropped (they were prepared while the
    workers started, and would flatter the path); epochs repeat as needed, as in training. The device work is
    synchronised, so the time is what a step would wait for."""
    loader, _ = create_dataloader(data, "train", cfg, augment=True, progress=False)
    source = DeviceBatches(loader, cfg, device)

    def forever():
        while True:
            yield from source

    it = forever()
    for _ in range(cfg["workers"] * cfg["prefetch_factor"] + 1):
        next(it)
    _sync(device)
    bytes0, n = source.h2d_bytes, 0
    t = time.perf_counter()
    for _ in range(batches):
        x, _, _ = next(it)
        n += len(x)
    _sync(device)
    return {"images_s": n / (time.perf_counter() - t), "h2d_bytes_per_image": (source.h2d_bytes - bytes0) / max(n, 1)}


@torch.no_grad()
def hcm_share(model, x) -> float:
    """Fraction of an eval forward spent inside the HyperComputeModule(s) (forward hooks, wall clock)."""
    spent = [0.0]
    starts = {}
    hooks = []
    for m in model.hyper_modules():
        hooks.append(m.register_forward_pre_hook(lambda mod, inp: starts.__setitem__(id(mod), time.perf_counter())))
        hooks.append(m.register_forward_hook(
            lambda mod, inp, out: spent.__setitem__(0, spent[0] + time.perf_counter() - starts[id(mod)])))
    model.eval()
    model(x)
    spent[0] = 0.0
    t = time.perf_counter()
    for _ in range(3):
        model(x)
    total = time.perf_counter() - t
    for h in hooks:
        h.remove()
    return spent[0] / total


@torch.no_grad()
def latency_ms(model, x, device, runs: int = 5) -> float:
    model.eval()
    model(x)
    _sync(device)
    t = time.perf_counter()
    for _ in range(runs):
        model(x)
    _sync(device)
    return (time.perf_counter() - t) * 1000 / runs


def run_benchmark(cfg, data: str, device, *, compile: bool = False, steps: int = 5, samples: int = 64) -> dict:
    """All rows above; returns them as a dict (the CLI prints and saves it)."""
    out: dict = {"device": str(device), "imgsz": cfg["imgsz"], "batch": cfg["batch_size"]}
    loader, ds = create_dataloader(data, "train", cfg, augment=True, cache="ram")
    out["data_ours_samples_s"] = bench_dataset(ds, samples)
    rate, why = ultralytics_rate(data, ds.split.split, cfg, samples)
    if rate is None:
        out["data_ultralytics"] = f"skipped: {why}"
        print(f"[bench] ultralytics loader row skipped: {why}")
    else:
        out["data_ultralytics_samples_s"] = rate
        out["data_ratio_ours_vs_ultralytics"] = out["data_ours_samples_s"] / out["data_ultralytics_samples_s"]
    cfg.nc = cfg.nc or len(ds.split.class_names)
    model = build_model(cfg.to_dict()).to(device)
    attach_runtime(model, cfg["imgsz"], cfg)
    loss_fn = DetectionLoss(model, cfg)
    opt = build_optimizer(model, cfg, cfg["batch_size"], 1)
    out["train_step_eager_ms"] = bench_train_step(model, loss_fn, opt, loader, device, steps)
    x1 = torch.rand(1, 3, cfg["imgsz"], cfg["imgsz"], device=device)
    xn = torch.rand(cfg["batch_size"], 3, cfg["imgsz"], cfg["imgsz"], device=device)
    out["hcm_share_of_forward"] = hcm_share(model, xn)
    out["latency_b1_eager_ms"] = latency_ms(model, x1, device)
    out["latency_bN_eager_ms"] = latency_ms(model, xn, device)
    if compile:
        from .trainer import compile_model

        cm = compile_model(model, device)
        t = time.perf_counter()
        bench_train_step(cm, loss_fn, opt, loader, device, 1)
        out["compile_first_step_s"] = time.perf_counter() - t
        out["train_step_compiled_ms"] = bench_train_step(cm, loss_fn, opt, loader, device, steps)
        out["train_step_ratio_eager_vs_compiled"] = (out["train_step_eager_ms"]["total"] /
                                                     out["train_step_compiled_ms"]["total"])
        out["latency_bN_compiled_ms"] = latency_ms(cm, xn, device)
    return out
