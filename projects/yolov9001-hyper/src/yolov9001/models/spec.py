"""Hyper-YOLO layer specs, readable as the published YAML: (from, repeats, module, args) per layer.

``from`` is -1 (previous layer), a layer index, or a list of indices (Concat / Detect). Channel arguments
are the L-width values; ``DetectModelBase.parse_model`` scales them: channels -> make_divisible(min(c, max_ch)
* width, 8), repeats n > 1 -> max(round(n * depth), 1). Source: iMoonLab/Hyper-YOLO
``ultralytics/cfg/models/hyper-yolo/hyper-yolo.yaml`` and ``hyper-yolot.yaml`` (commit bd4d2c4).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .blocks import SPPF, C2f, Concat, Conv, MANet
from .head import Detect
from .hypergraph import HyperComputeModule


@dataclass(frozen=True)
class Scale:
    depth: float          # repeat multiplier
    width: float          # channel multiplier
    max_channels: int     # channel cap before the width multiplier
    threshold: float      # HyperComputeModule epsilon-ball radius (the config's hyper_threshold default)


SCALES = {
    "n": Scale(0.33, 0.25, 1024, 6.0),
    "s": Scale(0.33, 0.50, 1024, 8.0),
    "m": Scale(0.67, 0.75, 768, 10.0),
    "l": Scale(1.00, 1.00, 512, 10.0),
    "x": Scale(1.00, 1.25, 512, 12.0),
    "t": Scale(0.33, 0.25, 1024, 6.0),   # hyper-yolot: its own (lighter) layer list below
}

# MANet args: [c2, shortcut, p (hidden expansion of the depthwise branch), kernel]; C2f: [c2, shortcut].
_NECK_COLLECT = (
    (0, 1, nn.AvgPool2d, (8, 8, 0)),                  # 10  B1 /2 -> /16
    (2, 1, nn.AvgPool2d, (4, 4, 0)),                  # 11  B2 /4 -> /16
    (4, 1, nn.AvgPool2d, (2, 2, 0)),                  # 12  B3 /8 -> /16
    (9, 1, nn.Upsample, (None, 2, "nearest")),        # 13  B5 /32 -> /16
    ([10, 11, 12, 6, 13], 1, Concat, (1,)),           # 14  cross-level concat at /16
    (-1, 1, Conv, (512, 1, 1)),                       # 15
    (-1, 1, HyperComputeModule, (512,)),              # 16  hypergraph computation
)

HYPER_YOLO = (
    # backbone
    (-1, 1, Conv, (64, 3, 2)),                        # 0   B1 /2
    (-1, 1, Conv, (128, 3, 2)),                       # 1
    (-1, 3, MANet, (128, True, 2, 3)),                # 2   B2 /4
    (-1, 1, Conv, (256, 3, 2)),                       # 3
    (-1, 6, MANet, (256, True, 2, 5)),                # 4   B3 /8
    (-1, 1, Conv, (512, 3, 2)),                       # 5
    (-1, 6, MANet, (512, True, 2, 5)),                # 6   B4 /16
    (-1, 1, Conv, (1024, 3, 2)),                      # 7   /32
    (-1, 3, MANet, (1024, True, 2, 3)),               # 8
    (-1, 1, SPPF, (1024, 5)),                         # 9   B5 /32
    # neck (HyperC2Net): semantic collecting + hypergraph computation
    *_NECK_COLLECT,
    (-1, 3, MANet, (512, True, 2, 3)),                # 17  the "hyper" feature /16
    # semantic scattering + PAN
    (-1, 1, nn.AvgPool2d, (2, 2, 0)),                 # 18
    ([-1, 9], 1, Concat, (1,)),                       # 19
    (-1, 1, Conv, (1024, 1, 1)),                      # 20  P5
    ([17, 6], 1, Concat, (1,)),                       # 21
    (-1, 3, MANet, (512, False, 2, 3)),               # 22  P4
    (17, 1, nn.Upsample, (None, 2, "nearest")),       # 23
    ([-1, 4], 1, Concat, (1,)),                       # 24
    (-1, 3, MANet, (256, False, 2, 3)),               # 25  N3 /8
    (-1, 1, Conv, (256, 3, 2)),                       # 26
    ([-1, 22], 1, Concat, (1,)),                      # 27
    (-1, 3, MANet, (512, False, 2, 3)),               # 28  N4 /16
    (-1, 1, Conv, (512, 3, 2)),                       # 29
    ([-1, 20], 1, Concat, (1,)),                      # 30
    (-1, 3, C2f, (1024, False)),                      # 31  N5 /32
    ([25, 28, 31], 1, Detect, ("nc",)),               # 32
)

HYPER_YOLO_T = (
    (-1, 1, Conv, (64, 3, 2)),                        # 0
    (-1, 1, Conv, (128, 3, 2)),                       # 1
    (-1, 3, C2f, (128, True)),                        # 2
    (-1, 1, Conv, (256, 3, 2)),                       # 3
    (-1, 6, MANet, (256, True, 1, 3)),                # 4
    (-1, 1, Conv, (512, 3, 2)),                       # 5
    (-1, 6, MANet, (512, True, 1, 3)),                # 6
    (-1, 1, Conv, (1024, 3, 2)),                      # 7
    (-1, 3, C2f, (1024, True)),                       # 8
    (-1, 1, SPPF, (1024, 5)),                         # 9
    *_NECK_COLLECT,
    (-1, 3, MANet, (512, True)),                      # 17  (MANet defaults p=1, k=3)
    (-1, 1, nn.AvgPool2d, (2, 2, 0)),                 # 18
    ([-1, 9], 1, Concat, (1,)),                       # 19
    (-1, 1, Conv, (1024, 1, 1)),                      # 20
    ([17, 6], 1, Concat, (1,)),                       # 21
    (-1, 3, C2f, (512, False)),                       # 22
    (17, 1, nn.Upsample, (None, 2, "nearest")),       # 23
    ([-1, 4], 1, Concat, (1,)),                       # 24
    (-1, 3, C2f, (256, False)),                       # 25
    (-1, 1, Conv, (256, 3, 2)),                       # 26
    ([-1, 22], 1, Concat, (1,)),                      # 27
    (-1, 3, C2f, (512, False)),                       # 28
    (-1, 1, Conv, (512, 3, 2)),                       # 29
    ([-1, 20], 1, Concat, (1,)),                      # 30
    (-1, 1, Conv, (1024, 1, 1)),                      # 31
    ([25, 28, 31], 1, Detect, ("nc",)),               # 32
)


def spec_for(scale: str) -> tuple:
    """The layer list of a scale: hyper-yolot for ``t``, hyper-yolo for n/s/m/l/x."""
    if scale not in SCALES:
        raise ValueError(f"unknown Hyper-YOLO scale {scale!r}; choose one of {', '.join(SCALES)}")
    return HYPER_YOLO_T if scale == "t" else HYPER_YOLO
