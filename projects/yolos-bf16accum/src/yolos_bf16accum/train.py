"""One training run end to end: data, model, optimiser, (progressive patching), loop, logs, summary.

Both regimes share this file; they differ only in ``cfg.regime``. The progressive regime installs the
bf16-accum attention function once (a no-op until a module's flag is on) and, before every step, patches
what the schedule says for that step. The optimizer is built once, before any patching, and never
rebuilt: patching keeps every Parameter object.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from yolo_common.checkpoint import atomic_write_json

from yolos_bf16accum.config import TrainConfig

log = logging.getLogger(__name__)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, no weight decay on biases, norms and the token/position embeddings (DETR practice)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "token" in name or "position_embeddings" in name
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate)


def build_lr_scheduler(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup then cosine decay to 0, stepped per batch."""
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# The only config keys a resumed run may change: where it logs and reports, threads, and what it does after
# training or at evaluation (evaluation leaves training untouched: the SR call counters are restored around
# it). Anything else (optimisation, data, datapath, workers, device...) would change the numbers, so a
# difference is refused.
RESUME_MAY_CHANGE = ("output_dir", "resume", "num_threads", "report_to", "wandb_project", "wandb_run_name",
                     "log_every_steps", "export_onnx", "eval_aspect", "eval_shortest_edge", "eval_longest_edge",
                     "per_device_eval_batch_size")


def check_same_on_every_rank(patch_state: dict, world: int) -> None:
    """The progressive schedule is a function of the step, so every rank patches the same modules; this
    checks it at each change (one all_gather of a small string) instead of trusting it."""
    if world < 2:
        return
    import torch.distributed as dist

    mine = json.dumps(patch_state, sort_keys=True)
    states = [None] * world
    dist.all_gather_object(states, mine)
    if len(set(states)) != 1:
        raise RuntimeError(f"ranks disagree on the bf16-accum patch state: {states}")


