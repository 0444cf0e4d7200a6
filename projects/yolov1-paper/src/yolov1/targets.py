"""Ground truth -> per-cell YOLO targets (built in the data loader, so the loss stays vectorised).

The cell that contains an object's centre is responsible for it (paper §2). Which of the cell's B
predictors is responsible depends on the current predictions (highest IoU), so that choice is made in
the loss; here each cell only gets up to B *slots* holding its objects' boxes, largest first.

Two objects whose centres fall in one cell: the paper does not say. Darknet keeps one (the last one
written). Here both are kept as long as there are predictors for them (B=2: two objects per cell), each
gets its own responsible predictor in the loss, and the cell's class target is the mean of their one-hot
vectors (the head has only one class distribution per cell). Objects beyond B in a cell cannot be
represented at all; they are dropped and counted (``dropped``), never silently.
"""

from __future__ import annotations

import torch


def encode_targets(boxes: torch.Tensor, labels: torch.Tensor, S: int, B: int, C: int) -> dict[str, torch.Tensor]:
    """Per-cell targets for one image.

    Args:
        boxes: ``(n, 4)`` normalised cx, cy, w, h (centres in [0, 1]).
        labels: ``(n,)`` class indices in ``[0, C)``.
        S, B, C: grid size, predictors per cell, classes.

    Returns:
        ``boxes`` (S, S, B, 4) slot boxes, ``slots`` (S, S, B) bool, ``classes`` (S, S, C) class target,
        ``dropped`` () int64: objects that found no free slot.

    Raises:
        ValueError: a label outside ``[0, C)`` or a box/label count mismatch.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"class index out of range [0, {C}): {labels.tolist()}")
    t_boxes = torch.zeros(S, S, B, 4)
    slots = torch.zeros(S, S, B, dtype=torch.bool)
    counts = torch.zeros(S, S, C)
    dropped = 0
    # Largest first: if a cell overflows, the small objects are the ones lost (the cheaper loss in mAP).
    order = torch.argsort(boxes[:, 2] * boxes[:, 3], descending=True, stable=True)
    for k in order.tolist():
        cx, cy = float(boxes[k, 0]), float(boxes[k, 1])
        col = min(max(int(cx * S), 0), S - 1)  # a centre exactly on the right/bottom edge -> last cell
        row = min(max(int(cy * S), 0), S - 1)
        free = (~slots[row, col]).nonzero()
        if len(free) == 0:
            dropped += 1
            continue
        j = int(free[0])
        t_boxes[row, col, j] = boxes[k]
        slots[row, col, j] = True
        counts[row, col, labels[k]] += 1
    n = counts.sum(-1, keepdim=True)
    classes = torch.where(n > 0, counts / n.clamp(min=1), counts)
    return {"boxes": t_boxes, "slots": slots, "classes": classes, "dropped": torch.tensor(dropped)}


def collate_targets(targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stacks per-image target dicts along a new batch dimension."""
    return {k: torch.stack([t[k] for t in targets]) for k in targets[0]}
