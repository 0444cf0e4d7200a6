"""Network output -> detections: class-specific confidence, threshold, per-class NMS (paper §2, §4).

At test time the paper multiplies each box's confidence by the cell's conditional class probabilities,
``Pr(class_i | object) * Pr(object) * IoU = score``, giving ``S * S * B * C`` scored boxes; those above
``conf_threshold`` go through non-maximum suppression per class (``torchvision.ops.batched_nms``; NMS
"adds 2-3% in mAP"). A box may be kept for several classes, as in Darknet.

For mAP the threshold is low (0.005): AP integrates over all thresholds, and cutting the tail early
only loses recall. For a demo picture use ~0.2.
"""

from __future__ import annotations

import torch

from .boxes import cxcywh_to_xyxy, decode_boxes


def decode(pred: torch.Tensor, B: int, *, conf_threshold: float = 0.005, nms_iou: float = 0.5,
           max_detections: int = 100) -> list[dict[str, torch.Tensor]]:
    """Detections per image from ``(N, S, S, 5B + C)`` predictions.

    Args:
        pred: raw network output.
        B: predictors per cell.
        conf_threshold: minimum class-specific score.
        nms_iou: per-class NMS IoU threshold.
        max_detections: keep the best this many per image after NMS.

    Returns:
        One dict per image: ``boxes`` (k, 4) normalised xyxy clipped to [0, 1], ``scores`` (k,),
        ``labels`` (k,) class indices; sorted by score.
    """
    from torchvision.ops import batched_nms

    pred = pred.float()
    N, S = pred.shape[0], pred.shape[1]
    C = pred.shape[-1] - 5 * B
    boxes = cxcywh_to_xyxy(decode_boxes(pred, B)).clamp(0, 1).reshape(N, S * S * B, 4)
    conf = pred[..., : 5 * B].reshape(N, S, S, B, 5)[..., 4]  # (N,S,S,B)
    probs = pred[..., 5 * B :]  # (N,S,S,C)
    scores = (conf[..., None] * probs[..., None, :]).reshape(N, S * S * B, C)
    out = []
    for n in range(N):
        box_idx, cls = (scores[n] > conf_threshold).nonzero(as_tuple=True)
        b, s = boxes[n, box_idx], scores[n, box_idx, cls]
        # Degenerate boxes (w or h 0 after clipping) can never match anything; drop them before NMS.
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, s, cls = b[ok], s[ok], cls[ok]
        keep = batched_nms(b, s, cls, nms_iou)[:max_detections]
        out.append({"boxes": b[keep], "scores": s[keep], "labels": cls[keep]})
    return out


def to_image_coords(det: dict[str, torch.Tensor], width: int, height: int) -> torch.Tensor:
    """Normalised xyxy -> pixel xyxy of the original image (the input was resized without letterbox)."""
    scale = torch.tensor([width, height, width, height], dtype=det["boxes"].dtype, device=det["boxes"].device)
    return det["boxes"] * scale
