"""SGD with Megvii's three parameter groups, the ``yoloxwarmcos`` schedule and the model EMA."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def param_groups(model: nn.Module) -> tuple[list, list, list]:
    """(BN weights, conv/linear weights, biases): only the middle group gets weight decay."""
    bn_w, weights, biases = [], [], []
    for name, m in model.named_modules():
        if isinstance(getattr(m, "bias", None), nn.Parameter):
            biases.append(m.bias)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or "bn" in name.split(".")[-1:]:
            if isinstance(getattr(m, "weight", None), nn.Parameter):
                bn_w.append(m.weight)
        elif isinstance(getattr(m, "weight", None), nn.Parameter):
            weights.append(m.weight)
    return bn_w, weights, biases


def build_optimizer(model: nn.Module, exp, lr: float, sgd_class=None) -> torch.optim.Optimizer:
    """Nesterov SGD over :func:`param_groups`.

    Args:
        sgd_class: Habana's ``FusedSGD`` on HPU (same constructor); ``torch.optim.SGD`` otherwise.
    """
    sgd_class = torch.optim.SGD if sgd_class is None else sgd_class
    bn_w, weights, biases = param_groups(model)
    opt = sgd_class(bn_w, lr=lr, momentum=exp.momentum, nesterov=True)
    opt.add_param_group({"params": weights, "weight_decay": exp.weight_decay})
    opt.add_param_group({"params": biases})
    return opt


def yolox_warm_cos_lr(lr: float, min_lr_ratio: float, total_iters: int, warmup_iters: int,
                      warmup_lr_start: float, no_aug_iters: int, it: int) -> float:
    """Quadratic warm-up, cosine to ``min_lr_ratio * lr``, then flat for the no-aug iterations."""
    min_lr = lr * min_lr_ratio
    if warmup_iters > 0 and it <= warmup_iters:
        return (lr - warmup_lr_start) * (it / max(warmup_iters, 1)) ** 2 + warmup_lr_start
    if it >= total_iters - no_aug_iters:
        return min_lr
    span = max(total_iters - warmup_iters - no_aug_iters, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * (it - warmup_iters) / span))


class LRScheduler:
    """``yoloxwarmcos`` as a callable of the 1-based iteration, in units of the experiment's epochs."""

    def __init__(self, exp, lr: float, iters_per_epoch: int):
        if exp.scheduler != "yoloxwarmcos":
            raise ValueError(f"scheduler {exp.scheduler!r} is not implemented; use yoloxwarmcos")
        self.lr = lr
        self.exp = exp
        self.total = exp.max_epoch * iters_per_epoch
        self.warmup = exp.warmup_epochs * iters_per_epoch
        self.no_aug = exp.no_aug_epochs * iters_per_epoch

    def __call__(self, it: int) -> float:
        return yolox_warm_cos_lr(self.lr, self.exp.min_lr_ratio, self.total, self.warmup, self.exp.warmup_lr,
                                 self.no_aug, it)


class ModelEMA:
    """Exponential moving average of the weights with Megvii's ramp ``d * (1 - exp(-updates / 2000))``.

    The ramp makes early updates follow the model almost exactly (the random init should not linger).
    Float buffers (BN running stats) are averaged too; integer ones are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, updates: int = 0):
        self.ema = copy.deepcopy(_unwrap(model)).eval()
        self.decay = decay
        self.updates = updates
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def d(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / 2000))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.d()
        msd = _unwrap(model).state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model
