"""Pictures a run leaves behind: annotated images, batch grids, the PR curve of a validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from yolo_common.draw import draw_boxes  # one drawing for every project's detect output


def batch_grid(images, targets, names: list[str], max_images: int = 16) -> np.ndarray:
    """A training batch (uint8 [B,S,S,3], targets [N,6]) -> one HxWx3 grid with the GT boxes drawn."""
    b = min(len(images), max_images)
    cols = int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / cols))
    s = images.shape[1]
    grid = np.full((rows * s, cols * s, 3), 255, np.uint8)
    for k in range(b):
        t = targets[targets[:, 0] == k]
        im = draw_boxes(images[k].cpu().numpy(), t[:, 2:6].tolist(), t[:, 1].long().tolist(), names)
        r, c = divmod(k, cols)
        grid[r * s:(r + 1) * s, c * s:(c + 1) * s] = np.asarray(im)
    return grid


def pr_curve(gt: dict, detections: list[dict], out: Path) -> Path:
    """Precision-recall at IoU 0.5 (all areas, 100 dets) per class and mean, from COCOeval, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco = COCO()
    coco.dataset = {**gt, "info": {}}
    coco.createIndex()
    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    if detections:
        res = coco.loadRes([dict(d) for d in detections])
        ev = COCOeval(coco, res, "bbox")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        prec = ev.eval["precision"][0, :, :, 0, -1]  # IoU .5, all recalls, classes, area all, maxDets 100
        for k, cat in enumerate(gt["categories"]):
            p = prec[:, k]
            if (p >= 0).any():
                ax.plot(recall, np.where(p < 0, np.nan, p), lw=1, label=f"{cat['name']} {p[p >= 0].mean():.3f}")
        valid = np.where(prec < 0, np.nan, prec)
        ax.plot(recall, np.nanmean(valid, 1), lw=3, color="k", label=f"all {np.nanmean(valid):.3f} AP50")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="PR curve (IoU 0.5)")
    ax.legend(fontsize=7, loc="lower left")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
