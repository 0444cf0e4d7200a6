"""YOLOX: CSPDarknet backbone + PAFPN neck + decoupled anchor-free head.

Module and attribute names follow Megvii's YOLOX exactly (``backbone.backbone.stem.conv.conv.weight``,
``head.cls_convs.0.1.bn.running_var``, ...) so the official ``yolox_*.pth`` files load with ``--ckpt``;
``tests/data/megvii_state_dicts.json.gz`` holds the published names and shapes and a test compares them.

Shapes, for an input of side S and ``A = (S/8)^2 + (S/16)^2 + (S/32)^2`` anchor points:

- training forward: ``(preds [B, A, 5+nc], raw_reg [B, A, 4], grid [A, 3])`` where ``preds`` holds the
  decoded box (cx, cy, w, h in input pixels) then the *logits* of objectness and the classes,
  ``raw_reg`` the undecoded regression (for the L1 loss) and ``grid`` the (x, y, stride) of each anchor.
- inference forward: ``[B, A, 5+nc]`` with decoded boxes and sigmoid scores (Megvii's output contract).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Megvii's BN settings: eps 1e-3 and momentum 0.03 (PyTorch's momentum is 1 - Keras' 0.97).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class BaseConv(nn.Module):
    """Conv2d (no bias) + BatchNorm + SiLU, "same" padding for odd kernels."""

    def __init__(self, cin: int, cout: int, ksize: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ksize, stride, (ksize - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise 3x3 + pointwise 1x1 (YOLOX-Nano): ~9x fewer weights than a dense 3x3."""

    def __init__(self, cin: int, cout: int, ksize: int, stride: int = 1):
        super().__init__()
        self.dconv = BaseConv(cin, cin, ksize, stride, groups=cin)
        self.pconv = BaseConv(cin, cout, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def _conv(depthwise: bool):
    return DWConv if depthwise else BaseConv


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, optional residual (only when shapes match)."""

    def __init__(self, cin: int, cout: int, shortcut: bool = True, expansion: float = 0.5,
                 depthwise: bool = False):
        super().__init__()
        hidden = int(cout * expansion)
        self.conv1 = BaseConv(cin, hidden, 1, 1)
        self.conv2 = _conv(depthwise)(hidden, cout, 3, 1)
        self.use_add = shortcut and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Cross-stage partial block: half the channels go through n bottlenecks, half skip, then concat."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True, expansion: float = 0.5,
                 depthwise: bool = False):
        super().__init__()
        hidden = int(cout * expansion)
        self.conv1 = BaseConv(cin, hidden, 1, 1)
        self.conv2 = BaseConv(cin, hidden, 1, 1)
        self.conv3 = BaseConv(2 * hidden, cout, 1, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut, 1.0, depthwise) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (max-pool 5/9/13, stride 1) between two 1x1 convs."""

    def __init__(self, cin: int, cout: int, kernel_sizes: tuple[int, ...] = (5, 9, 13)):
        super().__init__()
        hidden = cin // 2
        self.conv1 = BaseConv(cin, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), cout, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [m(x) for m in self.m], dim=1))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixels -> 4 channels) then a conv; channel order as Megvii's."""

    def __init__(self, cin: int, cout: int, ksize: int = 1, stride: int = 1):
        super().__init__()
        self.conv = BaseConv(cin * 4, cout, ksize, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Order matters for loading official weights: top-left, bottom-left, top-right, bottom-right.
        tl, bl = x[..., ::2, ::2], x[..., 1::2, ::2]
        tr, br = x[..., ::2, 1::2], x[..., 1::2, 1::2]
        return self.conv(torch.cat((tl, bl, tr, br), dim=1))


class CSPDarknet(nn.Module):
    """The backbone; returns the stride 8/16/32 feature maps (dark3, dark4, dark5)."""

    def __init__(self, depth: float, width: float, depthwise: bool = False):
        super().__init__()
        Conv = _conv(depthwise)
        c = int(width * 64)
        n = max(round(depth * 3), 1)
        self.stem = Focus(3, c, ksize=3)
        self.dark2 = nn.Sequential(Conv(c, c * 2, 3, 2), CSPLayer(c * 2, c * 2, n, depthwise=depthwise))
        self.dark3 = nn.Sequential(Conv(c * 2, c * 4, 3, 2), CSPLayer(c * 4, c * 4, n * 3, depthwise=depthwise))
        self.dark4 = nn.Sequential(Conv(c * 4, c * 8, 3, 2), CSPLayer(c * 8, c * 8, n * 3, depthwise=depthwise))
        self.dark5 = nn.Sequential(
            Conv(c * 8, c * 16, 3, 2),
            SPPBottleneck(c * 16, c * 16),
            CSPLayer(c * 16, c * 16, n, shortcut=False, depthwise=depthwise),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        return c3, c4, self.dark5(c4)


class YOLOPAFPN(nn.Module):
    """Top-down then bottom-up path aggregation over the three backbone levels."""

    def __init__(self, depth: float, width: float, in_channels=(256, 512, 1024), depthwise: bool = False):
        super().__init__()
        Conv = _conv(depthwise)
        c0, c1, c2 = (int(c * width) for c in in_channels)
        n = round(3 * depth)
        self.backbone = CSPDarknet(depth, width, depthwise)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c2, c1, 1, 1)
        self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise=depthwise)
        self.reduce_conv1 = BaseConv(c1, c0, 1, 1)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise=depthwise)
        self.bu_conv2 = Conv(c0, c0, 3, 2)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise=depthwise)
        self.bu_conv1 = Conv(c1, c1, 3, 2)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise=depthwise)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c3, c4, c5 = self.backbone(x)
        p5 = self.lateral_conv0(c5)
        p4 = self.reduce_conv1(self.C3_p4(torch.cat((self.upsample(p5), c4), 1)))
        out3 = self.C3_p3(torch.cat((self.upsample(p4), c3), 1))
        out4 = self.C3_n3(torch.cat((self.bu_conv2(out3), p4), 1))
        out5 = self.C3_n4(torch.cat((self.bu_conv1(out4), p5), 1))
        return out3, out4, out5


