"""Box helpers in normalised image coordinates (x and y in [0, 1] of the image width / height)."""

from __future__ import annotations

import torch


def cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` centre/size boxes to corner boxes."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` corner boxes to centre/size boxes."""
    x1, y1, x2, y2 = b.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def iou_cxcywh(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Element-wise IoU of broadcastable ``(..., 4)`` centre/size boxes; 0 where the union is empty.

    Negative widths/heights (an untrained sqrt-w head squared is never negative, but a caller may pass
    raw values) are treated as empty boxes.
    """
    a, b = cxcywh_to_xyxy(a), cxcywh_to_xyxy(b)
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]).clamp(min=0) * (a[..., 3] - a[..., 1]).clamp(min=0)
    area_b = (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)
    union = area_a + area_b - inter
    return torch.where(union > eps, inter / union.clamp(min=eps), torch.zeros_like(union))


def cell_grid(S: int, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cols, rows)``, each ``(S, S)``: the column and row index of every cell (row-major, y first)."""
    idx = torch.arange(S, device=device, dtype=dtype)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    return cols, rows


def decode_boxes(pred: torch.Tensor, B: int) -> torch.Tensor:
    """Predicted boxes ``(N, S, S, B, 4)`` as normalised image cx, cy, w, h.

    x, y are offsets inside the cell, so ``cx = (col + x) / S``; the head predicts sqrt(w), sqrt(h), so
    ``w = sqrt_w ** 2`` (clamped at 0 first: a negative output is not a "negative sqrt" of anything).
    """
    N, S = pred.shape[0], pred.shape[1]
    p = pred[..., : 5 * B].reshape(N, S, S, B, 5)
    cols, rows = cell_grid(S, pred.device, pred.dtype)
    cx = (cols[None, :, :, None] + p[..., 0]) / S
    cy = (rows[None, :, :, None] + p[..., 1]) / S
    w = p[..., 2].clamp(min=0) ** 2
    h = p[..., 3].clamp(min=0) ** 2
    return torch.stack((cx, cy, w, h), dim=-1)
