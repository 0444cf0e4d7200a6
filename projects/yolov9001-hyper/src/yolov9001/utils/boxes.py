"""Anchor points, ltrb <-> box transforms and the DFL decoder shared by loss, postprocess and export."""

from __future__ import annotations

import torch
from torch import nn


def make_anchors(shapes: tuple[tuple[int, int], ...], strides: tuple[int, ...], offset: float = 0.5,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Anchor centres (grid units, + ``offset``) [A, 2] and their strides [A, 1], level by level, row-major."""
    points, stride_list = [], []
    for (h, w), s in zip(shapes, strides):
        sy, sx = torch.meshgrid(torch.arange(h, device=device, dtype=dtype) + offset,
                                torch.arange(w, device=device, dtype=dtype) + offset, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(distance: torch.Tensor, anchors: torch.Tensor, xywh: bool = False, dim: int = -1) -> torch.Tensor:
    """ltrb distances around anchor points -> xyxy (or cx, cy, w, h)."""
    lt, rb = distance.chunk(2, dim)
    x1y1, x2y2 = anchors - lt, anchors + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(anchors: torch.Tensor, boxes: torch.Tensor, reg_max: int) -> torch.Tensor:
    """xyxy boxes -> ltrb distances from the anchors, clamped to the DFL range [0, reg_max - 1 - 0.01]."""
    x1y1, x2y2 = boxes.chunk(2, -1)
    return torch.cat((anchors - x1y1, x2y2 - anchors), -1).clamp_(0, reg_max - 1 - 0.01)


class DFLDecoder(nn.Module):
    """Detect maps -> (boxes xyxy in input pixels [B, A, 4], class logits [B, A, nc]).

    The DFL expectation is sum_i softmax(logits / tau)_i * i over ``reg_max`` bins (``tau`` = ``dfl_tau``;
    1 is the published decode). Anchors are rebuilt only when the map shapes change.
    """

    def __init__(self, reg_max: int, strides: tuple[int, ...], nc: int, tau: float = 1.0, centered: bool = True):
        super().__init__()
        self.reg_max, self.strides, self.nc = reg_max, tuple(strides), nc
        self.tau = float(tau)
        self.offset = 0.5 if centered else 0.0
        self.register_buffer("proj", torch.arange(reg_max, dtype=torch.float), persistent=False)
        self._key = None
        self._anchors = self._stride_t = None

    def anchors(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchor points in grid units [A, 2], strides [A, 1]) for these maps (fp32, cached)."""
        shapes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in feats)
        key = (shapes, feats[0].device)
        if self._key != key or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            self._anchors, self._stride_t = make_anchors(shapes, self.strides, self.offset, feats[0].device)
            self._key = key
        return self._anchors, self._stride_t

    def split(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated (box logits [B, A, 4*reg_max], class logits [B, A, nc]) over levels."""
        b = feats[0].shape[0]
        cat = torch.cat([f.reshape(b, 4 * self.reg_max + self.nc, -1) for f in feats], 2)
        box, cls = cat.split((4 * self.reg_max, self.nc), 1)
        return box.transpose(1, 2), cls.transpose(1, 2)

    def distances(self, box_logits: torch.Tensor) -> torch.Tensor:
        """[B, A, 4*reg_max] -> expected ltrb [B, A, 4] in stride units (fp32)."""
        b, a, _ = box_logits.shape
        p = (box_logits.float().view(b, a, 4, self.reg_max) / self.tau).softmax(-1)
        return p @ self.proj.to(p.device)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        box, cls = self.split(feats)
        anchors, strides = self.anchors(feats)
        boxes = dist2bbox(self.distances(box), anchors) * strides
        return boxes, cls
