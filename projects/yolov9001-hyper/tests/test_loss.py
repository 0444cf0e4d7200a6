"""Assignment on hand-made cases (TAL and SimOTA), the loss terms, and learning on a fixed batch."""

from __future__ import annotations

import pytest
import torch

from yolov9001.core.config import get_config
from yolov9001.core.runtime import attach_runtime
from yolov9001.models import HyperYOLO
from yolov9001.utils.assigners import simota_assign, tal_assign
from yolov9001.utils.boxes import make_anchors
from yolov9001.utils.loss import DetectionLoss, dfl_loss, targets_to_padded

SHAPES = ((8, 8), (4, 4), (2, 2))  # a 64 px input
STRIDES = (8, 16, 32)


def _case():
    anchors, strides = make_anchors(SHAPES, STRIDES)
    anchor_px = anchors * strides
    a = len(anchor_px)
    gt_boxes = torch.tensor([[[4.0, 4.0, 28.0, 30.0], [30.0, 34.0, 60.0, 62.0], [40.0, 2.0, 50.0, 12.0]],
                             [[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    gt_labels = torch.tensor([[0, 1, 2], [1, -1, -1]])
    gt_mask = gt_labels >= 0
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(2, a, 3, generator=g) * 0.5
    # predictions: each anchor predicts a box around itself (so IoUs are real and varied)
    half = (torch.rand(2, a, 2, generator=g) * 12 + 4)
    pred = torch.cat((anchor_px - half, anchor_px + half), -1)
    return scores, pred, anchor_px, strides, gt_labels, gt_boxes, gt_mask


@pytest.mark.parametrize("mode", ["tal", "simota"])
def test_every_gt_gets_an_anchor_and_no_anchor_twice(mode):
    scores, pred, anchor_px, strides, labels, boxes, mask = _case()
    if mode == "tal":
        asg = tal_assign(scores, pred, anchor_px, labels, boxes, mask, topk=10)
    else:
        asg = simota_assign(scores, pred, anchor_px, strides, labels, boxes, mask, radius=1.5, topq=10)
    for b in range(2):
        for j in mask[b].nonzero(as_tuple=True)[0].tolist():
            assert ((asg.gt_idx[b] == j) & asg.fg[b]).sum() >= 1, f"{mode}: gt {j} of image {b} got no anchor"
        # one GT per anchor by construction; the targets of each positive are its GT's box and class
        fg = asg.fg[b]
        assert torch.equal(asg.target_boxes[b][fg], boxes[b][asg.gt_idx[b][fg]])
        hot = asg.target_scores[b][fg].argmax(-1)
        assert torch.equal(hot, labels[b][asg.gt_idx[b][fg]])
        assert (asg.target_scores[b][~fg] == 0).all()
        assert (asg.target_scores[b][fg].sum(-1) > 0).all()
        assert (asg.target_scores[b] <= 1 + 1e-6).all()


def test_tal_positives_are_inside_their_gt_and_at_most_topk():
    scores, pred, anchor_px, _, labels, boxes, mask = _case()
    asg = tal_assign(scores, pred, anchor_px, labels, boxes, mask, topk=3)
    for b in range(2):
        for a in asg.fg[b].nonzero(as_tuple=True)[0].tolist():
            x1, y1, x2, y2 = boxes[b, asg.gt_idx[b, a]].tolist()
            x, y = anchor_px[a].tolist()
            assert x1 < x < x2 and y1 < y < y2
        for j in mask[b].nonzero(as_tuple=True)[0].tolist():
            assert ((asg.gt_idx[b] == j) & asg.fg[b]).sum() <= 3


def test_simota_dynamic_k_bounded_and_candidates_near_centre():
    scores, pred, anchor_px, strides, labels, boxes, mask = _case()
    for topq in (1, 3, 10):
        asg = simota_assign(scores, pred, anchor_px, strides, labels, boxes, mask, radius=1.5, topq=topq)
        for b in range(2):
            for j in mask[b].nonzero(as_tuple=True)[0].tolist():
                n = int(((asg.gt_idx[b] == j) & asg.fg[b]).sum())
                assert 1 <= n <= topq  # dynamic k = max(1, int(sum of top-q IoUs)) <= q
            fg = asg.fg[b].nonzero(as_tuple=True)[0]
            centre = (boxes[b, asg.gt_idx[b, fg], :2] + boxes[b, asg.gt_idx[b, fg], 2:]) / 2
            assert ((anchor_px[fg] - centre).abs() < 1.5 * strides[fg]).all()


def test_simota_conflict_goes_to_cheapest_gt():
    """Two identical GTs compete for the same anchors; each anchor ends with exactly one of them."""
    anchors, strides = make_anchors(((4, 4),), (16,))
    anchor_px = anchors * strides
    box = torch.tensor([16.0, 16.0, 48.0, 48.0])
    boxes = torch.stack((box, box))[None]
    labels = torch.tensor([[0, 0]])
    pred = torch.cat((anchor_px - 16, anchor_px + 16), -1)[None]
    scores = torch.full((1, 16, 1), 0.5)
    asg = simota_assign(scores, pred, anchor_px, strides, labels, boxes, labels >= 0, radius=1.5, topq=10)
    assert asg.fg.sum() >= 1 and (asg.gt_idx[asg.fg] <= 1).all()


def test_empty_images():
    scores, pred, anchor_px, strides, labels, boxes, mask = _case()
    none = torch.zeros_like(mask)
    assert not tal_assign(scores, pred, anchor_px, labels, boxes, none).fg.any()
    assert not simota_assign(scores, pred, anchor_px, strides, labels, boxes, none).fg.any()


def test_targets_to_padded():
    t = torch.tensor([[1, 2, 0, 0, 5, 5], [0, 1, 1, 1, 4, 4], [1, 0, 2, 2, 9, 9.0]])
    labels, boxes, mask = targets_to_padded(t, 3)
    assert labels.tolist() == [[1, -1], [2, 0], [-1, -1]]
    assert mask.sum() == 3 and boxes[1, 1].tolist() == [2, 2, 9, 9]


def test_dfl_loss_minimum_at_two_hot_target():
    target = torch.tensor([[3.3, 0.0, 7.99, 14.5]])
    two_hot = torch.full((1, 4, 16), -30.0)
    for s, t in enumerate(target[0].tolist()):
        lo = int(t)
        two_hot[0, s, lo] = torch.log(torch.tensor(lo + 1 - t + 1e-9))
        two_hot[0, s, min(lo + 1, 15)] = torch.log(torch.tensor(t - lo + 1e-9))
    best = dfl_loss(two_hot, target, 16)
    worse = dfl_loss(two_hot.roll(1, -1), target, 16)
    assert (best < worse).all()


@pytest.mark.slow
@pytest.mark.parametrize("mode,iou", [("tal", "ciou"), ("simota", "giou"), ("tal", "diou")])
def test_loss_finite_and_decreasing(mode, iou):
    torch.manual_seed(0)
    cfg = get_config(hyp={"assign_mode": mode, "iou_type": iou, "l1": 0.5, "l1_ramp_epochs": 2,
                          "min_stride_box_alpha": 0.5})
    model = HyperYOLO("n", nc=3)
    attach_runtime(model, 64, cfg)
    model.detect.bias_init(model.strides, 64)
    loss_fn = DetectionLoss(model, cfg)
    x = torch.rand(2, 3, 64, 64)
    t = torch.tensor([[0, 1, 4, 6, 30, 40], [0, 2, 34, 30, 60, 62], [1, 0, 10, 10, 50, 50.0]])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(30):
        loss, items = loss_fn(model(x), t, epoch=1)
        assert torch.isfinite(loss) and items["num_fg"] >= 3
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    assert items["l1"] > 0
