"""Element-wise IoU variants (IoU / GIoU / DIoU / CIoU) of paired xyxy boxes, through torchvision.ops."""

from __future__ import annotations

import torch
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

_LOSSES = {"ciou": complete_box_iou_loss, "diou": distance_box_iou_loss, "giou": generalized_box_iou_loss}


def plain_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU of paired boxes [..., 4] -> [...]."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    return inter / (area_a + area_b - inter + eps)


def paired_iou(a: torch.Tensor, b: torch.Tensor, kind: str = "ciou") -> torch.Tensor:
    """IoU of kind ``kind`` between paired boxes [N, 4] (fp32) -> [N]; CIoU/DIoU/GIoU can be negative."""
    a, b = a.float(), b.float()
    if kind == "iou":
        return plain_iou(a, b)
    if not a.numel():
        return a.new_zeros(a.shape[:-1])
    shape = a.shape[:-1]
    return 1.0 - _LOSSES[kind](a.reshape(-1, 4), b.reshape(-1, 4), reduction="none", eps=1e-7).reshape(shape)
