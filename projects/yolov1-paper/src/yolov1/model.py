"""The YOLOv1 network: 24 conv layers + 2 fully connected layers (paper Figure 3).

    input 448x448x3
    conv 7x7x64 /2, maxpool 2x2 /2                                   -> 112x112
    conv 3x3x192, maxpool                                            -> 56x56
    conv 1x1x128, 3x3x256, 1x1x256, 3x3x512, maxpool                 -> 28x28
    {conv 1x1x256, 3x3x512} x4, 1x1x512, 3x3x1024, maxpool           -> 14x14
    {conv 1x1x512, 3x3x1024} x2                                      (20 convs: the backbone)
    conv 3x3x1024, 3x3x1024 /2, 3x3x1024, 3x3x1024                   -> 7x7x1024 (4 convs: the neck)
    FC 7*7*1024 -> 4096, leaky, dropout 0.5, FC 4096 -> 7*7*30       (linear output)

Leaky ReLU with slope 0.1 after every layer but the last. The backbone alone is pretrained on ImageNet
at 224 (where it ends at 7x7) behind an average pool and one FC layer (``YoloClassifier``); detection
adds the neck and the head, randomly initialised, and doubles the input to 448.

The output is ``(N, S, S, 5B + C)``; per cell, predictor ``j`` is ``[5j:5j+5] = x, y, sqrt(w), sqrt(h),
confidence`` (x, y: offsets inside the cell; w, h relative to the image, predicted as square roots as
the paper says), followed by ``C`` conditional class probabilities (trained with squared error, no
softmax). With S=7, B=2, C=20 that is 7x7x30 and about 271.7M parameters, 211.5M of them in the head.

Deviations from the paper are flags that default off: ``batch_norm`` (BN after each conv, no conv
bias; YOLOv2 added it and it tames the from-scratch instability the paper's recipe is known for) and
``width`` / ``hidden`` (channel and FC-width multipliers for smoke tests; 1.0 / 4096 are the paper's).

    python -m yolov1.model                  # paper network: shapes and parameter counts
    python -m yolov1.model --width 0.125 --hidden 256
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import nn

# (kernel, out_channels, stride) per conv; "M" is a 2x2/2 max pool. Straight from the paper's Figure 3.
BACKBONE_LAYERS: tuple = (
    (7, 64, 2), "M",
    (3, 192, 1), "M",
    (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), "M",
    *((1, 256, 1), (3, 512, 1)) * 4, (1, 512, 1), (3, 1024, 1), "M",
    *((1, 512, 1), (3, 1024, 1)) * 2,
)
NECK_LAYERS: tuple = ((3, 1024, 1), (3, 1024, 2), (3, 1024, 1), (3, 1024, 1))
LEAKY_SLOPE = 0.1
STRIDE = 64  # input pixels per output cell: 448 / 7


def scaled(channels: int, width: float) -> int:
    """Channel count times the width multiplier, at least 8 (1.0 gives the paper's numbers)."""
    return max(8, int(round(channels * width)))


def _conv(c_in: int, c_out: int, k: int, stride: int, batch_norm: bool) -> list[nn.Module]:
    # No bias under BN: BN's shift makes it redundant (and it would be decayed for nothing).
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
    return layers


def _stack(spec: Sequence, c_in: int, width: float, batch_norm: bool) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        k, c, s = item
        c = scaled(c, width)
        layers += _conv(c_in, c, k, s, batch_norm)
        c_in = c
    return nn.Sequential(*layers), c_in


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            # He init for the leaky slope: keeps activation variance ~constant through 24 plain convs,
            # which matters without BN (the paper's setting).
            nn.init.kaiming_normal_(m.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_uniform_(m.weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


class YoloBackbone(nn.Module):
    """The first 20 conv layers (the part pretrained on ImageNet). Output stride 32, ``out_channels`` wide."""

    def __init__(self, width: float = 1.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.width = width
        self.batch_norm = batch_norm
        self.layers, self.out_channels = _stack(BACKBONE_LAYERS, 3, width, batch_norm)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class YoloClassifier(nn.Module):
    """Pretraining model: backbone -> global average pool -> FC to ``num_classes`` logits (paper §2.2)."""

    def __init__(self, num_classes: int, width: float = 1.0, batch_norm: bool = False) -> None:
        super().__init__()
        self.backbone = YoloBackbone(width, batch_norm)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)  # near-uniform softmax at start: loss ~ log(num_classes)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.backbone(x)).flatten(1))


class YoloV1(nn.Module):
    """The detection network: backbone + 4 convs + FC head over the whole flattened S x S grid.

    Args:
        S: grid size; the input must be ``64 * S`` pixels square (448 for S=7).
        B: boxes per cell. C: classes.
        width: channel multiplier (1.0 = paper). hidden: first FC width (4096 = paper).
        dropout: after the first FC (0.5 = paper). batch_norm: BN after every conv (paper: off).
    """

    def __init__(self, S: int = 7, B: int = 2, C: int = 20, *, width: float = 1.0, hidden: int = 4096,
                 dropout: float = 0.5, batch_norm: bool = False) -> None:
        super().__init__()
        if S < 1 or B < 1 or C < 1:
            raise ValueError(f"S, B, C must be positive, got S={S}, B={B}, C={C}")
        self.S, self.B, self.C = S, B, C
        self.backbone = YoloBackbone(width, batch_norm)
        self.neck, c = _stack(NECK_LAYERS, self.backbone.out_channels, width, batch_norm)
        # The paper's head sees the whole image (global context per prediction): 205.5M of the 211.5M
        # head parameters sit in this first FC. A per-cell MLP would be 50x smaller and blind.
        self.head = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(c * S * S, hidden),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, S * S * (5 * B + C)),  # linear activation, as in the paper
        )
        _init_weights(self.neck)
        _init_weights(self.head)
        # Small last layer: initial predictions near 0 keep the first (warm-up) steps' loss moderate.
        nn.init.normal_(self.head[-1].weight, std=0.001)

    @property
    def input_size(self) -> int:
        return STRIDE * self.S

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.neck(self.backbone(x))
        if f.shape[-2:] != (self.S, self.S):
            raise ValueError(f"input {tuple(x.shape[-2:])} gives a {tuple(f.shape[-2:])} feature map; "
                             f"S={self.S} needs {self.input_size}x{self.input_size} input")
        return self.head(f).view(-1, self.S, self.S, 5 * self.B + self.C)


def build_classifier(num_classes: int, *, width: float = 1.0, batch_norm: bool = False) -> YoloClassifier:
    """The pretraining network (20 convs + avgpool + FC) for ``num_classes`` classes."""
    return YoloClassifier(num_classes, width, batch_norm)


def build_detector(S: int = 7, B: int = 2, C: int = 20, *, width: float = 1.0, hidden: int = 4096,
                   dropout: float = 0.5, batch_norm: bool = False) -> YoloV1:
    """The detection network; defaults are the paper's (7x7x30 at 448)."""
    return YoloV1(S, B, C, width=width, hidden=hidden, dropout=dropout, batch_norm=batch_norm)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: Sequence[str] | None = None) -> dict:
    """Sanity check: build the networks, run one forward each, print shapes and parameter counts."""
    ap = argparse.ArgumentParser(prog="python -m yolov1.model", description=__doc__.splitlines()[0])
    ap.add_argument("--S", type=int, default=7)
    ap.add_argument("--B", type=int, default=2)
    ap.add_argument("--C", type=int, default=20)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--batch-norm", action="store_true")
    a = ap.parse_args(argv)
    det = build_detector(a.S, a.B, a.C, width=a.width, hidden=a.hidden, batch_norm=a.batch_norm).eval()
    cls = build_classifier(100, width=a.width, batch_norm=a.batch_norm).eval()
    convs = sum(isinstance(m, nn.Conv2d) for m in det.modules())
    fcs = sum(isinstance(m, nn.Linear) for m in det.modules())
    with torch.inference_mode():
        out = det(torch.zeros(1, 3, det.input_size, det.input_size))
        logits = cls(torch.zeros(1, 3, 224, 224))
        feat = cls.backbone(torch.zeros(1, 3, 224, 224))
    info = {
        "detector_output": tuple(out.shape), "detector_params": count_parameters(det),
        "head_params": count_parameters(det.head), "backbone_params": count_parameters(det.backbone),
        "convs": convs, "fcs": fcs, "pretrain_features_224": tuple(feat.shape),
        "pretrain_logits": tuple(logits.shape),
    }
    print(f"detector   {convs} conv + {fcs} FC, input {det.input_size}: output {info['detector_output']}")
    print(f"parameters detector {info['detector_params'] / 1e6:.1f}M (head {info['head_params'] / 1e6:.1f}M, "
          f"backbone {info['backbone_params'] / 1e6:.1f}M)")
    print(f"pretrain   backbone at 224 -> {info['pretrain_features_224']}, logits {info['pretrain_logits']}")
    ok = out.shape == (1, a.S, a.S, 5 * a.B + a.C) and convs == 24 and fcs == 2 and torch.isfinite(out).all()
    print("self-check:", "OK" if ok else "FAILED")
    if not ok:
        raise SystemExit(1)
    return info


if __name__ == "__main__":
    main()
