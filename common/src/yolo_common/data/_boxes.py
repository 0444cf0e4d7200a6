"""Box repair shared by the readers: clip to the image, drop what has no area left, count both."""

from __future__ import annotations

import numpy as np

from .records import SkipCounter

# Clipping by less than this many pixels is float noise (e.g. YOLO's cx + w/2 = 1.0000001), not a bad box:
# still clipped, but not counted, so the skip summary only shows boxes that were really outside.
_CLIP_TOL = 0.01


def clip_boxes(boxes: np.ndarray, width: int, height: int, skipped: SkipCounter,
               where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Clip pixel xyxy ``boxes`` to ``[0, width] x [0, height]`` and find the ones left with zero area.

    Args:
        boxes: ``(n, 4)`` pixel xyxy.
        width, height: image size.
        skipped: counter that gets "box clipped" and "zero-area box dropped" entries.
        where: example location for the counter (a file name).

    Returns:
        ``(clipped_boxes, keep)``: float32 ``(n, 4)`` boxes and a bool ``(n,)`` mask of boxes with area.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    lim = np.array([width, height, width, height], np.float32)
    clipped = np.clip(boxes, 0.0, lim)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    moved = (np.abs(clipped - boxes) > _CLIP_TOL).any(1) & keep
    if moved.any():
        skipped.add("box clipped", where, int(moved.sum()))
    if (~keep).any():
        skipped.add("zero-area box dropped", where, int((~keep).sum()))
    return clipped, keep
