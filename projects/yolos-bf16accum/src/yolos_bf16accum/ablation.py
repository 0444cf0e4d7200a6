"""Eval-only ablation: a trained or pretrained model evaluated with each group patched in turn and all together.

    python train_yolos_progressive_bf16accum_ste.py --eval_only --ablate attn,mlp,qkv,head,patch_embed \
        [--init_checkpoint runs/x/checkpoints/best.pt] [--ablate_seeds 3] [the datapath flags]

Configurations: ``none`` (the float model, fp32 accumulation), one per group (every block of that group
patched with the run's datapath), and ``all`` (every listed group). Each row gives COCO AP/AP50, the eval
loss, and the AP change relative to ``none`` (as the upstream experiment's table does). ``--ablate_seeds
N`` repeats each patched configuration with N stochastic-rounding seeds and reports mean ± the 95%
t-interval (with RNE/RTZ the datapath is deterministic: the interval is 0, and the table says so).
Writes ``<output_dir>/ablation.{md,json,csv}``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from yolo_common.checkpoint import atomic_write_bytes, atomic_write_json

from yolos_bf16accum.config import TrainConfig

log = logging.getLogger(__name__)

# two-sided 95% Student-t quantiles for n - 1 degrees of freedom (n = 2..10); normal beyond
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def parse_groups(text: str) -> list[str]:
    from yolos_bf16accum.patching import GROUPS

    groups = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if not groups or bad:
        raise ValueError(f"bad --ablate {text!r}: expected a comma list of {', '.join(GROUPS)}")
    if len(set(groups)) != len(groups):
        raise ValueError(f"bad --ablate {text!r}: a group is listed twice")
    return groups


def interval95(values: Sequence[float]) -> float:
    """Half-width of the 95% t-interval of the mean (0 for one value)."""
    if len(values) < 2:
        return 0.0
    t = _T95.get(len(values) - 1, 1.96)
    return t * statistics.stdev(values) / math.sqrt(len(values))


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """A run's checkpoint (``{"model": state_dict, ...}``) or a bare state dict, loaded safely."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a checkpoint with a model state dict")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def run_ablation(cfg: TrainConfig, groups: Sequence[str], seeds: int = 1,
                 init_checkpoint: str | None = None) -> dict:
    """Evaluates every configuration; writes and returns the table (see the module docstring)."""
    from yolo_common.device import resolve_device, seed_everything

    from yolos_bf16accum.data import build_datasets
    from yolos_bf16accum.engine import evaluate
    from yolos_bf16accum.model import build_model
    from yolos_bf16accum.patching import BLOCK_GROUPS, apply_patch_state, encoder_blocks, install_attention_function
    from yolos_bf16accum.train import build_loaders

    if seeds < 1:
        raise ValueError(f"--ablate_seeds must be >= 1, got {seeds}")
    t0 = time.time()
    cfg.seed = seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_ds, eval_ds, eval_gt, labels = build_datasets(cfg)
    _, eval_loader = build_loaders(train_ds, eval_ds, cfg, device)
    model = build_model(cfg, labels.num_labels, labels.id2label)
    if init_checkpoint:
        load_weights(model, init_checkpoint)
    model = model.to(device)
    install_attention_function(model)
    n = len(encoder_blocks(model))

    def state_for(gs):
        return {g: (range(n) if g in BLOCK_GROUPS else [0]) for g in gs}

    configs = [("none", [])] + [(g, [g]) for g in groups] + ([("all", list(groups))] if len(groups) > 1 else [])
    stochastic = cfg.rounding == "sr"
    rows = []
    for i, (name, gs) in enumerate(configs):
        runs = []
        for s in range(seeds if (gs and stochastic) else 1):
            specs = cfg.accum_specs()
            if s:
                specs = {k: sp.replace(seed=sp.seed + 1000003 * s) for k, sp in specs.items()}
            apply_patch_state(model, state_for(gs), specs, cfg.kernel_backend)
            m = evaluate(model, eval_loader, device, eval_gt, labels.label_to_cat, precision=cfg.precision)
            runs.append(m)
        ap = [r["AP"] for r in runs]
        row = {"config": name, "groups": "+".join(gs) or "-", "seeds": len(runs),
               "per_seed": [{"AP": r["AP"], "AP50": r["AP50"], "loss": r["loss"]} for r in runs],
               "AP": statistics.fmean(ap), "AP ±95%": interval95(ap),
               "AP50": statistics.fmean(r["AP50"] for r in runs), "eval loss": statistics.fmean(r["loss"] for r in runs)}
        rows.append(row)
        log.info("ablation %d/%d %s: AP %.4f AP50 %.4f loss %.4f", i + 1, len(configs), name, row["AP"], row["AP50"],
                 row["eval loss"])
    apply_patch_state(model, {}, 1)
    base = rows[0]["AP"]
    for r in rows:
        r["ΔAP"] = r["AP"] - base
        r["AP rel %"] = 100.0 * r["AP"] / base if base > 0 else float("nan")
    result = {"model": cfg.model_config or cfg.model, "init_checkpoint": init_checkpoint, "dataset": cfg.dataset,
              "eval_images": len(eval_ds), "datapath": ", ".join(sorted({f"{r}={sp.label}" for r, sp in cfg.accum_specs().items()}))
              if len({sp for sp in cfg.accum_specs().values()}) > 1 else cfg.accum_specs()["qkv"].label, "precision": cfg.precision,
              "seeds": seeds, "rows": rows, "wall_time_s": time.time() - t0}
    write_tables(result, out)
    return result


def write_tables(result: dict, out: Path) -> None:
    from yolo_common.runlog import markdown_table

    rows = result["rows"]
    note = ("" if result["seeds"] > 1 else "One evaluation per configuration. ")
    md = (f"# Eval-only ablation\n\nModel `{result['model']}`"
          f"{' from `' + str(result['init_checkpoint']) + '`' if result['init_checkpoint'] else ''}, "
          f"{result['dataset']} ({result['eval_images']} eval images), datapath `{result['datapath']}`, "
          f"autocast {result['precision']}. {note}`none` is the float model; each other row patches every "
          f"block of the listed group(s). ΔAP and AP rel % are against `none`.\n\n"
          + markdown_table([{k: v for k, v in r.items() if k != "per_seed"} for r in rows], floatfmt=".4f") + "\n")
    atomic_write_bytes(out / "ablation.md", md.encode())
    atomic_write_json(out / "ablation.json", result)
    buf = io.StringIO()
    flat = [{k: v for k, v in r.items() if k != "per_seed"} for r in rows]
    w = csv.DictWriter(buf, fieldnames=list(flat[0]))
    w.writeheader()
    w.writerows(flat)
    atomic_write_bytes(out / "ablation.csv", buf.getvalue().encode())
