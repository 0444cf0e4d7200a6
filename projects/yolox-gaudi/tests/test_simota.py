"""SimOTA on hand-made cases, the loss, and a few dozen training steps on the synthetic set."""

import math

import pytest
import torch

from yolox_gaudi.loss import YOLOXLoss, bboxes_iou_cxcywh, iou_loss, simota_assign
from yolox_gaudi.model import make_grid


def _grid(size=64):
    return torch.cat([make_grid(size // s, size // s, s, "cpu") for s in (8, 16, 32)])


def _preds_from(grid, boxes_per_anchor, nc=3, cls_logit=0.0, obj_logit=0.0):
    a = len(grid)
    preds = torch.zeros(a, 5 + nc)
    preds[:, :4] = boxes_per_anchor
    preds[:, 4] = obj_logit
    preds[:, 5:] = cls_logit
    return preds


def _anchor_boxes(grid, side=12.0):
    centers = (grid[:, :2] + 0.5) * grid[:, 2:]
    return torch.cat([centers, torch.full_like(centers, side)], 1)


def test_separated_gts_each_get_anchors_no_anchor_twice():
    grid = _grid(64)
    gts = torch.tensor([[12.0, 12.0, 16.0, 16.0], [48.0, 44.0, 20.0, 24.0], [30.0, 50.0, 10.0, 8.0]])
    cls = torch.tensor([0, 2, 1])
    preds = _preds_from(grid, _anchor_boxes(grid))
    a = simota_assign(gts, cls, preds[:, :4], preds[:, 5:], preds[:, 4], grid)
    assert a.fg_mask.sum() == a.num_fg == len(a.matched_gt)
    assert set(a.matched_gt.tolist()) == {0, 1, 2}                 # every GT got >= 1 anchor
    # dynamic k is bounded by max(1, sum of top-10 IoUs) <= 10 for each GT
    fg_idx = a.fg_mask.nonzero().squeeze(1)
    ious = bboxes_iou_cxcywh(gts, preds[fg_idx, :4])
    for g in range(3):
        k_bound = max(1, int(bboxes_iou_cxcywh(gts[g:g + 1], preds[:, :4]).topk(10).values.sum()))
        assert 1 <= (a.matched_gt == g).sum() <= k_bound <= 10
    # matched IoU is the prediction's IoU with the GT it learns
    torch.testing.assert_close(a.matched_iou, ious[a.matched_gt, torch.arange(len(fg_idx))])
    # a foreground anchor's centre lies in its GT's box or within 2.5 strides of the GT centre
    centers = (grid[fg_idx, :2] + 0.5) * grid[fg_idx, 2:]
    g = gts[a.matched_gt]
    near = ((centers - g[:, :2]).abs() < 2.5 * grid[fg_idx, 2:]).all(1)
    inside = ((centers - (g[:, :2] - g[:, 2:] / 2)) > 0).all(1) & (((g[:, :2] + g[:, 2:] / 2) - centers) > 0).all(1)
    assert (near | inside).all()


def test_overlapping_gts_an_anchor_goes_to_the_cheapest():
    grid = _grid(64)
    # Two identical-position GTs of different classes; predictions confidently say class 1.
    gts = torch.tensor([[32.0, 32.0, 24.0, 24.0], [32.0, 32.0, 24.0, 24.0]])
    cls = torch.tensor([0, 1])
    preds = _preds_from(grid, _anchor_boxes(grid, 24.0))
    preds[:, 5:] = torch.tensor([-6.0, 6.0, -6.0])
    a = simota_assign(gts, cls, preds[:, :4], preds[:, 5:], preds[:, 4], grid)
    assert a.num_fg > 0 and (a.matched_gt == 1).all()   # the class-1 GT is cheaper for every shared anchor
    assert a.fg_mask.sum() == a.num_fg                   # one GT per anchor


def test_gt_far_outside_has_no_candidates():
    grid = _grid(64)
    gts = torch.tensor([[500.0, 500.0, 4.0, 4.0]])
    preds = _preds_from(grid, _anchor_boxes(grid))
    a = simota_assign(gts, torch.tensor([0]), preds[:, :4], preds[:, 5:], preds[:, 4], grid)
    assert a.num_fg == 0 and not a.fg_mask.any()


@pytest.mark.parametrize("rule,radius", [("0.3.0", 2.5), ("head", 1.5)])
def test_candidate_regions_of_the_two_rules(rule, radius):
    """A large GT on a 128 px image: 0.3.0 takes every anchor inside the box or within 2.5 strides of its
    centre; HEAD only those within 1.5 strides of the centre (inside the box or not)."""
    from yolox_gaudi.loss import simota_cost

    grid = _grid(128)
    gts = torch.tensor([[64.0, 64.0, 100.0, 60.0]])
    preds = _preds_from(grid, _anchor_boxes(grid, 30.0))
    cand, cost, _ = simota_cost(gts, torch.tensor([0]), preds[:, :4], preds[:, 5:], preds[:, 4], grid, rule=rule)
    centers = (grid[:, :2] + 0.5) * grid[:, 2:]
    near = ((centers - gts[0, :2]).abs() < radius * grid[:, 2:]).all(1)
    half = gts[0, 2:] / 2
    inside = ((centers - (gts[0, :2] - half)) > 0).all(1) & (((gts[0, :2] + half) - centers) > 0).all(1)
    expected = (near | inside) if rule == "0.3.0" else near
    assert set(cand.tolist()) == set(expected.nonzero().squeeze(1).tolist())
    # the geometry penalty: 0.3.0 charges 1e5 to candidates not both inside and near, HEAD 1e6 to none of its own
    penalised = (cost[0] > 5e4).tolist()
    if rule == "0.3.0":
        assert penalised == (~(near & inside))[cand].tolist() and cost[0].max() < 2e5
    else:
        assert not any(penalised)
    assert (inside & ~near).any()        # anchors only 0.3.0 considers: the case separates the rules


def test_head_rule_penalises_anchors_near_another_gt():
    """HEAD: an anchor near GT A but not GT B costs B 1e6 more, so B never takes it."""
    from yolox_gaudi.loss import simota_cost

    grid = _grid(128)
    gts = torch.tensor([[20.0, 20.0, 16.0, 16.0], [100.0, 100.0, 16.0, 16.0]])
    preds = _preds_from(grid, _anchor_boxes(grid, 16.0))
    cand, cost, _ = simota_cost(gts, torch.tensor([0, 1]), preds[:, :4], preds[:, 5:], preds[:, 4], grid,
                                rule="head")
    near_a = ((((grid[cand, :2] + 0.5) * grid[cand, 2:]) - gts[0, :2]).abs() < 1.5 * grid[cand, 2:]).all(1)
    assert ((cost[1, near_a] - cost[0, near_a]) > 9e5).all()
    a = simota_assign(gts, torch.tensor([0, 1]), preds[:, :4], preds[:, 5:], preds[:, 4], grid, rule="head")
    assert set(a.matched_gt.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="simota rule"):
        simota_assign(gts, torch.tensor([0, 1]), preds[:, :4], preds[:, 5:], preds[:, 4], grid, rule="1.0")


def test_iou_loss_values():
    a = torch.tensor([[10.0, 10.0, 4.0, 4.0], [0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[10.0, 10.0, 4.0, 4.0], [1.0, 0.0, 2.0, 2.0]])
    torch.testing.assert_close(iou_loss(a, b), torch.tensor([0.0, 1 - (2 / 6) ** 2]))


def test_loss_terms_and_l1_gradient():
    grid = _grid(64)
    a = len(grid)
    torch.manual_seed(0)
    raw = torch.randn(2, a, 8, requires_grad=True)
    preds = torch.cat([(raw[..., :2] + grid[:, :2]) * grid[:, 2:], torch.exp(raw[..., 2:4]) * grid[:, 2:],
                       raw[..., 4:]], -1)
    targets = torch.zeros(2, 10, 5)
    targets[0, 0] = torch.tensor([1, 20, 20, 16, 12])
    targets[0, 1] = torch.tensor([2, 45, 40, 20, 30])   # image 1 has no labels at all
    loss_fn = YOLOXLoss(3, use_l1=True)
    out = loss_fn(preds, raw[..., :4], grid, targets)
    assert all(math.isfinite(float(v.detach())) for v in out.values())
    assert out["l1_loss"] > 0 and out["iou_loss"] > 0 and out["cls_loss"] > 0
    # logged like Megvii: foreground anchors per GT (2 GTs here), and per image (2 images) under its own name
    fg = sum(a.num_fg for a in loss_fn.assign(preds.detach(), targets, grid) if a is not None)
    assert float(out["num_fg"]) == pytest.approx(fg / 2) and float(out["fg_per_image"]) == pytest.approx(fg / 2)
    targets1 = targets.clone()
    targets1[0, 1] = 0                                   # one GT left: per-GT figure doubles per anchor
    out1 = loss_fn(preds, raw[..., :4], grid, targets1)
    fg1 = sum(a.num_fg for a in loss_fn.assign(preds.detach(), targets1, grid) if a is not None)
    assert float(out1["num_fg"]) == pytest.approx(fg1) and float(out1["fg_per_image"]) == pytest.approx(fg1 / 2)
    out["total_loss"].backward()
    assert raw.grad[..., :4].abs().sum() > 0           # the L1 term reaches the raw regression
    loss_fn.use_l1 = False
    assert float(loss_fn(preds, raw[..., :4], grid, targets)["l1_loss"]) == 0.0


@pytest.mark.slow
def test_loss_decreases_on_synthetic(synthetic_coco):
    from yolox_gaudi.config import get_exp
    from yolox_gaudi.data import CocoSource, TrainDataset, load_coco_split
    from yolox_gaudi.model import build_model
    from yolox_gaudi.optim import build_optimizer

    torch.manual_seed(0)
    exp = get_exp("yolox-nano").merge(["num_classes", "3", "input_size", "96,96", "hsv_prob", "0",
                                       "flip_prob", "0"])
    ds = TrainDataset(CocoSource(load_coco_split(synthetic_coco, "train2017")), exp, seed=0)
    ds.enable_mosaic = False
    batch = [ds[i] for i in range(8)]
    images, targets = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
    model = build_model(exp).train()
    opt = build_optimizer(model, exp, lr=0.01)
    loss_fn = YOLOXLoss(3)
    losses = []
    for _ in range(30):
        loss = loss_fn(*model(images), targets)["total_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
