"""Parameter groups, Lion's update rule, the warm-up + cosine schedule, EMA."""

from __future__ import annotations

import math

import pytest
import torch

from yolov9001.core.config import get_config
from yolov9001.core.ema import ModelEMA
from yolov9001.core.optim import Lion, build_optimizer, cosine_factor, param_groups, set_lr, warmup_iters
from yolov9001.models import HyperYOLO


def test_param_groups_no_decay_on_bn_and_bias_and_lr_scales():
    model = HyperYOLO("n", nc=3)
    cfg = get_config(hyp={"backbone_lr_scale": 0.1, "head_lr_scale": 2.0})
    groups = param_groups(model, cfg, 5e-4)
    names = {g["name"] for g in groups}
    assert names == {f"{p}.{k}" for p in ("backbone", "head") for k in ("bias", "decay", "no_decay")}
    bn_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for g in groups:
        if g["kind"] != "decay":
            assert g["weight_decay"] == 0.0
        if g["kind"] == "no_decay":
            assert all(id(p) in bn_ids for p in g["params"])
        assert g["lr_scale"] == (0.1 if g["name"].startswith("backbone") else 2.0)
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters() if p.requires_grad)
    backbone = {id(p) for i in range(10) for p in model.model[i].parameters()}
    assert all(id(p) in backbone for g in groups if g["name"].startswith("backbone") for p in g["params"])


def test_lion_update_rule_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    m = torch.zeros(3)
    expected = p.detach().clone()
    for g in ([0.3, -0.1, 0.0], [-1.0, 2.0, 0.5]):
        grad = torch.tensor(g)
        p.grad = grad.clone()
        opt.step()
        expected = expected * (1 - 0.1 * 0.5) - 0.1 * torch.sign(0.9 * m + 0.1 * grad)
        m = 0.99 * m + 0.01 * grad
        torch.testing.assert_close(p.detach(), expected)


def test_build_optimizer_kinds():
    model = HyperYOLO("n", nc=3)
    sgd = build_optimizer(model, get_config(), 16, 4)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    decay = [g for g in sgd.param_groups if g["kind"] == "decay"][0]["weight_decay"]
    assert decay == pytest.approx(5e-4 * 16 * 4 / 64)
    lion = build_optimizer(model, get_config(hyp={"optimizer": "Lion", "lr0": 1e-4}), 16, 1)
    assert isinstance(lion, Lion)


def test_schedule_warmup_then_cosine():
    cfg = get_config(hyp={"epochs": 10, "lr0": 0.01, "lrf": 0.1, "warmup_epochs": 2, "warmup_min_iters": 0,
                          "warmup_bias_lr": 0.1})
    model = HyperYOLO("n", nc=3)
    opt = build_optimizer(model, cfg, 16, 1)
    nb = 5
    assert warmup_iters(cfg, nb) == 10
    set_lr(opt, cfg, 0, 0, nb)
    by_kind = {g["kind"]: g for g in opt.param_groups}
    assert by_kind["bias"]["lr"] == pytest.approx(0.1) and by_kind["decay"]["lr"] == 0.0
    assert by_kind["decay"]["momentum"] == pytest.approx(0.8)
    set_lr(opt, cfg, 2, 0, nb)  # warm-up over: the cosine value of epoch 2
    f = cosine_factor(2, 10, 0.1)
    assert all(g["lr"] == pytest.approx(0.01 * f) for g in opt.param_groups)
    assert by_kind["decay"]["momentum"] == pytest.approx(0.937)
    assert cosine_factor(0, 10, 0.1) == 1.0 and cosine_factor(10, 10, 0.1) == pytest.approx(0.1)
    assert cosine_factor(5, 10, 0.1) == pytest.approx((1 + 0.1) / 2)
    assert warmup_iters(get_config(), 5) == 100  # ultralytics' minimum
    assert math.isclose(warmup_iters(get_config(hyp={"warmup_epochs": 0}), 5), 0)


def test_ema_ramp_and_average():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = ModelEMA(model, decay=0.9, tau=1.0)
    with torch.no_grad():
        model.weight.fill_(1.0)
    w0 = ema.ema.weight.clone()
    ema.update(model)
    d = 0.9 * (1 - math.exp(-1))
    torch.testing.assert_close(ema.ema.weight, w0 * d + (1 - d))
    state = ema.state_dict()
    other = ModelEMA(model)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.ema.weight, ema.ema.weight)
