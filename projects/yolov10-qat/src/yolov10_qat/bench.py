"""bench-qat: one training step (forward + E2E loss + backward + SGD step) of the W4 model vs the float model.

Same model YAML, same random init (the W4 model is a quantized deepcopy of the float one), same batch of
synthetic images and boxes, same device, one process; steps alternate float/W4 so drift in machine load hits
both. Prints mean/median step time of each and the ratio W4 / float; on CUDA the same again under AMP (fp16
autocast + GradScaler, as the trainer runs it). Speed is measured here, never in tests.

    python -m yolov10_qat bench                      # cpu: yolov10m, 320 px, batch 2
    python -m yolov10_qat bench --device cuda        # 640 px, batch 16, fp32 and AMP
"""

from __future__ import annotations

import statistics
import time
from copy import deepcopy

import torch


def synthetic_batch(batch: int, imgsz: int, nc: int, device, seed: int = 0) -> dict:
    """A detection batch in ultralytics' format: img in [0,1], 3 boxes per image (normalised xywh)."""
    g = torch.Generator().manual_seed(seed)
    n = 3 * batch
    xy = torch.rand(n, 2, generator=g) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=g) * 0.3 + 0.05
    return {"img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
            "cls": torch.randint(0, nc, (n, 1), generator=g).float().to(device),
            "bboxes": torch.cat([xy, wh], 1).to(device),
            "batch_idx": torch.arange(batch).repeat_interleave(3).float().to(device)}


def build_pair(model_yaml: str, nc: int, scheme: str, device):
    """(float model, W4 model) with identical weights, both in train mode with ultralytics' default hyp."""
    from ._env import ultralytics_env

    ultralytics_env()  # before ultralytics' first import (settings file, offline mode)
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from .quant import layer_bits, quantize_model

    fp = DetectionModel(model_yaml, nc=nc, verbose=False)
    fp.args = get_cfg()
    q = deepcopy(fp)
    quantize_model(q, layer_bits(q, scheme))
    return fp.to(device).train(), q.to(device).train()


def _step(model, opt, scaler, batch, amp: bool, device) -> None:
    from yolo_common.device import autocast

    with autocast(device, "fp16" if amp else "fp32"):
        loss, _ = model(batch)
    scaler.scale(loss.sum()).backward()
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)


def time_steps(models: dict, batch: dict, device, *, amp: bool, steps: int, warmup: int,
               verbose: bool = False) -> dict[str, list[float]]:
    """Per-step wall times for each model, steps interleaved (one progress line per round when verbose)."""
    from yolo_common.device import grad_scaler

    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.937, nesterov=True) for k, m in models.items()}
    scalers = {k: grad_scaler(device, "fp16" if amp else "fp32") for k in models}  # enabled only for fp16 on cuda
    times = {k: [] for k in models}
    for i in range(warmup + steps):
        for k, m in models.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            _step(m, opts[k], scalers[k], batch, amp, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
            if i >= warmup:
                times[k].append(dt)
            if verbose:
                tag = "warmup" if i < warmup else f"step {i - warmup + 1}/{steps}"
                print(f"  [{'amp' if amp else 'fp32'}] {tag} {k}: {dt:.3f} s", flush=True)
    return times


def run_bench(model_yaml: str = "yolov10m.yaml", device: str = "auto", imgsz: int | None = None,
              batch: int | None = None, steps: int | None = None, warmup: int = 2, scheme: str = "w4",
              verbose: bool = False) -> list[dict]:
    """Run the benchmark; returns one row per precision with times (s) and the W4/float ratio."""
    from yolo_common.device import resolve_device, seed_everything

    from ._env import ultralytics_env

    ultralytics_env()
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    imgsz = imgsz or (640 if cuda else 320)
    batch = batch or (16 if cuda else 2)
    steps = steps or (30 if cuda else 5)
    seed_everything(0)
    fp, q = build_pair(model_yaml, 80, scheme, dev)
    data = synthetic_batch(batch, imgsz, 80, dev)
    rows = []
    for amp in ([False, True] if cuda else [False]):
        t = time_steps({"float": fp, "w4": q}, data, dev, amp=amp, steps=steps, warmup=warmup, verbose=verbose)
        f_mean, q_mean = statistics.fmean(t["float"]), statistics.fmean(t["w4"])
        rows.append({"precision": "amp-fp16" if amp else "fp32", "device": str(dev), "model": model_yaml,
                     "imgsz": imgsz, "batch": batch, "steps": steps,
                     "float_s": f_mean, "w4_s": q_mean, "float_median_s": statistics.median(t["float"]),
                     "w4_median_s": statistics.median(t["w4"]), "ratio_w4_over_float": q_mean / f_mean})
    return rows


def main(a) -> list[dict]:
    from yolo_common.runlog import markdown_table

    rows = run_bench(a.model, a.device, a.imgsz, a.batch, a.steps, a.warmup, verbose=True)
    print(markdown_table(rows, headers=["precision", "device", "model", "imgsz", "batch", "steps", "float_s",
                                        "w4_s", "ratio_w4_over_float"], floatfmt=".3f"))
    for r in rows:
        print(f"bench-qat [{r['precision']}, {r['device']}]: W4 training step {r['w4_s']:.3f} s vs float "
              f"{r['float_s']:.3f} s -> ratio {r['ratio_w4_over_float']:.2f}x")
    return rows
