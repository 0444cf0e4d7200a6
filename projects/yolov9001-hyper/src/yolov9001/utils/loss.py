"""``DetectionLoss``: BCE classification + IoU loss (ciou/giou/diou/iou) + DFL, YOLOv8-style, with TAL or
SimOTA assignment, an optional gated and ramped L1 term and a small-box weight (``min_stride_box_alpha``).

Normalisation follows ultralytics' v8 loss: each term is divided by the sum of the target scores, the gains
are ``box``/``cls``/``dfl``, and the returned total is multiplied by the batch size (so the gradient of a
batch does not shrink with it; the trainer accumulates to ``nbs`` images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .assigners import simota_assign, tal_assign
from .boxes import bbox2dist, dist2bbox
from .iou import paired_iou


def targets_to_padded(targets: torch.Tensor, batch_size: int):
    """[N, 6] (batch index, class, x1, y1, x2, y2) -> labels [B, M] long, boxes [B, M, 4], mask [B, M]."""
    device = targets.device
    counts = torch.bincount(targets[:, 0].long(), minlength=batch_size) if targets.numel() else \
        torch.zeros(batch_size, dtype=torch.long, device=device)
    m = int(counts.max()) if counts.numel() else 0
    labels = torch.full((batch_size, m), -1, dtype=torch.long, device=device)
    boxes = torch.zeros(batch_size, m, 4, device=device)
    mask = torch.zeros(batch_size, m, dtype=torch.bool, device=device)
    if m:
        bi = targets[:, 0].long()
        order = torch.argsort(bi, stable=True)
        bi = bi[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(bi), device=device) - starts[bi]
        labels[bi, slot] = targets[order, 1].long()
        boxes[bi, slot] = targets[order, 2:6].float()
        mask[bi, slot] = True
    return labels, boxes, mask


def dfl_loss(pred: torch.Tensor, target: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Distribution focal loss (GFL): pred [N, 4, reg_max] logits, target [N, 4] in [0, reg_max-1) -> [N]."""
    tl = target.long()
    tr = tl + 1
    wl = tr.float() - target
    wr = 1.0 - wl
    logp = F.log_softmax(pred.float(), -1)
    loss = -(logp.gather(-1, tl[..., None]).squeeze(-1) * wl + logp.gather(-1, tr.clamp_max(reg_max - 1)[..., None])
             .squeeze(-1) * wr)
    return loss.mean(-1)


class DetectionLoss:
    """Callable: ``loss(feats, targets, epoch=0) -> (total * B, items dict of detached floats)``.

    ``model`` must have gone through ``attach_runtime`` (it reads ``model.decoder``). ``cfg`` keys: box, cls,
    dfl, iou_type, assign_mode, tal_topk/alpha/beta, assign_radius/lambda_iou/topq, l1, l1_gate_iou,
    l1_ramp_epochs, min_stride_box_alpha.
    """

    def __init__(self, model, cfg):
        self.decoder = model.decoder
        self.nc, self.reg_max = model.nc, model.reg_max
        self.cfg = cfg
        self.bce = torch.nn.BCEWithLogitsLoss(reduction="none")

    def assign(self, scores, boxes_px, anchor_px, stride_px, labels, gt_boxes, mask):
        c = self.cfg
        if c["assign_mode"] == "simota":
            return simota_assign(scores, boxes_px, anchor_px, stride_px, labels, gt_boxes, mask,
                                 radius=c["assign_radius"], lambda_iou=c["assign_lambda_iou"], topq=c["assign_topq"])
        return tal_assign(scores, boxes_px, anchor_px, labels, gt_boxes, mask,
                          topk=c["tal_topk"], alpha=c["tal_alpha"], beta=c["tal_beta"])

    def __call__(self, feats: list[torch.Tensor], targets: torch.Tensor, epoch: int = 0):
        c = self.cfg
        bsz = feats[0].shape[0]
        box_logits, cls_logits = self.decoder.split(feats)
        anchors, strides = self.decoder.anchors(feats)
        dist = self.decoder.distances(box_logits)                     # [B, A, 4] stride units, fp32
        pred_boxes = dist2bbox(dist, anchors) * strides               # px
        anchor_px, cls_logits = anchors * strides, cls_logits.float()
        labels, gt_boxes, mask = targets_to_padded(targets.to(feats[0].device), bsz)
        asg = self.assign(cls_logits.detach().sigmoid(), pred_boxes.detach(), anchor_px, strides, labels, gt_boxes,
                          mask)
        tss = asg.target_scores.sum().clamp_min(1.0)
        loss_cls = self.bce(cls_logits, asg.target_scores).sum() / tss
        zero = cls_logits.sum() * 0.0
        loss_box = loss_dfl = loss_l1 = zero
        fg = asg.fg
        num_fg = int(fg.sum())
        if num_fg:
            weight = asg.target_scores.sum(-1)[fg]
            tb = asg.target_boxes[fg]
            if c["min_stride_box_alpha"] > 0:
                side = ((tb[:, 2:] - tb[:, :2]).clamp_min(0).prod(-1)).sqrt()
                weight = weight * (1 + c["min_stride_box_alpha"] *
                                   (1 - side / (4 * min(self.decoder.strides))).clamp_min(0))
            iou = paired_iou(pred_boxes[fg], tb, c["iou_type"])
            loss_box = ((1.0 - iou) * weight).sum() / tss
            st = strides.expand(bsz, -1, -1)[fg]                     # [F, 1]
            anc = anchors.expand(bsz, -1, -1)[fg]
            target_ltrb = bbox2dist(anc, tb / st, self.reg_max)
            pd = box_logits[fg].view(-1, 4, self.reg_max)
            loss_dfl = (dfl_loss(pd, target_ltrb, self.reg_max) * weight).sum() / tss
            if c["l1"] > 0:
                ramp = 1.0 if c["l1_ramp_epochs"] <= 0 else min(1.0, (epoch + 1) / c["l1_ramp_epochs"])
                gate = (iou.detach() >= c["l1_gate_iou"]).float()
                l1 = (dist[fg] - target_ltrb).abs().mean(-1) / self.reg_max
                loss_l1 = c["l1"] * ramp * (l1 * gate * weight).sum() / tss
        total = c["box"] * loss_box + c["cls"] * loss_cls + c["dfl"] * loss_dfl + loss_l1
        items = {"box": float(loss_box.detach()), "cls": float(loss_cls.detach()), "dfl": float(loss_dfl.detach()),
                 "l1": float(loss_l1.detach()), "num_fg": num_fg,
                 "num_gt": int(mask.sum())}
        return total * bsz, items
