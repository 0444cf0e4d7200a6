"""The YOLOv1 sum-squared loss (paper §2.2, eq. 3), with none of the starting code's loss bugs.

    lambda_coord * sum_ij 1obj_ij [(x - x^)^2 + (y - y^)^2]
  + lambda_coord * sum_ij 1obj_ij [(sqrt w - sqrt w^)^2 + (sqrt h - sqrt h^)^2]
  + sum_ij 1obj_ij (C - C^)^2                  C^ = IoU(predicted box, its GT), detached
  + lambda_noobj * sum_ij 1noobj_ij C^2         every predictor that is not responsible, target 0
  + sum_i 1obj_i sum_c (p(c) - p^(c))^2         class error only in cells that hold an object

- **Responsibility**: in a cell, an object's responsible predictor is the one whose current box has the
  highest IoU with it. Exactly one per object. With two objects in one cell (see ``targets``), the larger
  picks first and the second takes the best remaining predictor. When *every* free predictor has IoU 0
  with the object (all of them at initialisation) the paper says nothing:
  ``responsibility="iou"`` lets ``argmax`` take the first (predictor 0 then wins almost every object for
  the whole run and the second predictor never learns boxes: 91-97 % to predictor 0 on this project's
  smoke, every epoch; 94-99.8 % in the issue's measurement);
  ``responsibility="darknet"`` (the default) is the authors' code (``detection_layer.c``): the predictor
  with the smallest box RMSE (x, y, w, h in image units) is responsible. ``resp_share`` reports the
  fraction of objects each predictor took.
- **noobj**: every non-responsible predictor, including the second predictor of an object cell, is
  pushed to confidence 0 (weighted 0.5). The starting code used the cell's objectness as that
  predictor's target, pushing it to 1.
- **Confidence target** = IoU of the responsible box with its GT (``rescore=True``, the paper's
  Pr(obj) * IoU); ``rescore=False`` uses 1, the common simplification, as an explicit flag.
- x, y are offsets inside the cell; w, h are relative to the image and predicted as square roots.
- Sum over cells and predictors per image, mean over the batch (Darknet divides by the batch too).

    python -m yolov1.loss      # hand-computed cases: perfect prediction, noobj, ties, empty image
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .boxes import cell_grid, decode_boxes, iou_cxcywh


@dataclass
class LossOutput:
    """The total (what ``backward`` sees) and its parts, each already divided by the batch size."""

    total: torch.Tensor
    coord: torch.Tensor
    obj: torch.Tensor
    noobj: torch.Tensor
    cls: torch.Tensor
    mean_iou: torch.Tensor  # mean IoU of responsible predictors (a training diagnostic)
    resp_share: torch.Tensor | None = None  # (B,) fraction of this batch's objects each predictor answers for

    def as_dict(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "loss_coord": float(self.coord), "loss_obj": float(self.obj),
                "loss_noobj": float(self.noobj), "loss_cls": float(self.cls), "mean_iou": float(self.mean_iou)}


class YoloLoss(nn.Module):
    """The paper's loss over ``(N, S, S, 5B + C)`` predictions and ``targets.encode_targets`` targets.

    Args:
        S, B, C: grid, predictors per cell, classes.
        lambda_coord, lambda_noobj: 5 and 0.5 in the paper.
        rescore: confidence target = IoU (paper) or 1.
        responsibility: ``"darknet"`` (all-zero IoUs: smallest RMSE) or ``"iou"`` (first predictor).
    """

    def __init__(self, S: int = 7, B: int = 2, C: int = 20, *, lambda_coord: float = 5.0,
                 lambda_noobj: float = 0.5, rescore: bool = True, responsibility: str = "darknet") -> None:
        super().__init__()
        if responsibility not in ("darknet", "iou"):
            raise ValueError(f"responsibility must be 'darknet' or 'iou', got {responsibility!r}")
        self.responsibility = responsibility
        self.S, self.B, self.C = S, B, C
        self.lambda_coord = lambda_coord
        self.lambda_noobj = lambda_noobj
        self.rescore = rescore

    def responsible(self, pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """One-hot assignment ``(N, S, S, B_pred, B_slot)``: predictor j is responsible for slot k.

        Args:
            pred_boxes: ``(N, S, S, B, 4)`` decoded predictions; gt_boxes: ``(N, S, S, B, 4)`` slot boxes;
            slots: ``(N, S, S, B)`` which slots hold an object (filled largest object first).
        """
        ious = iou_cxcywh(pred_boxes[..., :, None, :], gt_boxes[..., None, :, :])  # (N,S,S,Bp,Bs)
        assign = torch.zeros_like(ious, dtype=torch.bool)
        taken = torch.zeros_like(slots)  # (N,S,S,Bp)
        for k in range(slots.shape[-1]):
            # Taken predictors get -inf; argmax then picks the free predictor with the highest IoU (ties:
            # the lowest index, one winner only). Darknet: where no free predictor overlaps the object,
            # the score is -RMSE instead, so the closest box wins.
            score = ious[..., k]
            if self.responsibility == "darknet":
                rmse = ((pred_boxes - gt_boxes[..., k : k + 1, :]) ** 2).sum(-1).sqrt()     # (N,S,S,Bp)
                none = (score.masked_fill(taken, 0.0) <= 0).all(-1, keepdim=True)
                score = torch.where(none, -rmse, score)
            score = score.masked_fill(taken, float("-inf"))
            j = score.argmax(dim=-1, keepdim=True)
            pick = torch.zeros_like(taken).scatter_(-1, j, True) & slots[..., k : k + 1]
            assign[..., k] = pick
            taken = taken | pick
        return assign

    def forward(self, pred: torch.Tensor, targets: dict[str, torch.Tensor]) -> LossOutput:
        N, S, B, C = pred.shape[0], self.S, self.B, self.C
        if pred.shape[1:] != (S, S, 5 * B + C):
            raise ValueError(f"predictions {tuple(pred.shape)} do not match S={S}, B={B}, C={C}")
        pred = pred.float()  # the loss in fp32 even under autocast: squared sums over 1470 values
        gt_boxes = targets["boxes"].to(pred.device, torch.float32)  # (N,S,S,B,4)
        slots = targets["slots"].to(pred.device)  # (N,S,S,B)
        cls_t = targets["classes"].to(pred.device, torch.float32)  # (N,S,S,C)

        p = pred[..., : 5 * B].reshape(N, S, S, B, 5)
        with torch.no_grad():
            pred_boxes = decode_boxes(pred, B)
            assign = self.responsible(pred_boxes, gt_boxes, slots)  # (N,S,S,Bp,Bs)
            resp = assign.any(-1)  # (N,S,S,Bp)
            a = assign.float()
            # The GT box each responsible predictor answers for (zeros elsewhere).
            matched = (a[..., None] * gt_boxes[..., None, :, :]).sum(-2)  # (N,S,S,Bp,4)
            iou = iou_cxcywh(pred_boxes, matched) * resp
        r = resp.float()

        # Coordinates: targets in the predictor's own parameterisation (cell offsets, sqrt sizes).
        cols, rows = cell_grid(S, pred.device)
        tx = matched[..., 0] * S - cols[None, :, :, None]
        ty = matched[..., 1] * S - rows[None, :, :, None]
        tw, th = matched[..., 2].clamp(min=0).sqrt(), matched[..., 3].clamp(min=0).sqrt()
        coord = r * ((p[..., 0] - tx) ** 2 + (p[..., 1] - ty) ** 2 + (p[..., 2] - tw) ** 2 + (p[..., 3] - th) ** 2)

        conf = p[..., 4]
        conf_target = iou if self.rescore else torch.ones_like(iou)
        obj = r * (conf - conf_target) ** 2
        noobj = (1.0 - r) * conf**2

        cell_has_obj = slots.any(-1).float()  # (N,S,S)
        cls = cell_has_obj * ((pred[..., 5 * B :] - cls_t) ** 2).sum(-1)

        coord_l = self.lambda_coord * coord.sum() / N
        obj_l = obj.sum() / N
        noobj_l = self.lambda_noobj * noobj.sum() / N
        cls_l = cls.sum() / N
        n_resp = r.sum()
        mean_iou = (iou.sum() / n_resp) if n_resp > 0 else torch.zeros((), device=pred.device)
        total = coord_l + obj_l + noobj_l + cls_l
        per_pred = r.sum((0, 1, 2))                                  # objects each predictor answers for
        share = per_pred / n_resp.clamp(min=1)
        return LossOutput(total, coord_l.detach(), obj_l.detach(), noobj_l.detach(), cls_l.detach(),
                          mean_iou.detach(), share.detach())


def build_loss(S: int = 7, B: int = 2, C: int = 20, *, lambda_coord: float = 5.0, lambda_noobj: float = 0.5,
               rescore: bool = True, responsibility: str = "darknet") -> YoloLoss:
    """The paper's loss; defaults are the paper's weights and Darknet's tie rule."""
    return YoloLoss(S, B, C, lambda_coord=lambda_coord, lambda_noobj=lambda_noobj, rescore=rescore,
                    responsibility=responsibility)


