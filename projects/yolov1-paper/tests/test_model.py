"""The paper architecture (shapes, layer and parameter counts) and every smaller config (timm style)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from yolov1.model import build_classifier, build_detector, count_parameters

SMALL = [  # (S, B, C, width, hidden, batch_norm)
    (5, 2, 20, 0.125, 64, False),
    (4, 2, 3, 0.125, 32, True),  # BN variant
    (3, 3, 5, 0.0625, 16, False),
]


@pytest.mark.slow
def test_paper_network():
    model = build_detector().eval()
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 24
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 2
    assert count_parameters(model) == pytest.approx(271.7e6, rel=1e-3)
    assert count_parameters(model.head) == pytest.approx(211.5e6, rel=1e-3)
    assert sum(isinstance(m, nn.Conv2d) for m in model.backbone.modules()) == 20
    leaky = [m for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 25 and all(m.negative_slope == 0.1 for m in leaky)  # 24 convs + first FC
    assert isinstance(model.head[-1], nn.Linear) and model.head[3].p == 0.5  # linear output, dropout 0.5
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 448, 448))
    assert out.shape == (1, 7, 7, 30) and torch.isfinite(out).all()


def test_paper_backbone_at_224():
    model = build_classifier(100).eval()
    with torch.inference_mode():
        x = torch.randn(1, 3, 224, 224)
        f = model.backbone(x)
        logits = model(x)
    assert f.shape == (1, 1024, 7, 7) and model.fc.in_features == 1024 and model.fc.out_features == 100
    assert logits.shape == (1, 100)


@pytest.mark.parametrize("S,B,C,width,hidden,bn", SMALL)
def test_small_configs_forward_backward(S, B, C, width, hidden, bn):
    torch.manual_seed(0)
    model = build_detector(S, B, C, width=width, hidden=hidden, batch_norm=bn)
    x = torch.randn(2, 3, 64 * S, 64 * S)
    out = model(x)
    assert out.shape == (2, S, S, 5 * B + C) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match=f"needs {64 * S}x{64 * S}"):
        model(torch.randn(1, 3, 64 * S + 64, 64 * S + 64))


def test_classifier_shares_backbone_layout_with_detector():
    cls = build_classifier(10, width=0.125, batch_norm=True)
    det = build_detector(2, 2, 3, width=0.125, hidden=16, batch_norm=True)
    a = {k: v.shape for k, v in cls.backbone.state_dict().items()}
    b = {k: v.shape for k, v in det.backbone.state_dict().items()}
    assert a == b
