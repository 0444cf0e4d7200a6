"""SimOTA label assignment and the YOLOX loss (IoU + objectness + classification [+ L1]).

Assignment follows YOLOX 0.3.0 by default (``simota_rule 0.3.0``, which Habana's port also keeps):
candidates are anchors whose centre is inside a GT box *or* within 2.5 strides of its centre; cost =
class BCE + 3 x (-log IoU) + 1e5 for anchors not both inside the box and the centre region.
``simota_rule head`` is Megvii's January 2023 rule (commit 14c62a7, PR #1589; +0.5 AP for YOLOX-S is the
figure quoted for it, not measured here):
candidates are anchors within 1.5 strides of a GT centre, the box test is gone, and the penalty for a
candidate outside *that* GT's centre square is 1e6. Either way each GT takes its ``dynamic_k`` cheapest
anchors, ``dynamic_k = max(1, int(sum of its 10 best IoUs))``; an anchor claimed by several GTs goes to
the cheapest one.

Two rewrites, equal in value, keep memory and time down (the ``[num_gt, n_cand, num_classes]`` BCE
tensor is the usual OOM in YOLOX training):

- class cost without the 3-D tensor: with ``p = sqrt(sigmoid(cls) * sigmoid(obj))``,
  ``BCE(p, onehot(c)) summed over classes = sum_k -log(1-p_k) + log(1-p_c) - log(p_c)``
  (each log clamped at -100 as ``binary_cross_entropy`` does);
- dynamic-k by one ``topk`` with the largest k, masked per GT, instead of a Python loop over GTs.

The loss is normalised by the number of foreground anchors. Under data parallelism that count is
averaged over ranks first, so a 2-process run computes the same gradient as one process holding the
whole global batch (upstream divides by each rank's own count).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# (centre radius in strides, cost added where the geometry test fails) per rule
SIMOTA_RULES = {"0.3.0": (2.5, 1e5), "head": (1.5, 1e6)}
IOU_COST_WEIGHT = 3.0
REG_WEIGHT = 5.0


def bboxes_iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``[len(a), len(b)]`` of (cx, cy, w, h) boxes."""
    tl = torch.max(a[:, None, :2] - a[:, None, 2:] / 2, b[None, :, :2] - b[None, :, 2:] / 2)
    br = torch.min(a[:, None, :2] + a[:, None, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2)
    inter = (br - tl).clamp(min=0).prod(2)
    area_a, area_b = a[:, 2:].prod(1), b[:, 2:].prod(1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-16)


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise ``1 - IoU^2`` of matched (cx, cy, w, h) pairs (YOLOX's ``IOUloss(loss_type="iou")``)."""
    tl = torch.max(pred[:, :2] - pred[:, 2:] / 2, target[:, :2] - target[:, 2:] / 2)
    br = torch.min(pred[:, :2] + pred[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2)
    inter = (br - tl).clamp(min=0).prod(1) * (tl < br).all(1)
    iou = inter / (pred[:, 2:].prod(1) + target[:, 2:].prod(1) - inter + 1e-16)
    return 1 - iou**2


@dataclass
class Assignment:
    """SimOTA's result for one image (``A`` anchors, ``F`` of them foreground)."""

    fg_mask: torch.Tensor          # [A] bool
    matched_gt: torch.Tensor       # [F] index of the GT each foreground anchor learns
    matched_iou: torch.Tensor      # [F] IoU of the prediction with that GT (the cls target's scale)

    @property
    def num_fg(self) -> int:
        return int(self.matched_gt.numel())


@torch.no_grad()
def simota_cost(gt_boxes: torch.Tensor, gt_classes: torch.Tensor, pred_boxes: torch.Tensor,
                cls_logits: torch.Tensor, obj_logits: torch.Tensor, grid: torch.Tensor,
                rule: str = "0.3.0") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA's candidates and cost for one image (Megvii's ``get_assignments`` up to the matching).

    Args:
        gt_boxes: ``[G, 4]`` (cx, cy, w, h) in input pixels, G >= 1.
        gt_classes: ``[G]`` class indices.
        pred_boxes: ``[A, 4]`` decoded predictions (cx, cy, w, h).
        cls_logits: ``[A, nc]``; obj_logits: ``[A]`` or ``[A, 1]``.
        grid: ``[A, 3]`` (x, y, stride) of each anchor.
        rule: ``"0.3.0"`` (in box or within 2.5 strides) or ``"head"`` (within 1.5 strides only);
            see the module docstring.

    Returns:
        ``(cand_idx [C], cost [G, C], ious [G, C])``; ``C`` may be 0.
    """
    if rule not in SIMOTA_RULES:
        raise ValueError(f"simota rule must be one of {', '.join(SIMOTA_RULES)}, got {rule!r}")
    center_radius, outside_cost = SIMOTA_RULES[rule]
    stride = grid[:, 2]
    centers = (grid[:, :2] + 0.5) * stride[:, None]                               # [A, 2]
    radius = center_radius * stride[None, :, None]
    in_center = ((centers[None] - gt_boxes[:, None, :2]).abs() < radius).all(-1)     # [G, A]
    if rule == "head":      # the centre square alone decides, for candidacy and the geometry cost
        geometry = in_center
        candidate = in_center.any(0)
    else:
        half = gt_boxes[:, None, 2:] / 2
        in_box = ((centers[None] - (gt_boxes[:, None, :2] - half)).min(-1).values > 0) & \
                 (((gt_boxes[:, None, :2] + half) - centers[None]).min(-1).values > 0)   # [G, A]
        geometry = in_box & in_center
        candidate = in_box.any(0) | in_center.any(0)                               # [A]
    cand_idx = candidate.nonzero().squeeze(1)
    geometry_ok = geometry[:, cand_idx]                                            # [G, C]

    ious = bboxes_iou_cxcywh(gt_boxes.float(), pred_boxes[cand_idx].float())      # [G, C]
    iou_cost = -torch.log(ious + 1e-8)
    p = (cls_logits[cand_idx].float().sigmoid() * obj_logits.reshape(-1)[cand_idx, None].float().sigmoid()).sqrt()
    log_p = torch.log(p).clamp(min=-100)
    log_1mp = torch.log1p(-p).clamp(min=-100)
    gtc = gt_classes.long()
    cls_cost = -log_1mp.sum(1)[None, :] + log_1mp[:, gtc].T - log_p[:, gtc].T      # [G, C]
    cost = cls_cost + IOU_COST_WEIGHT * iou_cost + outside_cost * (~geometry_ok).float()
    return cand_idx, cost, ious


@torch.no_grad()
def dynamic_k_matching(cost: torch.Tensor, ious: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each GT takes its ``dynamic_k`` cheapest candidates; a candidate claimed twice goes to the cheapest GT.

    Returns:
        ``(matching [G, C] bool, dynamic_k [G])``.
    """
    num_gt, num_cand = cost.shape
    topk_iou = ious.topk(min(10, num_cand), dim=1).values
    dynamic_k = topk_iou.sum(1).int().clamp(min=1, max=num_cand)                   # [G]
    order = cost.topk(int(dynamic_k.max()), dim=1, largest=False).indices          # [G, kmax]
    keep = torch.arange(order.shape[1], device=cost.device)[None, :] < dynamic_k[:, None]
    matching = torch.zeros_like(cost, dtype=torch.bool)
    matching[torch.arange(num_gt, device=cost.device)[:, None].expand_as(order)[keep], order[keep]] = True

    claimed_twice = matching.sum(0) > 1
    if claimed_twice.any():
        best_gt = cost[:, claimed_twice].argmin(0)
        matching[:, claimed_twice] = False
        matching[best_gt, claimed_twice.nonzero().squeeze(1)] = True
    return matching, dynamic_k


@torch.no_grad()
def simota_assign(gt_boxes: torch.Tensor, gt_classes: torch.Tensor, pred_boxes: torch.Tensor,
                  cls_logits: torch.Tensor, obj_logits: torch.Tensor, grid: torch.Tensor,
                  rule: str = "0.3.0") -> Assignment:
    """SimOTA for one image: :func:`simota_cost` then :func:`dynamic_k_matching` (same arguments as
    :func:`simota_cost`). Returns the :class:`Assignment` (no foreground when no anchor is a candidate)."""
    num_anchors = grid.shape[0]
    cand_idx, cost, ious = simota_cost(gt_boxes, gt_classes, pred_boxes, cls_logits, obj_logits, grid, rule)
    fg_mask = torch.zeros(num_anchors, dtype=torch.bool, device=grid.device)
    if cand_idx.numel() == 0:
        return Assignment(fg_mask, gt_classes.new_zeros(0), pred_boxes.new_zeros(0))
    matching, _ = dynamic_k_matching(cost, ious)
    fg_cand = matching.any(0)                                                      # [C]
    matched_gt = matching[:, fg_cand].float().argmax(0)
    fg_mask[cand_idx[fg_cand]] = True
    matched_iou = ious[:, fg_cand].gather(0, matched_gt[None]).squeeze(0)
    return Assignment(fg_mask, matched_gt, matched_iou)


class YOLOXLoss:
    """The training loss of a YOLOX head's training output.

    Args:
        num_classes: classes of the head.
        use_l1: add the L1 loss on raw regression outputs (Megvii turns it on for the no-aug epochs).
        num_fg_reduce: optional callable averaging the foreground count over ranks (see the module
            docstring); ``None`` in single-process runs.
    """

    def __init__(self, num_classes: int, use_l1: bool = False, num_fg_reduce=None, simota_rule: str = "0.3.0"):
        if simota_rule not in SIMOTA_RULES:
            raise ValueError(f"simota_rule must be one of {', '.join(SIMOTA_RULES)}, got {simota_rule!r}")
        self.num_classes = num_classes
        self.use_l1 = use_l1
        self.num_fg_reduce = num_fg_reduce
        self.simota_rule = simota_rule

    def assign(self, preds: torch.Tensor, targets: torch.Tensor, grid: torch.Tensor) -> list[Assignment | None]:
        """SimOTA per image; ``None`` for images without labels."""
        out = []
        counts = (targets[..., 3] > 0).sum(1).tolist()  # padded rows have zero width
        for b, n in enumerate(counts):
            if n == 0:
                out.append(None)
                continue
            t = targets[b, :n]
            out.append(simota_assign(t[:, 1:5], t[:, 0].long(), preds[b, :, :4], preds[b, :, 5:],
                                     preds[b, :, 4], grid, rule=self.simota_rule))
        return out

    def __call__(self, preds: torch.Tensor, raw_reg: torch.Tensor, grid: torch.Tensor,
                 targets: torch.Tensor, assignments: list | None = None) -> dict[str, torch.Tensor]:
        """Losses for a batch.

        Args:
            preds: ``[B, A, 5+nc]`` head training output (decoded boxes, obj/cls logits).
            raw_reg: ``[B, A, 4]`` undecoded regression (L1 target space).
            grid: ``[A, 3]`` anchor (x, y, stride).
            targets: ``[B, max_labels, 5]`` (class, cx, cy, w, h) in input pixels, zero rows padding.
            assignments: precomputed :meth:`assign` output (the benchmark times it separately).

        Returns:
            ``total_loss, iou_loss, conf_loss, cls_loss, l1_loss, num_fg, fg_per_image``: ``num_fg`` is
            Megvii's logged figure, foreground anchors per GT box; ``fg_per_image`` per image.
        """
        preds, raw_reg, grid, targets = preds.float(), raw_reg.float(), grid.float(), targets.float()
        if assignments is None:
            assignments = self.assign(preds.detach(), targets, grid)
        batch, num_anchors = preds.shape[:2]
        fg_masks, cls_t, reg_t, l1_t = [], [], [], []
        for b, a in enumerate(assignments):
            if a is None or a.num_fg == 0:
                fg_masks.append(torch.zeros(num_anchors, dtype=torch.bool, device=preds.device))
                continue
            t = targets[b, a.matched_gt]
            fg_masks.append(a.fg_mask)
            cls_t.append(F.one_hot(t[:, 0].long(), self.num_classes).float() * a.matched_iou[:, None])
            reg_t.append(t[:, 1:5])
            if self.use_l1:
                g = grid[a.fg_mask]
                l1_t.append(torch.cat((t[:, 1:3] / g[:, 2:] - g[:, :2],
                                       torch.log(t[:, 3:5] / g[:, 2:] + 1e-8)), 1))
        fg = torch.stack(fg_masks)                                                    # [B, A]
        num_fg_local = fg.sum().float()
        num_fg = self.num_fg_reduce(num_fg_local) if self.num_fg_reduce is not None else num_fg_local
        num_fg = num_fg.clamp(min=1.0)
        obj_t = fg.float()
        loss_obj = F.binary_cross_entropy_with_logits(preds[..., 4], obj_t, reduction="sum") / num_fg
        zero = preds.sum() * 0.0   # keeps every output in the graph (DDP needs all grads) when no fg
        if cls_t:
            cls_t, reg_t = torch.cat(cls_t), torch.cat(reg_t)
            loss_iou = REG_WEIGHT * iou_loss(preds[..., :4][fg], reg_t).sum() / num_fg
            loss_cls = F.binary_cross_entropy_with_logits(preds[..., 5:][fg], cls_t, reduction="sum") / num_fg
            # The L1 term keeps its gradient (Habana's port >= 1.10 feeds it a detached copy).
            loss_l1 = (F.l1_loss(raw_reg[fg], torch.cat(l1_t), reduction="sum") / num_fg
                       if self.use_l1 else zero)
        else:
            loss_iou = loss_cls = loss_l1 = zero
        total = loss_iou + loss_obj + loss_cls + loss_l1 + zero
        num_gts = (targets.sum(dim=2) > 0).sum().clamp(min=1)   # Megvii's nlabel: non-empty target rows
        return {"total_loss": total, "iou_loss": loss_iou.detach(), "conf_loss": loss_obj.detach(),
                "cls_loss": loss_cls.detach(), "l1_loss": loss_l1.detach(),
                "num_fg": num_fg_local.detach() / num_gts, "fg_per_image": num_fg_local.detach() / max(batch, 1)}
