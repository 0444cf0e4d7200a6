"""Inference FPS (batch 1, next to the paper's 45 FPS) and training throughput of the paper network at 448:
eager vs ``torch.compile``, as a ratio.

    python -m yolov1.bench                     # CPU: batch 1, 1 warm-up + 2 timed steps per mode (minutes)
    python -m yolov1.bench --batch 64 --steps 20 --device cuda

One training step = forward + the paper loss + backward + SGD step, on random images and a fixed random
target set (data loading is not measured: this is the model's speed). Both modes run in the same
process on the same device with the same weights, so the ratio is meaningful even on a busy machine;
the absolute images/s is not, there. Compilation time is reported separately and excluded from the
timed steps. If ``torch.compile`` fails (no C++ compiler for inductor, an unsupported platform), the
eager number is still printed with the error, and the exit status stays 0.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .engine import build_optimizer
from .loss import build_loss
from .model import build_detector
from .targets import collate_targets, encode_targets


def _batch(n: int, S: int, B: int, C: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 64 * S, 64 * S, generator=g)
    targets = []
    for _ in range(n):
        k = 3
        boxes = torch.cat([torch.rand(k, 2, generator=g) * 0.8 + 0.1, torch.rand(k, 2, generator=g) * 0.4 + 0.05], 1)
        targets.append(encode_targets(boxes, torch.randint(0, C, (k,), generator=g), S, B, C))
    t = {k: v.to(device) for k, v in collate_targets(targets).items()}
    return x.to(device), t


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(model, criterion, x, t, steps: int, warmup: int, device) -> dict:
    """Times ``steps`` training steps after ``warmup`` untimed ones; returns images/s and times."""
    # lr 0: the SGD update is still computed and applied, but the weights stay put, so every timed step
    # does the same work on the same numbers (random inputs with a real lr blow the weights up).
    opt = build_optimizer(model, 0.0)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(x), t).total
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    dt = time.perf_counter() - t0
    return {"images_per_s": steps * len(x) / dt, "step_s": dt / steps, "warmup_s": t_warm, "loss": float(loss.detach())}


PAPER_FPS = 45.0   # the paper's YOLOv1 at 448 on a Titan X (Table 1)


@torch.no_grad()
def inference_fps(model, size: int, device, steps: int) -> dict:
    """Batch-1 forward passes per second at ``size`` (fp32; fp16 and bf16 autocast on CUDA), with the ratio
    to the paper's 45 FPS. The model is put back in train mode afterwards."""
    x = torch.rand(1, 3, size, size, device=device)
    dtypes = [("fp32", None)] + ([("fp16", torch.float16), ("bf16", torch.bfloat16)] if device.type == "cuda" else [])
    out = {}
    model.eval()
    try:
        for name, dt in dtypes:
            ctx = torch.autocast(device.type, dtype=dt) if dt is not None else contextlib.nullcontext()
            with ctx:
                model(x)   # warm-up (cuDNN autotune, allocator)
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(steps):
                    model(x)
                _sync(device)
            fps = steps / (time.perf_counter() - t0)
            out[name] = {"fps": fps, "ratio_to_paper_45fps": fps / PAPER_FPS}
            print(f"inference {size}px batch 1 {name}: {fps:.2f} FPS = {fps / PAPER_FPS:.3f}x the paper's "
                  f"{PAPER_FPS:.0f} FPS (Titan X)")
    finally:
        model.train()
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m yolov1.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--batch", type=int, default=None, help="default: 1 on CPU, 32 on GPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per mode (default: 2 on CPU, 20 on GPU)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per mode (compilation happens here)")
    ap.add_argument("--S", type=int, default=7)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--infer-steps", type=int, default=None, help="timed batch-1 forwards (default 3 CPU, 50 GPU)")
    ap.add_argument("--json", default=None, help="also write the result here")
    a = ap.parse_args(argv)
    from yolo_common.device import resolve_device

    device = resolve_device(a.device)
    on_cpu = device.type == "cpu"
    batch = a.batch or (1 if on_cpu else 32)
    steps = a.steps or (2 if on_cpu else 20)
    torch.manual_seed(0)
    B, C = 2, 20
    eager = build_detector(a.S, B, C, width=a.width, hidden=a.hidden).to(device)
    criterion = build_loss(a.S, B, C)
    x, t = _batch(batch, a.S, B, C, device)
    print(f"YOLOv1 {64 * a.S}px, width {a.width}, batch {batch}, {steps} timed steps on {device} "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")
    res = {"device": str(device), "batch": batch, "steps": steps, "input": 64 * a.S, "torch": torch.__version__}
    res["inference"] = inference_fps(eager, 64 * a.S, device, a.infer_steps or (3 if on_cpu else 50))
    compiled_src = copy.deepcopy(eager)  # same weights for both modes
    res["eager"] = measure(eager, criterion, x, t, steps, a.warmup, device)
    print(f"eager:    {res['eager']['images_per_s']:.3f} images/s ({res['eager']['step_s']:.2f} s/step)")
    del eager
    try:
        compiled = torch.compile(compiled_src)
        res["compiled"] = measure(compiled, criterion, x, t, steps, a.warmup, device)
        res["speedup"] = res["compiled"]["images_per_s"] / res["eager"]["images_per_s"]
        print(f"compiled: {res['compiled']['images_per_s']:.3f} images/s ({res['compiled']['step_s']:.2f} s/step; "
              f"compile + warm-up {res['compiled']['warmup_s']:.0f} s)")
        print(f"speedup torch.compile / eager: {res['speedup']:.2f}x")
    except Exception as e:  # inductor raises many types (BackendCompilerFailed, CalledProcessError, ...)
        msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        res["compiled"] = None
        res["compile_error"] = msg
        print(f"torch.compile failed, only the eager number is valid: {msg}")
    if a.json:
        out = Path(a.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return res


if __name__ == "__main__":
    main()
