"""Convolution blocks of Hyper-YOLO: Conv, Bottleneck, C2f, SPPF (YOLOv8's) and GroupConv, MANet (Hyper-YOLO's).

Attribute names (``conv``/``bn``, ``cv1``/``cv2``/``m``, ``cv_first``/``cv_block_1``/``cv_block_2``/``cv_final``)
are those of the published model, so a state dict converted from the original checkpoints loads as is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The published model sets every BatchNorm to eps 1e-3 / momentum 0.03 after construction (YOLOv5 lineage);
# eps changes eval-mode outputs, so it must match for converted weights to reproduce the original.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """'same' padding for an odd kernel k with dilation d."""
    if d > 1:
        k = d * (k - 1) + 1
    return k // 2 if p is None else p


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= x (the width rule of the scale table)."""
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU; ``fuse()`` folds the BN into the conv for inference."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, d: int = 1,
                 act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class GroupConv(Conv):
    """Conv with groups = gcd(c1, c2): depthwise when c1 == c2 (MANet's k x k mixing branch)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: bool = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Bottleneck(nn.Module):
    """Two 3x3 Convs, residual when ``shortcut`` and c1 == c2."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, k: tuple[int, int] = (3, 3),
                 e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, k[0], 1)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8's CSP block: split in two, chain n Bottlenecks on one half, concatenate every output."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max-pools (= SPP with 5/9/13)."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class MANet(nn.Module):
    """Mixed Aggregation Network (Hyper-YOLO): C2f plus a 1x1 branch and a depthwise k x k branch.

    With c = c2 * e: y = cv_first(x) (2c channels); y0 = 1x1(y); y1 = 1x1 -> depthwise k x k (expansion p)
    -> 1x1 of y; y2, y3 = the two halves of y; n Bottlenecks chained from y3; cv_final over all (4+n)c.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, p: int = 1, kernel_size: int = 3,
                 g: int = 1, e: float = 0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv_first = Conv(c1, 2 * self.c, 1, 1)
        self.cv_final = Conv((4 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=(3, 3), e=1.0) for _ in range(n))
        self.cv_block_1 = Conv(2 * self.c, self.c, 1, 1)
        dim_hid = int(p * 2 * self.c)
        self.cv_block_2 = nn.Sequential(Conv(2 * self.c, dim_hid, 1, 1), GroupConv(dim_hid, dim_hid, kernel_size, 1),
                                        Conv(dim_hid, self.c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv_first(x)
        outs = [self.cv_block_1(y), self.cv_block_2(y), *y.chunk(2, 1)]
        outs.extend(m(outs[-1]) for m in self.m)
        return self.cv_final(torch.cat(outs, 1))


class Concat(nn.Module):
    """Concatenates a list of tensors along ``dimension`` (channels)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)
