"""``DetectionLoss``: BCE classification + IoU loss (ciou/giou/diou/iou) + DFL, YOLOv8-style, with TAL or
SimOTA assignment, an optional gated and ramped L1 term and a small-box weight (``min_stride_box_alpha``).

Normalisation follows ultralytics' v8 loss: each term is divided by the sum of the target scores, the gains
are ``box``/``cls``/``dfl``, and the returned total is multiplied by the batch size (so the gradient of a
batch does not shrink with it; the trainer accumulates to ``nbs`` images).

With a DINOv3 teacher (``dino=DinoBatch``; every part off unless its ``dino.*`` switch is on):

- ``objfor02``: the teacher saliency at each anchor is a prior in the assignment cost (``objfor02_weight``).
- ``reg_weight_with_saliency``: IoU and DFL weights per positive anchor are multiplied by
  max(``reg_weight_floor``, saliency^``reg_weight_power``), normalised to mean 1 over the positives.
- ``centroid_align``: ``centroid_weight`` x |predicted centre - saliency centroid in the GT box| / GT size
  (per axis, summed), for epochs < ``centroid_max_epochs``.
- ``cls_proto``: class prototypes (running mean of teacher GT-box features); the teacher feature at each
  positive anchor gives soft classes softmax(cos / ``cls_proto_temp``) over the classes seen so far, mixed into
  the BCE targets: t = (1 - w) t + w * quality * soft, w = ``cls_proto_weight``.
- ``contrast``: InfoNCE between projected student GT-box features and the teacher's (``contrast_temp``),
  times ``contrast_weight``.
- ``feat_distill``: 1 - cosine between the student's stride-16 map (1x1 conv to the teacher width) and the
  teacher patch grid resized to it, times ``feat_weight``.
The extra terms are in ``items`` as ``dino/<term>`` and summed into the total; ``dino/total`` is their sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import distill as D
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

    def assign(self, scores, boxes_px, anchor_px, stride_px, labels, gt_boxes, mask, prior=None):
        c = self.cfg
        pw = c["dino"]["objfor02_weight"] if prior is not None else 1.0
        if c["assign_mode"] == "simota":
            return simota_assign(scores, boxes_px, anchor_px, stride_px, labels, gt_boxes, mask,
                                 radius=c["assign_radius"], lambda_iou=c["assign_lambda_iou"], topq=c["assign_topq"],
                                 prior=prior, prior_weight=pw)
        return tal_assign(scores, boxes_px, anchor_px, labels, gt_boxes, mask,
                          topk=c["tal_topk"], alpha=c["tal_alpha"], beta=c["tal_beta"], prior=prior, prior_weight=pw)

    def __call__(self, feats: list[torch.Tensor], targets: torch.Tensor, epoch: int = 0,
                 dino: D.DinoBatch | None = None):
        c = self.cfg
        d = c["dino"] if dino is not None else None
        bsz = feats[0].shape[0]
        box_logits, cls_logits = self.decoder.split(feats)
        anchors, strides = self.decoder.anchors(feats)
        dist = self.decoder.distances(box_logits)                     # [B, A, 4] stride units, fp32
        pred_boxes = dist2bbox(dist, anchors) * strides               # px
        anchor_px, cls_logits = anchors * strides, cls_logits.float()
        labels, gt_boxes, mask = targets_to_padded(targets.to(feats[0].device), bsz)
        prior = D.anchor_prior(dino.out.saliency, anchor_px, dino.imgsz) if d is not None else None
        asg = self.assign(cls_logits.detach().sigmoid(), pred_boxes.detach(), anchor_px, strides, labels, gt_boxes,
                          mask, prior=prior if d is not None and d["objfor02"] else None)
        fg = asg.fg
        num_fg = int(fg.sum())
        dterms: dict[str, torch.Tensor] = {}
        target_scores = asg.target_scores
        if d is not None and d["cls_proto"] and dino.head is not None:
            target_scores = self._proto_targets(asg, dino, labels, gt_boxes, mask, anchor_px, d)
        tss = target_scores.sum().clamp_min(1.0)
        loss_cls = self.bce(cls_logits, target_scores).sum() / tss
        zero = cls_logits.sum() * 0.0
        loss_box = loss_dfl = loss_l1 = zero
        if num_fg:
            weight = target_scores.sum(-1)[fg]
            if d is not None and d["reg_weight_with_saliency"]:
                sw = prior[fg].clamp_min(0).pow(d["reg_weight_power"]).clamp_min(d["reg_weight_floor"])
                weight = weight * (sw / sw.mean().clamp_min(1e-12))
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
            if d is not None and d["centroid_align"] and epoch < d["centroid_max_epochs"]:
                cent = D.saliency_centroids(dino.out.saliency, gt_boxes, dino.imgsz)
                b_idx = torch.arange(bsz, device=fg.device)[:, None].expand_as(fg)[fg]
                target_c = cent[b_idx, asg.gt_idx[fg]]
                pb = pred_boxes[fg]
                size = (tb[:, 2:] - tb[:, :2]).clamp_min(1.0)
                err = (((pb[:, :2] + pb[:, 2:]) / 2 - target_c).abs() / size).sum(-1)
                dterms["centroid"] = d["centroid_weight"] * (err * weight).sum() / tss
        if d is not None:
            dterms.update(self._region_terms(dino, labels, gt_boxes, mask, d))
        dino_total = sum(dterms.values(), zero) if dterms else zero
        total = c["box"] * loss_box + c["cls"] * loss_cls + c["dfl"] * loss_dfl + loss_l1 + dino_total
        items = {"box": float(loss_box.detach()), "cls": float(loss_cls.detach()), "dfl": float(loss_dfl.detach()),
                 "l1": float(loss_l1.detach()), "num_fg": num_fg,
                 "num_gt": int(mask.sum())}
        if d is not None:
            items.update({f"dino/{k}": float(v.detach()) for k, v in dterms.items()})
            items["dino/total"] = float(dino_total.detach())
        return total * bsz, items

    # ---- DINOv3 parts ----
    @staticmethod
    def _gt_list(labels, gt_boxes, mask):
        bi, mi = mask.nonzero(as_tuple=True)
        return bi, gt_boxes[bi, mi].float(), labels[bi, mi]

    def _proto_targets(self, asg, dino: D.DinoBatch, labels, gt_boxes, mask, anchor_px, d):
        """BCE targets with prototype soft classes mixed in at the positives (see the module docstring)."""
        head, tmap = dino.head, dino.out.patch_map()
        bi, boxes, cls = self._gt_list(labels, gt_boxes, mask)
        if len(bi):
            head.update_protos(D.roi_features(tmap, boxes, bi, dino.imgsz), cls, d["cls_proto_momentum"])
        fg = asg.fg
        seen = head.proto_count > 0
        if not fg.any() or not seen.any():
            return asg.target_scores
        feat = D.sample_map(tmap, anchor_px, dino.imgsz)[fg]                 # [F, Ct] teacher feature per positive
        sim = F.normalize(feat, dim=-1) @ F.normalize(head.protos, dim=-1).T   # [F, nc]
        sim = sim.masked_fill(~seen, float("-inf"))
        soft = (sim / d["cls_proto_temp"]).softmax(-1)
        ts = asg.target_scores.clone()
        q = ts[fg].sum(-1, keepdim=True)                                     # the match quality
        w = d["cls_proto_weight"]
        ts[fg] = (1 - w) * ts[fg] + w * q * soft
        return ts

    def _region_terms(self, dino: D.DinoBatch, labels, gt_boxes, mask, d) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        smap, head = dino.student_map, dino.head
        if smap is None or head is None:
            return out
        if d["feat_distill"] and head.feat_proj is not None:
            out["feat"] = d["feat_weight"] * D.feature_loss(smap, head, dino.out.patch_map())
        if d["contrast"] and head.region_proj is not None:
            bi, boxes, _ = self._gt_list(labels, gt_boxes, mask)
            if len(bi) >= 2:   # InfoNCE needs negatives
                s = head.region_proj(D.roi_features(smap.float(), boxes, bi, dino.imgsz))
                t = D.roi_features(dino.out.patch_map(), boxes, bi, dino.imgsz)
                out["contrast"] = d["contrast_weight"] * D.contrast_loss(s, t, d["contrast_temp"])
            else:
                out["contrast"] = smap.sum() * 0.0
        return out