def rng_state() -> dict:
    """The main process's torch (CPU and CUDA) / python / numpy RNG states, in weights_only-loadable form."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
            "numpy": torch.from_numpy(keys.astype("int64")), "numpy_pos": int(pos),
            "numpy_gauss": [int(has_gauss), float(gauss)]}


def set_rng_state(st: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(st["torch"])
    if st.get("cuda") and torch.cuda.is_available() and len(st["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(st["cuda"])
    random.setstate((st["python_version"], tuple(st["python"]), st["python_gauss"]))
    np.random.set_state(("MT19937", st["numpy"].numpy().astype("uint32"), st["numpy_pos"],
                         st["numpy_gauss"][0], st["numpy_gauss"][1]))


def sr_call_counts(model: torch.nn.Module) -> dict[str, int]:
    """Per-module stochastic-rounding call counters (``ste.call_spec``): saved so a resume continues the streams."""
    return {n: int(m.__dict__["bf16acc_calls"]) for n, m in model.named_modules() if "bf16acc_calls" in m.__dict__}


def set_sr_call_counts(model: torch.nn.Module, counts: dict[str, int]) -> None:
    for name, m in model.named_modules():
        if name in counts:
            m.bf16acc_calls = int(counts[name])


def resume_from(out: Path, cfg: TrainConfig, model, optimizer, lr_scheduler, state, scaler=None,
                world: int = 1) -> tuple[int, list]:
    """Loads ``<out>/checkpoints/last.pt`` (weights_only) into the run; returns (first epoch, eval history).

    Raises ValueError when there is no checkpoint, the world size differs, or a config key outside
    ``RESUME_MAY_CHANGE`` differs from the saved run's.
    """
    from yolo_common.checkpoint import load_checkpoint

    path = out / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ValueError(f"--resume: no checkpoint at {path}")
    ck = load_checkpoint(path)
    saved = ck.get("config", {})
    now = cfg.to_dict()
    diff = {k: (saved.get(k), now[k]) for k in now if k not in RESUME_MAY_CHANGE
            if k in saved and (list(saved[k]) if isinstance(saved[k], (list, tuple)) else saved[k])
            != (list(now[k]) if isinstance(now[k], (list, tuple)) else now[k])}
    if int(ck.get("world_size", 1)) != world:
        diff["world_size"] = (int(ck.get("world_size", 1)), world)
    if diff:
        raise ValueError(f"--resume: {path} was written by a run with other settings "
                         + ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in diff.items()))
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    lr_scheduler.load_state_dict(ck["lr_scheduler"])
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    state.step, state.patch_state = int(ck["step"]), dict(ck.get("patch_state") or {})
    state.epoch = int(ck["epoch"])
    set_sr_call_counts(model, ck.get("sr_calls", {}))
    if "rng" in ck:
        set_rng_state(ck["rng"])
    log.info("resumed %s: step %d, epoch %d done", path, state.step, ck["epoch"])
    return int(ck["epoch"]) + 1, list(ck.get("history", []))


def build_loaders(train_ds, eval_ds, cfg: TrainConfig, device: torch.device, rank: int = 0, world: int = 1):
    """Seeded shuffling for training: a ``DistributedSampler`` (also for one process), so the global batch
    of step t is the same images on any number of processes (rank r takes every world-th index of one
    permutation; ``set_epoch`` per epoch). Both datasets go in ``SkipUnreadable``: an image that does not
    decode is logged by name, counted over all workers (``loader.dataset.skipped``) and replaced by the
    next one (training) or dropped from its batch (evaluation: COCO then scores it as an image with no
    detections, so recall drops instead of the image vanishing)."""
    from yolo_common.data import SkipUnreadable, drop_none

    from yolos_bf16accum.data import collate

    g = torch.Generator()
    g.manual_seed(cfg.seed)
    common = dict(collate_fn=drop_none(collate), num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                  persistent_workers=cfg.num_workers > 0)
    wrapped = SkipUnreadable(train_ds, mode="replace")
    shard = -(-len(train_ds) // world)
    sampler = torch.utils.data.distributed.DistributedSampler(
        wrapped, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
        drop_last=len(train_ds) >= world * cfg.per_device_train_batch_size)
    # Training workers are not persistent: each epoch's workers are seeded from the loader's generator,
    # which run() reseeds per epoch, so an epoch's order and augmentations depend only on (seed, epoch,
    # rank) and a resumed run replays them exactly (costs one worker start per epoch).
    train = torch.utils.data.DataLoader(wrapped, batch_size=cfg.per_device_train_batch_size, sampler=sampler,
                                        drop_last=shard >= cfg.per_device_train_batch_size,
                                        generator=g, **(common | {"persistent_workers": False}))
    # its own generator: starting eval workers must not draw from the global RNG (a resumed run starts
    # them at another point of the run than an uninterrupted one)
    evl = torch.utils.data.DataLoader(SkipUnreadable(eval_ds, mode="drop"), batch_size=cfg.per_device_eval_batch_size,
                                      shuffle=False, generator=torch.Generator().manual_seed(cfg.seed + 1), **common)
    return train, evl


def evaluate_aspect(model, eval_ds, cfg: TrainConfig, device, eval_gt, labels) -> dict:
    """The final model on ``eval_ds``'s images resized aspect-preserving (batch 1: each has its own size)."""
    from yolo_common.data import SkipUnreadable, drop_none

    from yolos_bf16accum.data import DetectionDataset, collate
    from yolos_bf16accum.engine import evaluate

    dataset = DetectionDataset(eval_ds.samples, eval_ds.labels, cfg.image_size, train=False,
                               aspect=(cfg.eval_shortest_edge, cfg.eval_longest_edge))
    loader = torch.utils.data.DataLoader(SkipUnreadable(dataset, mode="drop"), batch_size=1, shuffle=False,
                                         collate_fn=drop_none(collate), num_workers=cfg.num_workers,
                                         generator=torch.Generator().manual_seed(cfg.seed + 2))
    m = evaluate(model, loader, device, eval_gt, labels.label_to_cat, precision=cfg.precision)
    log.info("aspect-preserving eval (shortest %d, longest <= %d): AP %.4f AP50 %.4f", cfg.eval_shortest_edge,
             cfg.eval_longest_edge, m["AP"], m["AP50"])
    return {k: v for k, v in m.items() if k not in ("per_class", "backend")} | {
        "shortest_edge": cfg.eval_shortest_edge, "longest_edge": cfg.eval_longest_edge}


