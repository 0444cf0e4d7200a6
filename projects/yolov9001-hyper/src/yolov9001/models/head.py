"""YOLOv8's decoupled Detect head with DFL (reg_max 16): what Hyper-YOLO uses unchanged.

Per level: ``cv2`` (box branch: 2 x Conv 3x3 + 1x1 to 4*reg_max logits) and ``cv3`` (class branch: 2 x Conv
3x3 + 1x1 to nc logits). Training returns the per-level maps [B, 4*reg_max + nc, H, W]; decoding (anchors,
DFL expectation, strides) lives in ``utils.boxes.DFLDecoder`` so the loss, the postprocessor and the ONNX
export share one implementation. ``strides`` and ``last_shapes`` are filled by ``core.runtime.attach_runtime``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .blocks import Conv


class DFL(nn.Module):
    """Integral of the DFL distribution: softmax over reg_max bins . arange(reg_max) (a frozen 1x1 conv).

    Kept as a conv with a fixed weight (not a buffer) because the published state dicts carry
    ``dfl.conv.weight``.
    """

    def __init__(self, reg_max: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)
        self.reg_max = reg_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape  # [B, 4*reg_max, A] -> [B, 4, A] distances in stride units
        return self.conv(x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    """Decoupled head over the N3/N4/N5 maps; ``forward`` returns the raw per-level maps."""

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), reg_max: int = 16):
        super().__init__()
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max
        c2 = max(16, ch[0] // 4, 4 * reg_max)
        c3 = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        self.strides: tuple[int, ...] = ()
        self.last_shapes: tuple[tuple[int, int], ...] = ()

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        self.last_shapes = tuple((int(o.shape[-2]), int(o.shape[-1])) for o in out)
        return out

    def bias_init(self, strides: tuple[int, ...], imgsz: int = 640, prior: float | None = None) -> None:
        """YOLOv8's prior: box logits 1.0; class logits log(5/nc/(imgsz/s)^2) (~0.01 objects per cell at 640).

        ``prior`` overrides the class prior probability (the config's ``detect_bias_prior``).
        """
        for a, b, s in zip(self.cv2, self.cv3, strides):
            a[-1].bias.data[:] = 1.0
            if prior is None:
                b[-1].bias.data[: self.nc] = math.log(5 / self.nc / (imgsz / s) ** 2)
            else:
                b[-1].bias.data[: self.nc] = math.log(prior / (1 - prior))
