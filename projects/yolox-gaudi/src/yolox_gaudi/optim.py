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


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: nn.Module) -> list[list[str]]:
    """The parameter names of each optimizer group, in the optimizer's order (stored in checkpoints so a
    resume maps state by name, whatever order either side built its groups in)."""
    names = {id(p): n for n, p in _unwrap(model).named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]


def load_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, state: dict,
                         param_names: list[list[str]] | None = None) -> None:
    """Loads an optimizer ``state_dict`` by parameter *name* rather than position.

    Args:
        state: ``optimizer.state_dict()`` of the saved run (this project's or Megvii's trainer's).
        param_names: the saved groups' names (:func:`optimizer_param_names`); ``None`` for a checkpoint
            without them (Megvii's): its groups are then read in Megvii's ``get_optimizer`` order, which
            :func:`param_groups` reproduces on a model with Megvii's module names and order.

    Raises:
        ValueError: the state cannot belong to this model (other groups, names or shapes); the message
            says which, so the CLI can print it instead of a shape error from inside ``SGD.step``.
    """
    ours = optimizer_param_names(optimizer, model)
    saved_groups = state.get("param_groups", [])
    if param_names is None:
        if [len(g["params"]) for g in saved_groups] != [len(g) for g in ours]:
            raise ValueError(f"its optimizer groups hold {[len(g['params']) for g in saved_groups]} parameters, "
                             f"this model's {[len(g) for g in ours]} (another model size or layout)")
        # Megvii's order first; then this project's before 2026-12 (head stems registered first), whose
        # checkpoints carry no names either. The shapes decide which one the state belongs to.
        for order in (ours, _stems_first(ours)):
            try:
                return load_optimizer_state(optimizer, model, state, order)
            except ValueError as e:
                error = e
        raise error
    flat_saved = [n for g in param_names for n in g]
    flat_ours = [n for g in ours for n in g]
    if len(saved_groups) != len(ours) or set(flat_saved) != set(flat_ours):
        missing, extra = sorted(set(flat_ours) - set(flat_saved)), sorted(set(flat_saved) - set(flat_ours))
        raise ValueError(f"its optimizer state is for other parameters (missing {missing[:3]}, unexpected "
                         f"{extra[:3]}, {len(saved_groups)} groups vs {len(ours)})")
    saved_id = {}
    for g, names in zip(saved_groups, param_names):
        saved_id.update(zip(names, g["params"]))
    params = {n: p for n, p in _unwrap(model).named_parameters()}
    new_state, new_groups, pos = {}, [], 0
    for g_saved, names in zip(saved_groups, ours):
        ids = list(range(pos, pos + len(names)))
        pos += len(names)
        for i, n in zip(ids, names):
            st = state["state"].get(saved_id[n])
            if st is None:
                continue
            for k, v in st.items():
                if torch.is_tensor(v) and v.dim() and v.shape != params[n].shape:
                    raise ValueError(f"its optimizer state {k!r} of {n} has shape {tuple(v.shape)}, the parameter "
                                     f"{tuple(params[n].shape)}")
            new_state[i] = st
        new_groups.append({**{k: v for k, v in g_saved.items() if k != "params"}, "params": ids})
    optimizer.load_state_dict({"state": new_state, "param_groups": new_groups})


def _stems_first(groups: list[list[str]]) -> list[list[str]]:
    """The parameter order of this project's head before it followed Megvii's: ``head.stems.*`` ahead of
    the other head modules (the rest unchanged)."""
    out = []
    for names in groups:
        head = [n for n in names if n.startswith("head.")]
        stems = [n for n in head if n.startswith("head.stems.")]
        rest = [n for n in head if not n.startswith("head.stems.")]
        out.append([n for n in names if not n.startswith("head.")] + stems + rest)
    return out


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