def export_and_score(model, cfg: TrainConfig, labels, out: Path, final: dict) -> dict | None:
    """``export_onnx``: the float model -> ``<run>/export/yolos.onnx`` -> ``evaluate_onnx`` on the eval split
    (the synthetic set; other datasets are exported only, see below)."""
    from yolo_common.onnx_eval import evaluate_onnx

    from yolos_bf16accum.export import export_onnx

    if cfg.dataset == "synthetic":
        data = Path(cfg.synthetic_dir or out / "data") / "coco"
    else:
        # CPPE-5 is no folder the evaluator reads; on COCO the labels are COCO's sparse ids (91 + no-object),
        # where the evaluator maps class k to the k-th category: export only, score with the run's own eval
        log.info("export_onnx: %s is not scored by the ONNX evaluator (export only)", cfg.dataset)
        data = None
    names = [labels.id2label[i] for i in range(labels.num_labels)]
    path = export_onnx(model, cfg.image_size, names, out / "export" / "yolos.onnx")
    if data is None:
        return {"model": str(path)}
    m = evaluate_onnx(path, data, "val2017", out_dir=out / "export" / "onnx_eval", max_images=cfg.max_eval_samples,
                      batch=cfg.per_device_eval_batch_size, providers=("CPUExecutionProvider",), warmup=1,
                      progress=False)
    log.info("ONNX (float model, set contract): AP %.4f AP50 %.4f (the run's last eval: AP %.4f AP50 %.4f)",
             m["coco"]["AP"], m["coco"]["AP50"], final["AP"], final["AP50"])
    return {"model": str(path), "AP": m["coco"]["AP"], "AP50": m["coco"]["AP50"],
            "inference_ms": m["latency"]["inference_ms"]["mean"],
            "samples": write_samples(out, data, out / "export" / "onnx_eval" / "detections.json")}


def write_samples(out: Path, data: Path, detections_json: Path) -> str | None:
    """``<run>/samples/val.png``: 4 val images, ground truth next to the ONNX export's detections (score >=
    0.3), drawn by the common helper every project uses. A failure is logged, never fatal."""
    import json

    from yolo_common.data import load_split
    from yolo_common.draw import samples_grid

    try:
        split = load_split(data, "val2017")
        return samples_grid(split.records, json.loads(detections_json.read_text()), split.categories,
                            out / "samples" / "val.png", n=4)
    except Exception as e:  # pictures are a by-product: never lose the run summary over them
        log.warning("samples: not written (%s: %s)", type(e).__name__, e)
        return None


