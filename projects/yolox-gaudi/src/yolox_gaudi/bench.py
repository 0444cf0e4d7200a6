"""bench-yolox: where a YOLOX training step spends its time, on the current device.

    python -m yolox_gaudi.bench [--name yolox-s] [--batch 8] [--size 640] [--device auto] [--iters 5]

Splits one step into forward / assignment+loss / backward / optimizer (SGD + EMA) and prints each
part's mean time and share of the step, all measured in the same run. Inputs are random images with
10 random boxes each (SimOTA's cost depends on the box count, not on the pixels). Each part ends with
a device sync (CUDA synchronize; on HPU a mark_step + synchronize), which is what makes the parts
separable at all; the syncs themselves cost a little, so the sum is a bit above a free-running step.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m yolox_gaudi.bench", description=__doc__.splitlines()[0])
    p.add_argument("--name", default="yolox-s")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", help="fp32|fp16|bf16 (autocast over the forward)")
    p.add_argument("--iters", type=int, default=5, help="measured iterations (after 2 warm-up ones)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--loss-on-cpu", action="store_true", help="assignment + loss on the CPU (HPU default)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.device.startswith("hpu"):
        from . import hpu

        hpu.configure_env(bf16=args.precision == "bf16")

    import torch
    from yolo_common.device import autocast, resolve_device, seed_everything

    from .config import get_exp
    from .loss import YOLOXLoss
    from .model import build_model
    from .optim import ModelEMA, build_optimizer

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    device = resolve_device(args.device)
    if device.type == "hpu":
        from . import hpu

        core = hpu.import_core()

        def sync():
            core.mark_step()
            torch.hpu.synchronize()
    elif device.type == "cuda":
        sync = torch.cuda.synchronize
    else:
        def sync():
            pass
    loss_on_cpu = args.loss_on_cpu or device.type == "hpu"

    exp = get_exp(args.name)
    model = build_model(exp).to(device).train()
    opt = build_optimizer(model, exp, lr=0.01 / 64 * args.batch)
    ema = ModelEMA(model, exp.ema_decay)
    loss_fn = YOLOXLoss(exp.num_classes)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(args.batch, 3, args.size, args.size, generator=g) * 255).to(device)
    targets = torch.zeros(args.batch, 50, 5)
    n = 10
    targets[:, :n, 0] = torch.randint(0, exp.num_classes, (args.batch, n), generator=g).float()
    wh = torch.rand(args.batch, n, 2, generator=g) * args.size * 0.4 + 8
    targets[:, :n, 3:5] = wh
    targets[:, :n, 1:3] = wh / 2 + torch.rand(args.batch, n, 2, generator=g) * (args.size - wh)
    if not loss_on_cpu:
        targets = targets.to(device)
    amp = autocast(device, args.precision) if args.precision != "fp32" else None

    parts = {"forward": [], "assignment+loss": [], "backward": [], "optimizer+ema": []}
    assign_only = []
    for it in range(args.warmup + args.iters):
        sync()
        t0 = time.perf_counter()
        if amp is not None:
            with autocast(device, args.precision):
                preds, raw, grid = model(images)
        else:
            preds, raw, grid = model(images)
        sync()
        t1 = time.perf_counter()
        if loss_on_cpu:
            preds, raw, grid = preds.float().cpu(), raw.float().cpu(), grid.cpu()
        ta = time.perf_counter()
        assignments = loss_fn.assign(preds.detach().float(), targets.float(), grid.float())
        tb = time.perf_counter()
        loss = loss_fn(preds, raw, grid, targets, assignments)["total_loss"]
        sync()
        t2 = time.perf_counter()
        loss.backward()
        sync()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)
        sync()
        t4 = time.perf_counter()
        if it >= args.warmup:
            for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[k].append(dt)
            assign_only.append(tb - ta)
        # A CPU step of YOLOX-S takes tens of seconds: show that the run is alive (stderr keeps stdout's
        # table clean).
        print(f"[bench-yolox] iteration {it + 1}/{args.warmup + args.iters}"
              f"{' (warm-up)' if it < args.warmup else ''}: {(t4 - t0) * 1000:.0f} ms", file=sys.stderr, flush=True)
    means = {k: sum(v) / len(v) for k, v in parts.items()}
    total = sum(means.values())
    print(f"bench-yolox: {exp.name}, batch {args.batch}, {args.size}x{args.size}, device {device}, "
          f"{args.precision}, loss on {'cpu' if loss_on_cpu else device.type}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, {args.iters} iterations after {args.warmup} warm-up")
    print(f"{'part':<18}{'ms/step':>10}{'share':>9}")
    for k, v in means.items():
        print(f"{k:<18}{v * 1000:>10.1f}{v / total:>9.1%}")
    a = sum(assign_only) / len(assign_only)
    print(f"{'  (SimOTA alone)':<18}{a * 1000:>10.1f}{a / total:>9.1%}")
    print(f"{'step':<18}{total * 1000:>10.1f}{1:>9.0%}   -> {args.batch / total:.1f} images/s")
    return {"ms": {k: v * 1000 for k, v in means.items()}, "share": {k: v / total for k, v in means.items()},
            "images_per_s": args.batch / total}


if __name__ == "__main__":
    main()