class YOLOXHead(nn.Module):
    """Decoupled head: per level a 1x1 stem, then a cls branch and a reg branch (2x 3x3 each)."""

    def __init__(self, num_classes: int, width: float, strides=(8, 16, 32), in_channels=(256, 512, 1024),
                 depthwise: bool = False):
        super().__init__()
        Conv = _conv(depthwise)
        hidden = int(256 * width)
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.cls_convs = nn.ModuleList(nn.Sequential(Conv(hidden, hidden, 3, 1), Conv(hidden, hidden, 3, 1))
                                       for _ in in_channels)
        self.reg_convs = nn.ModuleList(nn.Sequential(Conv(hidden, hidden, 3, 1), Conv(hidden, hidden, 3, 1))
                                       for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)
        # Registered last, as Megvii does: parameters() then runs in Megvii's order, so an optimizer state
        # saved by Megvii's trainer lines up with this model's (tests/test_megvii_reference.py).
        self.stems = nn.ModuleList(BaseConv(int(c * width), hidden, 1, 1) for c in in_channels)

    def initialize_biases(self, prior_prob: float = 1e-2) -> None:
        """Start every objectness/class score at ``prior_prob`` so the ~8400 negatives don't swamp step 1."""
        b = -math.log((1 - prior_prob) / prior_prob)
        with torch.no_grad():
            for conv in list(self.cls_preds) + list(self.obj_preds):
                conv.bias.fill_(b)

    def forward(self, feats):
        raw, grids = [], []
        for k, (x, stride) in enumerate(zip(feats, self.strides)):
            x = self.stems[k](x)
            reg_feat = self.reg_convs[k](x)
            out = torch.cat((self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat),
                             self.cls_preds[k](self.cls_convs[k](x))), 1)
            b, c, h, w = out.shape
            raw.append(out.flatten(2).transpose(1, 2))  # [B, h*w, 5+nc], row-major over (y, x)
            grids.append(make_grid(h, w, stride, out.device))
        raw = torch.cat(raw, 1)
        grid = torch.cat(grids, 0)
        # Decode in fp32 whatever the autocast dtype: in bf16 (8 significant bits) a centre of ~600 px is
        # rounded to a multiple of 4 px before SimOTA, the IoU loss and evaluation see it (Megvii decodes in
        # the output dtype). The cast is free next to the head; the loss runs in fp32 anyway.
        raw = raw.float()
        # Decode by concatenation rather than in-place slice writes: autograd-safe and, on HPU, avoids
        # the strided-write pattern Habana's port had to work around (SW-90060).
        xy = (raw[..., :2] + grid[:, :2].float()) * grid[:, 2:].float()
        wh = torch.exp(raw[..., 2:4]) * grid[:, 2:].float()
        if self.training:
            return torch.cat((xy, wh, raw[..., 4:]), -1), raw[..., :4], grid
        return torch.cat((xy, wh, raw[..., 4:].sigmoid()), -1)