def encode_prediction(S: int, B: int, C: int, cells: dict) -> torch.Tensor:
    """A ``(1, S, S, 5B + C)`` prediction with chosen cells filled (for checks and tests).

    Args:
        cells: ``{(row, col): {"boxes": [(cx, cy, w, h, conf), ...B], "classes": [C values]}}`` with
            boxes in normalised image coordinates; they are converted to the head's parameterisation.
    """
    out = torch.zeros(1, S, S, 5 * B + C)
    for (row, col), spec in cells.items():
        for j, (cx, cy, w, h, conf) in enumerate(spec.get("boxes", [])):
            out[0, row, col, 5 * j : 5 * j + 5] = torch.tensor([cx * S - col, cy * S - row, w**0.5, h**0.5, conf])
        if "classes" in spec:
            out[0, row, col, 5 * B :] = torch.tensor(spec["classes"], dtype=torch.float32)
    return out


def main() -> None:
    """Self-check on hand-computed cases; prints each case's loss parts."""
    from .targets import collate_targets, encode_targets

    S, B, C = 7, 2, 3
    loss = build_loss(S, B, C)
    gt = torch.tensor([[0.5, 0.5, 0.4, 0.3]])  # centre in cell (3, 3)
    tgt = collate_targets([encode_targets(gt, torch.tensor([1]), S, B, C)])
    print(f"targets: boxes {tuple(tgt['boxes'].shape)}, slots {tuple(tgt['slots'].shape)}, "
          f"classes {tuple(tgt['classes'].shape)}")
    checks = []

    perfect = encode_prediction(S, B, C, {(3, 3): {"boxes": [(0.5, 0.5, 0.4, 0.3, 1.0)], "classes": [0, 1, 0]}})
    out = loss(perfect, tgt)
    checks.append(("perfect prediction -> 0", float(out.total), 0.0))

    second = encode_prediction(S, B, C, {(3, 3): {"boxes": [(0.5, 0.5, 0.4, 0.3, 1.0), (0.5, 0.5, 0.1, 0.1, 1.0)],
                                                  "classes": [0, 1, 0]}})
    out = loss(second, tgt)
    checks.append(("non-responsible conf 1 -> 0.5 * 1", float(out.total), 0.5))

    empty = collate_targets([encode_targets(torch.zeros(0, 4), torch.zeros(0), S, B, C)])
    pred = torch.zeros(1, S, S, 5 * B + C)
    pred[..., 4] = 0.2
    out = loss(pred, empty)
    checks.append(("empty image, every conf 0.2 -> 0.5 * 49 * 0.04", float(out.total), 0.5 * S * S * 0.04))

    ok = True
    for name, got, want in checks:
        good = abs(got - want) < 1e-5
        ok &= good
        print(f"{'ok ' if good else 'BAD'} {name}: {got:.6f} (expected {want:.6f})")
    print("self-check:", "OK" if ok else "FAILED")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
