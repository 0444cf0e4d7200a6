"""Optimizers (SGD nesterov, Lion), parameter groups, and the warm-up + cosine LR schedule.

Groups: {backbone, head} x {decay (conv/linear weights), no_decay (BN weights), bias}. Backbone = layers
0-9 of Hyper-YOLO (up to SPPF); each part's LR is scaled by ``backbone_lr_scale`` / ``head_lr_scale``.
Weight decay is scaled by batch * accumulate / nbs, as ultralytics does, so it means the same per image.
The schedule is a pure function of (epoch, iteration): a resumed run gets exactly the LR it would have had.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BACKBONE_LAYERS = 10  # model.0 .. model.9 (B1..B5 + SPPF)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023): p -= lr * (sign(b1*m + (1-b1)*g) + wd * p); m = b2*m + (1-b2)*g.

    Decoupled weight decay as in the paper; equal to ``lion-pytorch`` / ``timm.optim.Lion`` (a test checks
    the update rule on a hand-computed step). Use an LR 3-10x below SGD/AdamW and a larger weight decay.
    """

    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(m * b1 + p.grad * (1 - b1)), alpha=-group["lr"])
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def param_groups(model: nn.Module, cfg, weight_decay: float) -> list[dict]:
    """The six groups described in the module docstring (empty ones dropped)."""
    groups: dict[tuple[str, str], list] = {}
    layers = model.model if hasattr(model, "model") else model
    for i, layer in enumerate(layers):
        part = "backbone" if i < BACKBONE_LAYERS else "head"
        for mod in layer.modules():
            for name, p in mod.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                if name == "bias":
                    kind = "bias"
                elif isinstance(mod, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                    kind = "no_decay"
                else:
                    kind = "decay"
                groups.setdefault((part, kind), []).append(p)
    out = []
    for (part, kind), params in sorted(groups.items()):
        out.append({"params": params, "name": f"{part}.{kind}", "kind": kind,
                    "lr_scale": cfg[f"{part}_lr_scale"], "weight_decay": weight_decay if kind == "decay" else 0.0})
    return out


def build_optimizer(model: nn.Module, cfg, batch_size: int, accumulate: int) -> torch.optim.Optimizer:
    wd = cfg["weight_decay"] * batch_size * accumulate / cfg["nbs"]
    groups = param_groups(model, cfg, wd)
    for g in groups:
        g["lr"] = cfg["lr0"] * g["lr_scale"]
    if cfg["optimizer"] == "Lion":
        return Lion(groups, lr=cfg["lr0"], betas=(cfg["momentum"], cfg["lion_beta2"]))
    return torch.optim.SGD(groups, lr=cfg["lr0"], momentum=cfg["momentum"], nesterov=cfg["nesterov"])


def cosine_factor(epoch: float, epochs: int, lrf: float) -> float:
    """1 at epoch 0, ``lrf`` at ``epochs``, cosine in between."""
    return ((1 - math.cos(min(epoch, epochs) * math.pi / max(epochs, 1))) / 2) * (lrf - 1) + 1


def warmup_iters(cfg, iters_per_epoch: int) -> int:
    """Warm-up length in iterations: ``warmup_epochs`` epochs, at least ``warmup_min_iters`` (0 epochs: none)."""
    if cfg["warmup_epochs"] <= 0:
        return 0
    return max(round(cfg["warmup_epochs"] * iters_per_epoch), cfg["warmup_min_iters"])


def set_lr(optimizer: torch.optim.Optimizer, cfg, epoch: int, it: int, iters_per_epoch: int) -> float:
    """Sets every group's LR (and SGD momentum during warm-up) for iteration ``it`` of ``epoch``.

    Warm-up (linear in the global iteration): biases fall from ``warmup_bias_lr`` to the schedule, other
    groups rise from 0; momentum rises from ``warmup_momentum``. Then cosine per epoch to ``lr0 * lrf``.
    Returns the base LR (head decay group, before lr_scale) for logging.
    """
    ni = epoch * iters_per_epoch + it
    nw = warmup_iters(cfg, iters_per_epoch)
    target = cfg["lr0"] * cosine_factor(epoch, cfg["epochs"], cfg["lrf"])
    base = target
    for g in optimizer.param_groups:
        lr = target * g["lr_scale"]
        if ni < nw:
            start = cfg["warmup_bias_lr"] if g["kind"] == "bias" else 0.0
            lr = start + (lr - start) * ni / nw
            if "momentum" in g:
                g["momentum"] = cfg["warmup_momentum"] + (cfg["momentum"] - cfg["warmup_momentum"]) * ni / nw
        elif "momentum" in g:
            g["momentum"] = cfg["momentum"]
        g["lr"] = lr * g.get("gate", 1.0)   # gate: dino.bb_lr_gate on the backbone groups (core/distiller)
    if ni < nw:
        base = target * ni / nw
    return base
