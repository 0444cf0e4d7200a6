"""The training run: device and process group, data, model, optimiser, the epoch loop, checkpoints.

``run(args, exp)`` is what ``python -m yolox_gaudi.train`` calls once the HPU variables are set and the
ranks are started. Only rank 0 writes (logs, checkpoints) and evaluates; the others wait at a barrier.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from yolo_common.checkpoint import CheckpointManager, atomic_write_json, load_checkpoint
from yolo_common.device import autocast, grad_scaler, resolve_device, seed_everything
from yolo_common.distributed import barrier, cleanup, init_distributed
from yolo_common.runlog import RunLogger

from . import hpu
from .config import exp_to_dict
from .data import CocoSource, TrainDataset, build_eval_loader, build_train_loader, load_dataset_split
from .engine import TrainState, evaluate, train_one_epoch
from .loss import YOLOXLoss
from .model import build_model, load_pretrained
from .optim import LRScheduler, ModelEMA, build_optimizer, load_optimizer_state, optimizer_param_names

log = logging.getLogger("yolox_gaudi")


def setup_logging(is_main: bool) -> None:
    """Progress lines on rank 0 only (the CLI's choice; the library never configures logging)."""
    if not log.handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False


def resolve_data_dir(args) -> str:
    """``--data_dir``, else ``$YOLOX_DATADIR``, else ``./datasets/COCO`` (the port's three ways)."""
    from .train import DEFAULT_DATA_DIR

    return args.data_dir or os.environ.get("YOLOX_DATADIR") or DEFAULT_DATA_DIR


def all_reduce_norm(module: torch.nn.Module) -> None:
    """Averages BatchNorm running statistics over ranks, so rank 0's evaluation sees every rank's data."""
    from yolo_common.distributed import all_reduce_mean, get_world_size

    if get_world_size() == 1:
        return
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            for buf in (m.running_mean, m.running_var):
                buf.copy_(all_reduce_mean(buf))


class DeviceError(RuntimeError):
    """The requested device is not there (the message says why); the CLI prints it without a traceback."""


class UsageError(ValueError):
    """A command that cannot work as given (class count, batch split...); printed without a traceback."""


def checkpoint_state(model, ema, optimizer, state: TrainState, exp, seed: int, global_batch: int,
                     class_names: list[str] | None = None) -> dict:
    """Megvii's keys (``model`` = EMA weights, ``optimizer``, ``start_epoch``, ``best_ap``) + what an exact
    resume needs (the raw training weights, EMA update count, iteration, seed)."""
    raw = model.module if hasattr(model, "module") else model
    return {
        "model": (ema.ema if ema is not None else raw).state_dict(),
        "train_model": raw.state_dict(),
        "optimizer": optimizer.state_dict(),
        "optimizer_param_names": optimizer_param_names(optimizer, raw),   # resume maps state by name
        "start_epoch": state.epoch,
        "iteration": state.iteration,
        # A `steps N` stop inside an epoch: how far into it, so --resume runs the rest of that epoch.
        # sampler_offset counts samples of the epoch's global permutation (any world size can resume).
        "epoch_iter": state.epoch_iter,
        "sampler_offset": state.epoch_iter * global_batch,
        "global_batch": global_batch,
        "best_ap": state.best_ap,
        "ema_updates": ema.updates if ema is not None else 0,
        "exp": exp_to_dict(exp),
        "seed": seed,
        "class_names": list(class_names or []),    # for demo / eval of the checkpoint alone
    }


def run(args, exp) -> dict:
    """Trains per ``exp``; returns the last evaluation's metrics (rank 0) or ``{}``.

    Imported only after ``train.main`` has set the HPU variables (this module imports torch).
    """
    from .train import precision_of

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device("hpu" if args.use_hpu else args.device)
    except RuntimeError as e:
        raise DeviceError(str(e)) from e
    try:
        info = init_distributed(device, backend=args.dist_backend)
    except ValueError as e:
        raise UsageError(f"--dist-backend: {e}") from None
    try:
        return _run(args, exp, device, info, precision_of(args))
    finally:
        cleanup()


def _run(args, exp, device, info, precision: str) -> dict:
    setup_logging(info.is_main)
    if args.devices and info.world_size > 1 and args.devices != info.world_size:
        raise UsageError(f"--devices {args.devices} but the launcher started {info.world_size} processes")
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    if args.batch_size % info.world_size:
        raise UsageError(f"--batch-size {args.batch_size} (global) is not divisible by {info.world_size} processes")
    batch_per_rank = args.batch_size // info.world_size
    seed = seed_everything(args.seed)

    # Megvii names the run after the experiment file when there is one
    exp_file = getattr(args, "exp_file", None)
    run_root = Path(exp.output_dir) / (args.experiment_name or (Path(exp_file).stem if exp_file else exp.name))
    data_dir = resolve_data_dir(args)
    if args.synthetic:
        data_dir = str(run_root / "synthetic" / "coco")
        if info.is_main:
            from yolo_common.synthetic import make_synthetic

            make_synthetic(run_root / "synthetic", layouts=("coco",), num_train=args.synthetic_images,
                           num_val=max(args.synthetic_images // 4, 4), image_size=args.synthetic_size, seed=seed)
        barrier()
    try:
        train_split = load_dataset_split(data_dir, exp.train_split, verify=exp.verify_images)
        val_split = load_dataset_split(data_dir, exp.val_split, verify=exp.verify_images)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if len(train_split.categories) != exp.num_classes:
        ann = train_split.annotation_files[0] if train_split.annotation_files else data_dir
        raise UsageError(f"{ann} has {len(train_split.categories)} categories but num_classes={exp.num_classes}; "
                         f"add `num_classes {len(train_split.categories)}` to the command")

    loss_on_cpu = args.loss_on_cpu if args.loss_on_cpu is not None else device.type == "hpu"
    steps = hpu.HpuSteps() if device.type == "hpu" else hpu.NoSteps()  # lazy from PT_HPU_LAZY_MODE
    amp = (lambda: autocast(device, precision)) if precision != "fp32" else None
    scaler = grad_scaler(device, precision) if device.type == "cuda" and precision == "fp16" else None

    model = build_model(exp)
    if exp.sync_bn and info.world_size > 1:
        from .syncbn import convert_sync_bn

        model = convert_sync_bn(model, device)
    if args.ckpt and not args.resume:
        ck = load_checkpoint(args.ckpt)
        skipped = load_pretrained(model, ck.get("model", ck))
        log.info("loaded %s (%d tensors not loaded%s)", args.ckpt, len(skipped),
                 f", e.g. {skipped[:3]}" if skipped else "")
    model.to(device)

    cache = None
    if args.cache:
        from .cache import ImageCache, default_cache_dir, local_world_size

        # Every rank of a node holds its own ram copy: MemAvailable is shared among them, and every rank
        # checks before any fills. The disk cache is written by local rank 0 only; the others attach.
        cache = ImageCache(train_split.records, args.cache, cache_dir=default_cache_dir(exp.output_dir, data_dir,
                           exp.train_split), headroom=0.8 / local_world_size())
        # Every step that can fail on one rank is agreed on by all ranks before any of them waits at a
        # barrier (a rank that raised alone would leave the others blocked there).
        agree = _all_ranks_ok(device, info.world_size)
        error = None
        try:
            if args.cache == "ram":
                cache.check_memory()
            elif info.local_rank == 0:
                cache.fill()
        except MemoryError as e:
            error = str(e)
        if not agree(error is None):
            raise UsageError(error or "--cache: another rank could not build its image cache (see its log)")
        if args.cache == "ram":
            cache.fill(check_memory=False)
        elif info.local_rank != 0:
            cache.attach()
    source = CocoSource(train_split, cache)
    dataset = TrainDataset(source, exp, seed)
    loader = build_train_loader(dataset, batch_per_rank, info.rank, info.world_size, seed, exp.data_num_workers)
    iters_per_epoch = len(loader)
    if iters_per_epoch == 0:
        raise UsageError(f"{len(source)} training images are fewer than one global batch of {args.batch_size}")
    lr = exp.basic_lr_per_img * args.batch_size
    lr_fn = LRScheduler(exp, lr, iters_per_epoch)
    optimizer = build_optimizer(model, exp, lr, hpu.fused_sgd_class() if device.type == "hpu" else None)
    state = TrainState(input_size=tuple(int(v) for v in exp.input_size))

    ckpts = CheckpointManager(run_root / "checkpoints", keep_history=-1 if exp.save_history_ckpt else 0)
    ema_updates = 0
    if args.resume:
        path = args.ckpt or ckpts.last_path
        ck = load_checkpoint(path)
        try:
            model.load_state_dict(ck.get("train_model", ck["model"]))
            load_optimizer_state(optimizer, model, ck["optimizer"], ck.get("optimizer_param_names"))
            state.epoch = int(ck["start_epoch"])
        except KeyError as e:
            raise UsageError(f"cannot resume from {path}: it has no {e} entry (a weights-only file? use --ckpt "
                             f"without --resume to start from its weights)") from None
        except (RuntimeError, ValueError) as e:
            raise UsageError(f"cannot resume from {path} with {exp.name} ({exp.num_classes} classes): {e}. "
                             f"Use --ckpt without --resume to start a new run from its weights.") from None
        # Megvii's checkpoints have no iteration count: its trainer resumes at start_epoch x iters/epoch
        # (and sets the EMA's update count to the same), which keeps the LR schedule where it was.
        state.iteration = int(ck.get("iteration", state.epoch * iters_per_epoch))
        state.best_ap = float(ck.get("best_ap", 0.0))
        ema_updates = int(ck.get("ema_updates", state.iteration))
        saved_batch = ck.get("global_batch")
        if saved_batch is not None and int(saved_batch) != args.batch_size:
            # iteration counts, the LR schedule and the sampler offset are all in units of the saved batch
            raise UsageError(f"{path} was trained with --batch-size {saved_batch}; resume it with the same "
                             f"global batch (got {args.batch_size})")
        state.epoch_iter = int(ck.get("sampler_offset", 0)) // args.batch_size
        if args.start_epoch is not None:
            state.epoch, state.epoch_iter = args.start_epoch, 0
        log.info("resumed %s at epoch %d, iteration %d%s", path, state.epoch + 1, state.iteration,
                 f" ({state.epoch_iter}/{iters_per_epoch} of the epoch done)" if state.epoch_iter else "")
    ema = None
    if exp.ema:
        fused = hpu.fused_ema_class() if device.type == "hpu" else None
        ema = (fused or ModelEMA)(model, exp.ema_decay)
        ema.updates = ema_updates
        if args.resume:
            ema.ema.load_state_dict(ck["model"])
    for g in optimizer.param_groups:
        g["lr"] = lr_fn(state.iteration)

    train_model = model
    if info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # broadcast_buffers=False: each rank keeps its own BN statistics (averaged before eval), as the port.
        train_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                          broadcast_buffers=False, gradient_as_bucket_view=True)
        num_fg_reduce = _reduce_via(device)
    else:
        num_fg_reduce = None
    loss_fn = YOLOXLoss(exp.num_classes, num_fg_reduce=num_fg_reduce, simota_rule=exp.simota_rule)

    config = {"exp": exp_to_dict(exp), "args": vars(args), "seed": seed, "device": str(device),
              "precision": precision, "world_size": info.world_size, "launcher": info.launcher,
              "batch_per_rank": batch_per_rank, "lr": lr, "iters_per_epoch": iters_per_epoch,
              "loss_on_cpu": loss_on_cpu, "data_dir": str(data_dir), "cache": args.cache,
              "dist_backend": info.backend or args.dist_backend, "hpu_lazy": getattr(steps, "lazy", None),
              "hpu_env": {k: v for k, v in os.environ.items() if k.startswith("PT_HPU_")}}
    # Records are logged at "iterations done": a resume from iteration I trims the killed run's records
    # after I from the JSONL logs and purges TensorBoard from I + 1 on, so every step appears once.
    run = RunLogger(run_root, config, rank=info.rank, report_to="wandb" if args.logger == "wandb" else None,
                    wandb_project="yolox-gaudi", wandb_run_name=run_root.name,
                    resume_step=state.iteration + 1 if args.resume else None)
    eval_loader = build_eval_loader(val_split, exp.test_size, batch_per_rank, exp.data_num_workers)
    log.info("%s on %s x%d (%s), global batch %d, %d iters/epoch, lr %.4g, run folder %s",
             exp.name, device, info.world_size, precision, args.batch_size, iters_per_epoch, lr, run_root)

    max_iters = exp.steps if exp.steps > 0 else None
    metrics: dict = {}
    onnx_metrics: dict = {}
    try:
        while state.epoch < exp.max_epoch:
            epoch = state.epoch
            no_aug = epoch >= exp.no_aug_start_epoch
            dataset.epoch = epoch
            dataset.enable_mosaic = not no_aug
            loss_fn.use_l1 = no_aug
            loader.sampler.set_epoch(epoch)
            loader.sampler.skip = state.epoch_iter * batch_per_rank   # > 0 only in a resumed epoch
            t0 = time.perf_counter()
            stats = train_one_epoch(train_model, loss_fn, optimizer, loader, device, epoch=epoch, exp=exp,
                                    state=state, lr_fn=lr_fn, ema=ema, steps=steps, amp=amp, scaler=scaler,
                                    loss_on_cpu=loss_on_cpu, multiscale=not args.noresize, seed=seed, run=run,
                                    global_batch=args.batch_size, max_iters=max_iters, is_main=info.is_main)
            loader.sampler.skip = 0
            complete = state.epoch_iter >= iters_per_epoch
            if complete:
                state.epoch, state.epoch_iter = state.epoch + 1, 0
            stopping = max_iters is not None and state.iteration >= max_iters
            log.info("average throughput for epoch_%d: %.1f img/sec (%.0f s)%s", epoch + 1, stats["images_per_s"],
                     time.perf_counter() - t0, "" if complete else f", stopped at iteration {state.epoch_iter}")
            if loader.dataset.skipped:
                log.warning("rank %d: %s so far", info.rank, loader.dataset.summary())
            last = state.epoch >= exp.max_epoch or stopping
            do_eval = stopping or (complete and (no_aug or last or state.epoch % exp.eval_interval == 0))
            ap = None
            if do_eval:
                eval_model = ema.ema if ema is not None else model
                all_reduce_norm(eval_model)
                if info.is_main:
                    metrics, dets = evaluate(eval_model, eval_loader, val_split, device, exp, amp=amp, steps=steps)
                    ap = metrics["AP"]
                    state.best_ap = max(state.best_ap, ap)
                    run.log_eval(state.iteration, state.epoch, **{k: v for k, v in metrics.items()
                                                                  if isinstance(v, float)})
                    atomic_write_json(run.root / "eval" / "metrics.json", metrics)
                    atomic_write_json(run.root / "eval" / "detections.json", dets)
                    log.info("eval epoch %d: AP %.4f AP50 %.4f (%.1f img/s)", state.epoch, ap, metrics["AP50"],
                             metrics["total_images_per_s"])
                barrier()
            if info.is_main:
                ckpts.save(checkpoint_state(model, ema, optimizer, state, exp, seed, args.batch_size,
                                            train_split.class_names),
                           epoch=state.epoch, metric=ap if complete else None, history=complete)
            barrier()
            if stopping:
                log.info("stopping after %d iterations (steps %d)", state.iteration, exp.steps)
                break
        if info.is_main and exp.export_onnx and metrics and state.epoch >= exp.max_epoch:
            onnx_metrics = export_and_score(ema.ema if ema is not None else model, exp, run.root, data_dir,
                                            val_split, metrics)
    finally:
        if info.is_main and metrics:
            rows = [{"metric": k, "value": v} for k, v in metrics.items() if isinstance(v, float)]
            if onnx_metrics:
                rows += [{"metric": f"ONNX {k} (yolo_common.onnx_eval)", "value": onnx_metrics["coco"][k]}
                         for k in ("AP", "AP50", "AP75")]
            pictures = write_samples(run.root, val_split, bool(onnx_metrics))
            run.write_summary({"Evaluation (EMA weights)": rows, "Pictures": pictures,
                               "Run": [{"model": exp.name, "epochs": state.epoch, "iterations": state.iteration,
                                        "device": str(device), "precision": precision,
                                        "world_size": info.world_size, "seed": seed,
                                        "unreadable train image loads (this rank, whole run)": loader.dataset.skipped,
                                        "unreadable val images": metrics.get("unreadable_images", 0)}]},
                              title=f"{exp.name} on {device}")
        run.close()
    return metrics


def write_samples(root: Path, val_split, from_onnx: bool) -> str:
    """``samples/val.png``: the first val images, ground truth next to predictions (the ONNX evaluator's
    detections when the run exported, else the last evaluation's); the Markdown linking it and the curves."""
    import json

    from yolo_common.draw import samples_grid

    src = root / "export" / "onnx_eval" / "detections.json" if from_onnx else root / "eval" / "detections.json"
    try:
        dets = json.loads(src.read_text())
        samples_grid(val_split.records, dets, val_split.categories, root / "samples" / "val.png", n=4)
    except (OSError, ValueError) as e:
        log.warning("samples: not written (%s)", e)
        return "no samples (see the log)"
    return (f"- [samples/val.png](samples/val.png): 4 val images, ground truth | predictions (score >= 0.3, "
            f"from {'the ONNX export' if from_onnx else 'the EMA model'})\n"
            f"- [curves/loss.png](curves/loss.png): the training losses")


def export_and_score(model, exp, root: Path, data_dir, val_split, torch_metrics: dict) -> dict:
    """``export_onnx True``: the EMA model -> ``<run>/export/<name>.onnx`` -> ``evaluate_onnx`` on the val
    split; logs both APs (they agree to ~1e-4: same letterbox, decode and NMS). VOC roots are skipped
    (the ONNX evaluator reads one split by name, not joined VOC sets)."""
    if val_split.layout != "coco":
        log.info("export_onnx: skipped the ONNX evaluation (%s layout)", val_split.layout)
        return {}
    from yolo_common.onnx_eval import evaluate_onnx

    from .export import export_onnx

    path = export_onnx(model.cpu() if next(model.parameters()).device.type != "cpu" else model, exp,
                       root / "export" / f"{exp.name}.onnx", val_split.class_names)
    m = evaluate_onnx(path, data_dir, exp.val_split, out_dir=root / "export" / "onnx_eval", batch=8,
                      providers=("CPUExecutionProvider",), warmup=1, progress=False)
    log.info("ONNX %s: AP %.4f AP50 %.4f (torch: AP %.4f AP50 %.4f), %.1f ms/img on %s", path.name, m["coco"]["AP"],
             m["coco"]["AP50"], torch_metrics["AP"], torch_metrics["AP50"], m["latency"]["inference_ms"]["mean"],
             m["provider"])
    return m


def _all_ranks_ok(device, world_size: int):
    """``agree(ok) -> bool``: True only when every rank passes True (a collective, so every rank calls it)."""
    if world_size == 1:
        return lambda ok: bool(ok)
    reduce = _reduce_via(device)
    return lambda ok: bool(reduce(torch.tensor(1.0 if ok else 0.0)) > 0.999)


def _reduce_via(device):
    """Averages a CPU scalar over ranks through ``device`` (hccl/nccl only reduce device tensors)."""
    from yolo_common.distributed import all_reduce_mean

    def reduce(t: torch.Tensor) -> torch.Tensor:
        return all_reduce_mean(t.to(device)).to(t.device)

    return reduce


__all__ = ["all_reduce_norm", "checkpoint_state", "resolve_data_dir", "run"]
