"""Label assignment: TAL (YOLOv8 / Hyper-YOLO's default) and SimOTA (YOLOX), on padded GT tensors.

Both take predictions for one batch and GTs padded to M per image and return, per anchor:
``fg`` [B, A] bool, ``gt_idx`` [B, A] (index into the image's GTs, valid where fg), ``target_scores``
[B, A, nc] (soft one-hot: the IoU-aware quality of the match) and ``target_boxes`` [B, A, 4] xyxy pixels.

``prior`` (optional, [B, A] in [0, 1]: the DINOv3 teacher's saliency at each anchor, ``dino.objfor02``) adds
``prior_weight * (1 - prior)`` to the matching cost: SimOTA adds it to its cost matrix; TAL, whose cost is
``-log(align)``, multiplies ``align`` by ``exp(-prior_weight * (1 - prior))``. A salient anchor is cheaper to
match; no loss term is added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .iou import paired_iou


@dataclass
class Assignment:
    fg: torch.Tensor             # [B, A] bool
    gt_idx: torch.Tensor         # [B, A] long
    target_scores: torch.Tensor  # [B, A, nc] float
    target_boxes: torch.Tensor   # [B, A, 4] xyxy pixels


def _gather(gt_boxes, gt_labels, gt_idx, fg, scores, nc):
    b = torch.arange(gt_boxes.shape[0], device=gt_boxes.device)[:, None]
    boxes = gt_boxes[b, gt_idx]
    labels = gt_labels[b, gt_idx]
    onehot = F.one_hot(labels.clamp_min(0), nc).float() * fg[..., None]
    return boxes, onehot * scores[..., None]


@torch.no_grad()
def tal_assign(pred_scores: torch.Tensor, pred_boxes: torch.Tensor, anchor_px: torch.Tensor,
               gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
               topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9,
               prior: torch.Tensor | None = None, prior_weight: float = 1.0) -> Assignment:
    """Task-aligned assignment (TOOD; ultralytics' ``TaskAlignedAssigner`` rules).

    align = score[gt class]^alpha * CIoU^beta over anchors whose centre lies inside the GT; each GT takes its
    top-k anchors by align; an anchor claimed by several GTs goes to the highest IoU; target score =
    align * (max IoU of the GT) / (max align of the GT).
    pred_scores [B, A, nc] (sigmoid), pred_boxes [B, A, 4] xyxy px, anchor_px [A, 2] px,
    gt_labels [B, M] long, gt_boxes [B, M, 4] px, gt_mask [B, M] bool.
    """
    bsz, a, nc = pred_scores.shape
    m = gt_boxes.shape[1]
    device = pred_scores.device
    if m == 0 or not gt_mask.any():
        return Assignment(torch.zeros(bsz, a, dtype=torch.bool, device=device),
                          torch.zeros(bsz, a, dtype=torch.long, device=device),
                          torch.zeros(bsz, a, nc, device=device), torch.zeros(bsz, a, 4, device=device))
    # anchor centre strictly inside the GT box
    lt = anchor_px[None, None] - gt_boxes[:, :, None, :2]
    rb = gt_boxes[:, :, None, 2:] - anchor_px[None, None]
    in_gt = (torch.cat((lt, rb), -1).amin(-1) > eps) & gt_mask[..., None]         # [B, M, A]
    overlaps = torch.zeros(bsz, m, a, device=device)
    bi, gi, ai = in_gt.nonzero(as_tuple=True)
    overlaps[bi, gi, ai] = paired_iou(gt_boxes[bi, gi], pred_boxes[bi, ai], "ciou").clamp_min(0)
    cls_score = pred_scores.gather(2, gt_labels.clamp_min(0)[:, None, :].expand(bsz, a, m)).transpose(1, 2)
    align = cls_score.pow(alpha) * overlaps.pow(beta) * in_gt
    if prior is not None:
        align = align * torch.exp(-prior_weight * (1 - prior.float()))[:, None, :]
    k = min(topk, a)
    top = align.topk(k, dim=-1).indices                                            # [B, M, k]
    mask_topk = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top, True)
    pos = mask_topk & in_gt
    # one GT per anchor: highest IoU
    multi = pos.sum(1) > 1                                                         # [B, A]
    if multi.any():
        best = overlaps.argmax(1)                                                  # [B, A]
        best_mask = F.one_hot(best, m).transpose(1, 2).bool()
        pos = torch.where(multi[:, None], best_mask & in_gt, pos)
    fg = pos.any(1)
    gt_idx = pos.float().argmax(1)
    align = align * pos
    norm = (align * overlaps.amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + eps)).amax(1)  # [B, A]
    boxes, scores = _gather(gt_boxes, gt_labels, gt_idx, fg, norm, nc)
    return Assignment(fg, gt_idx, scores, boxes)


@torch.no_grad()
def simota_assign(pred_scores: torch.Tensor, pred_boxes: torch.Tensor, anchor_px: torch.Tensor,
                  stride_px: torch.Tensor, gt_labels: torch.Tensor, gt_boxes: torch.Tensor, gt_mask: torch.Tensor,
                  radius: float = 1.5, lambda_iou: float = 3.0, topq: int = 10,
                  prior: torch.Tensor | None = None, prior_weight: float = 1.0) -> Assignment:
    """SimOTA (YOLOX; its HEAD's geometry rule) per image.

    Candidates: anchors whose centre is within ``radius * stride`` of the GT centre. Cost = BCE(class score,
    one-hot).sum + ``lambda_iou`` * -log(IoU) + 1e6 * (not a candidate). Each GT takes its dynamic_k =
    max(1, int(sum of its top-``topq`` IoUs)) cheapest anchors; an anchor matched twice keeps its cheapest
    GT. Target score = IoU of the match. stride_px [A, 1].
    """
    bsz, a, nc = pred_scores.shape
    device = pred_scores.device
    fg = torch.zeros(bsz, a, dtype=torch.bool, device=device)
    gt_idx = torch.zeros(bsz, a, dtype=torch.long, device=device)
    quality = torch.zeros(bsz, a, device=device)
    for b in range(bsz):
        valid = gt_mask[b].nonzero(as_tuple=True)[0]
        if valid.numel() == 0:
            continue
        gtb, gtl = gt_boxes[b, valid], gt_labels[b, valid]
        centre = (gtb[:, :2] + gtb[:, 2:]) / 2
        near = ((anchor_px[None] - centre[:, None]).abs() < radius * stride_px[None]).all(-1)  # [G, A]
        cand = near.any(0)
        ci = cand.nonzero(as_tuple=True)[0]
        if ci.numel() == 0:
            continue
        g = valid.numel()
        pb = pred_boxes[b, ci]
        iou = paired_iou(gtb[:, None].expand(g, ci.numel(), 4), pb[None].expand(g, ci.numel(), 4), "iou")
        ps = pred_scores[b, ci].float().clamp(1e-6, 1 - 1e-6)
        onehot = F.one_hot(gtl, nc).float()
        cls_cost = F.binary_cross_entropy(ps[None].expand(g, -1, -1), onehot[:, None].expand(-1, ci.numel(), -1),
                                          reduction="none").sum(-1)
        cost = cls_cost + lambda_iou * -torch.log(iou + 1e-8) + 1e6 * (~near[:, ci])
        if prior is not None:
            cost = cost + prior_weight * (1 - prior[b, ci].float())[None]
        k = min(topq, ci.numel())
        dynamic_k = iou.topk(k, dim=1).values.sum(1).int().clamp_min(1)
        match = torch.zeros_like(cost, dtype=torch.bool)
        for j in range(g):
            idx = cost[j].topk(int(dynamic_k[j]), largest=False).indices
            match[j, idx] = True
        twice = match.sum(0) > 1
        if twice.any():
            best = cost[:, twice].argmin(0)
            match[:, twice] = False
            match[best, twice.nonzero(as_tuple=True)[0]] = True
        anchor_has = match.any(0)
        owner = match.float().argmax(0)
        sel = ci[anchor_has]
        fg[b, sel] = True
        gt_idx[b, sel] = valid[owner[anchor_has]]
        quality[b, sel] = iou[owner[anchor_has], anchor_has.nonzero(as_tuple=True)[0]]
    boxes, scores = _gather(gt_boxes, gt_labels, gt_idx, fg, quality, nc)
    return Assignment(fg, gt_idx, scores, boxes)