def make_grid(h: int, w: int, stride: int, device) -> torch.Tensor:
    """``[h*w, 3]`` rows of (x, y, stride) in row-major order; float32, no gradient."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    s = torch.full_like(xs, stride)
    return torch.stack((xs, ys, s), -1).reshape(-1, 3).float()


class YOLOX(nn.Module):
    """Backbone+neck (``backbone``) and head (``head``), named as Megvii's for checkpoint loading."""

    def __init__(self, backbone: YOLOPAFPN, head: YOLOXHead):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor):
        return self.head(self.backbone(x))


ACTIVATIONS = {"silu": lambda: nn.SiLU(inplace=True), "relu": lambda: nn.ReLU(inplace=True),
               "lrelu": lambda: nn.LeakyReLU(0.1, inplace=True)}    # Megvii's get_activation


def build_model(exp) -> YOLOX:
    """The YOLOX of an experiment config (depth, width, depthwise, act, num_classes), Megvii-initialised.

    Args:
        exp: a :class:`yolox_gaudi.config.Exp`.
    """
    in_channels = (256, 512, 1024)
    backbone = YOLOPAFPN(exp.depth, exp.width, in_channels, exp.depthwise)
    head = YOLOXHead(exp.num_classes, exp.width, in_channels=in_channels, depthwise=exp.depthwise)
    model = YOLOX(backbone, head)
    act = getattr(exp, "act", "silu")
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    if act != "silu":
        # Megvii passes `act` to every BaseConv (backbone, neck and head); every activation of the
        # network lives in a BaseConv, so swapping them after construction is the same network.
        for m in model.modules():
            if isinstance(m, BaseConv):
                m.act = ACTIVATIONS[act]()
    model.head.initialize_biases(1e-2)
    return model


def build_from_checkpoint(exp, ck: dict, source: str, *, use_checkpoint_exp: bool = True,
                          extra: tuple[str, ...] = ()) -> YOLOX:
    """The network a checkpoint holds, for eval / demo / export: the checkpoint's network fields win
    over ``exp``'s (``config.apply_checkpoint_exp``), then every tensor must load.

    Raises:
        ValueError: the weights do not fit (the message names ``source`` and a few tensors).
    """
    from .config import apply_checkpoint_exp

    if use_checkpoint_exp:
        apply_checkpoint_exp(exp, ck, extra=extra)
    model = build_model(exp)
    missing = load_pretrained(model, ck.get("model", ck))
    if missing:
        raise ValueError(f"{source} does not fit {exp.name} with {exp.num_classes} classes "
                         f"({len(missing)} tensors missing or of another shape, e.g. {missing[:3]})")
    return model


def load_pretrained(model: nn.Module, state_dict: dict) -> list[str]:
    """Loads ``state_dict`` (e.g. an official Megvii ``.pth``'s ``model``) where names and shapes match.

    Mismatched tensors (e.g. the class predictors when ``num_classes`` differs from 80) are skipped,
    like Megvii's ``load_ckpt``, and returned so the caller can log them.

    Returns:
        The keys that were not loaded (missing from ``state_dict`` or of another shape).
    """
    own = model.state_dict()
    ok = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(ok, strict=False)
    return sorted(set(own) - set(ok))