def run(cfg: TrainConfig) -> dict:
    """Trains and evaluates one run; returns (and writes) ``metrics_summary.json``'s content."""
    from yolo_common.checkpoint import CheckpointManager
    from yolo_common.device import grad_scaler, resolve_device, seed_everything
    from yolo_common.runlog import RunLogger

    from yolos_bf16accum.data import build_datasets
    from yolos_bf16accum.engine import TrainState, autocast, evaluate, train_one_epoch
    from yolos_bf16accum.layer_errors import layer_errors, summarize
    from yolos_bf16accum.model import build_model
    from yolos_bf16accum.patching import apply_patch_state, count_patched, encoder_blocks, install_attention_function
    from yolos_bf16accum.schedule import ProgressiveSchedule, parse_schedule

    from yolo_common.distributed import barrier, cleanup, init_distributed

    t_start = time.time()
    cfg.seed = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    # torchrun: one process per device, DDP; the loss is rescaled to the global batch
    # (engine.global_batch_loss), so N processes x B images train like one process with N x B.
    # rank 0 evaluates alone while the others wait in a barrier: with emulated layers on COCO that can
    # take long, so the collective timeout is generous
    info = init_distributed(device, timeout_s=6 * 3600.0)
    rank, world = info.rank, info.world_size
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    if rank == 0:
        train_ds, eval_ds, eval_gt, labels = build_datasets(cfg)
    barrier()                                   # rank 0 wrote the synthetic set; the others read it
    if rank != 0:
        train_ds, eval_ds, eval_gt, labels = build_datasets(cfg, generate=False)
    train_loader, eval_loader = build_loaders(train_ds, eval_ds, cfg, device, rank, world)
    model = build_model(cfg, labels.num_labels, labels.id2label).to(device)
    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if world > 1:
        # in-process augmentations (num_workers 0) draw from the global RNG: a different stream per rank
        # (DDP has already broadcast rank 0's initial weights)
        seed_everything(cfg.seed + 1000 * rank)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(train_loader)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.num_train_epochs * steps_per_epoch))
    num_epochs = math.ceil(total_steps / max(steps_per_epoch, 1))
    lr_scheduler = build_lr_scheduler(optimizer, total_steps, cfg.warmup_ratio)
    scaler = grad_scaler(device, cfg.precision)
    state = TrainState(total_steps=total_steps)

    schedule = None
    if cfg.regime == "progressive":
        schedule = ProgressiveSchedule(parse_schedule(cfg.schedule), total_steps, len(encoder_blocks(model)),
                                       cfg.ramp_mode, cfg.blocks_per_stage)
        install_attention_function(model)
    specs = cfg.accum_specs()
    if world > 1:   # decorrelate stochastic rounding across ranks (each rank sees other images anyway)
        specs = {k: sp.replace(seed=sp.seed + 1000003 * rank) for k, sp in specs.items()}

    def on_step(step: int) -> None:
        if schedule is None:
            return
        new = {g: list(b) for g, b in schedule.state_at(step).items()}
        if new != state.patch_state:
            counts = apply_patch_state(model, new, specs, cfg.kernel_backend)
            state.patch_state = new
            check_same_on_every_rank(new, world)
            log.info("step %d: bf16-accum now %s (%s)", step, schedule.describe(step), counts)

    start_epoch, history = 0, []
    if cfg.resume:
        start_epoch, history = resume_from(out, cfg, model, optimizer, lr_scheduler, state, scaler, world)
        if schedule is not None and state.patch_state:
            counts = apply_patch_state(model, state.patch_state, specs, cfg.kernel_backend)
            log.info("resumed patch state %s (%s)", state.patch_state, counts)
    logger = RunLogger(out, cfg.to_dict(), report_to=cfg.report_to, wandb_project=cfg.wandb_project,
                       wandb_run_name=cfg.wandb_run_name, resume_step=state.step + 1 if cfg.resume else None,
                       rank=rank)
    ckpt = CheckpointManager(logger.checkpoints_dir, higher_is_better=True) if rank == 0 else None
    log.info("%s run: %d train / %d eval images, %d steps (%d/epoch), device %s, %.2fM params", cfg.regime,
             len(train_ds), len(eval_ds), total_steps, steps_per_epoch, device,
             sum(p.numel() for p in model.parameters()) / 1e6)


    calib: list[torch.Tensor] = []      # the fixed batch of the per-layer error report (first eval batch)

    def do_eval() -> dict:
        # evaluation must not move training's stochastic-rounding streams: counters restored afterwards
        counters = sr_call_counts(model)
        try:
            return _do_eval()
        finally:
            set_sr_call_counts(model, counters)

    def _do_eval() -> dict:
        metrics = evaluate(model, eval_loader, device, eval_gt, labels.label_to_cat, precision=cfg.precision)
        patched = count_patched(model)
        layer_err = {}
        if schedule is not None:
            if not calib:
                batch = next((b for b in eval_loader if b is not None), None)
                if batch is not None:
                    calib.append(batch[0][: cfg.per_device_eval_batch_size].to(device))
            if calib and any(patched.values()):
                with autocast(device, cfg.precision):
                    errors = layer_errors(model, calib[0])
                layer_err = summarize(errors)
                logger.log_record("layer_errors", state.step, state.epoch, errors=errors)
        groups = schedule.describe(max(state.step - 1, 0)) if schedule else {}
        scalars = {k: v for k, v in metrics.items() if k not in ("per_class", "backend")}
        logger.log_eval(state.step, state.epoch, **scalars, **layer_err, patched_linears=patched["linears"],
                        patched_attention=patched["attention"],
                        **{f"bf16acc/{g}": d for g, d in groups.items()})
        log.info("eval step %d: AP %.4f AP50 %.4f loss %.4f | bf16-accum %s %s", state.step, metrics["AP"],
                 metrics["AP50"], metrics["loss"], groups or "off", patched)
        record = {"step": state.step, "epoch": state.epoch, **scalars, "per_class": metrics.get("per_class"),
                  "bf16acc_groups": groups, "patched": patched}
        history.append(record)
        return record

    def eval_on_rank0() -> dict | None:
        """Rank 0 evaluates the whole eval split; the others wait (evaluation is rare and short)."""
        record = do_eval() if rank == 0 else None
        barrier()
        return record

    eval_every = cfg.eval_every_steps
    try:
        for epoch in range(start_epoch, num_epochs):
            state.epoch = epoch
            train_loader.sampler.set_epoch(epoch)                        # the epoch's permutation
            train_loader.generator.manual_seed(cfg.seed + 7919 * epoch + 104729 * rank)   # worker seeds
            train_one_epoch(ddp, optimizer, lr_scheduler, train_loader, device, state,
                            precision=cfg.precision, scaler=scaler, max_grad_norm=cfg.max_grad_norm,
                            logger=logger, log_every=cfg.log_every_steps, on_step=on_step,
                            max_steps=total_steps, eval_fn=eval_on_rank0 if eval_every else None,
                            eval_every=eval_every, world=world)
            if not eval_every or state.step % eval_every:
                record = eval_on_rank0()
            else:
                record = history[-1] if rank == 0 else None
            if train_loader.dataset.skipped:
                log.warning("epoch %d: %s so far (replaced by the next image)", epoch,
                            train_loader.dataset.summary())
            if rank != 0:
                if state.step >= total_steps:
                    break
                continue
            ckpt.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                       "class_names": [labels.id2label[i] for i in range(labels.num_labels)],
                       "lr_scheduler": lr_scheduler.state_dict(), "step": state.step, "epoch": epoch,
                       "patch_state": state.patch_state, "config": cfg.to_dict(), "history": history,
                       "rng": rng_state(), "sr_calls": sr_call_counts(model), "world_size": world,
                       "scaler": scaler.state_dict() if hasattr(scaler, "state_dict") else {}},
                      epoch=epoch, metric=record["AP"])
            if state.step >= total_steps:
                break
    finally:
        logger.close()

    if rank != 0:           # rank 0 writes the summary and exports; the others are done
        cleanup()
        return {}
    final = history[-1]
    summary = {
        "regime": cfg.regime, "seed": cfg.seed, "model": cfg.model_config or cfg.model, "dataset": cfg.dataset,
        "precision": cfg.precision, "accum_chunk": cfg.accum_chunk if schedule else None,
        "accum": {role: sp.label for role, sp in specs.items()} if schedule else None,
        "schedule": cfg.schedule if schedule else None, "ramp_mode": cfg.ramp_mode if schedule else None,
        "total_steps": total_steps, "final_step": state.step, "epochs": state.epoch + 1,
        "final": {k: v for k, v in final.items() if k != "per_class"}, "final_per_class": final["per_class"],
        "best_AP": max(h["AP"] for h in history), "best_step": max(history, key=lambda h: h["AP"])["step"],
        "evals": [{k: h[k] for k in ("step", "AP", "AP50", "loss")} for h in history],
        "bf16acc_final_state": state.patch_state, "wall_time_s": time.time() - t_start,
        "train_images": len(train_ds), "eval_images": len(eval_ds), "world_size": world,
        "global_batch": world * cfg.per_device_train_batch_size,
        "unreadable_train_images": train_loader.dataset.skipped,
        "unreadable_eval_images": eval_loader.dataset.skipped,
    }
    if cfg.eval_aspect:
        summary["final_aspect"] = evaluate_aspect(model, eval_ds, cfg, device, eval_gt, labels)
    if cfg.export_onnx:
        summary["onnx"] = export_and_score(model, cfg, labels, out, final)
    atomic_write_json(out / "metrics_summary.json", summary)
    log.info("done in %.1f s: final AP %.4f (best %.4f) -> %s", summary["wall_time_s"], final["AP"],
             summary["best_AP"], out / "metrics_summary.json")
    cleanup()
    return summary
