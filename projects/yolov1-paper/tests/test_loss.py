"""The paper loss on hand-computed cases: one object, two objects in one cell, ties, empty image."""

from __future__ import annotations

import math

import pytest
import torch

from yolov1.loss import build_loss, encode_prediction
from yolov1.targets import collate_targets, encode_targets

S, B, C = 2, 2, 2


def targets(boxes, labels):
    return collate_targets([encode_targets(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                           torch.tensor(labels), S, B, C)])


def background(pred, conf):
    """Sets both predictors' confidence in every cell but (0, 0)."""
    for r in range(S):
        for c in range(S):
            if (r, c) != (0, 0):
                pred[0, r, c, 4] = pred[0, r, c, 9] = conf
    return pred


def test_one_object_by_hand():
    gt = targets([[0.25, 0.25, 0.4, 0.4]], [1])  # centre in cell (0, 0)
    pred = encode_prediction(S, B, C, {(0, 0): {"boxes": [(0.25, 0.25, 0.4, 0.4, 0.6), (0.25, 0.25, 0.1, 0.1, 0.3)],
                                                "classes": [0.2, 0.7]}})
    background(pred, 0.1)
    out = build_loss(S, B, C)(pred, gt)
    # Predictor 0 is exact (IoU 1) -> responsible, conf target 1; predictor 1 and the 6 background
    # predictors are pushed to 0 with weight 0.5; class error in the object cell only.
    want_obj = (0.6 - 1.0) ** 2
    want_noobj = 0.5 * (0.3**2 + 6 * 0.1**2)
    want_cls = 0.2**2 + (0.7 - 1.0) ** 2
    assert float(out.coord) == pytest.approx(0.0, abs=1e-6)
    assert float(out.obj) == pytest.approx(want_obj, abs=1e-6)
    assert float(out.noobj) == pytest.approx(want_noobj, abs=1e-6)
    assert float(out.cls) == pytest.approx(want_cls, abs=1e-6)
    assert float(out.total) == pytest.approx(want_obj + want_noobj + want_cls, abs=1e-6)


def test_coordinate_error_and_iou_target_by_hand():
    gt = targets([[0.25, 0.25, 0.4, 0.4]], [0])
    # x offset 0.6 instead of 0.5 in the cell: centre moves 0.05 of the image to the right.
    pred = encode_prediction(S, B, C, {(0, 0): {"boxes": [(0.30, 0.25, 0.4, 0.4, 0.6)], "classes": [1.0, 0.0]}})
    out = build_loss(S, B, C)(pred, gt)
    iou = (0.35 * 0.4) / (0.16 + 0.16 - 0.35 * 0.4)  # 0.7778
    # predictor 1 is all zeros: IoU 0, not responsible, conf 0 -> no noobj cost
    assert float(out.coord) == pytest.approx(5 * 0.1**2, abs=1e-5)
    assert float(out.obj) == pytest.approx((0.6 - iou) ** 2, abs=1e-6)
    assert float(out.mean_iou) == pytest.approx(iou, abs=1e-6)
    # rescore off: the confidence target is 1
    out1 = build_loss(S, B, C, rescore=False)(pred, gt)
    assert float(out1.obj) == pytest.approx((0.6 - 1.0) ** 2, abs=1e-6)


def test_sqrt_width_error():
    gt = targets([[0.25, 0.25, 0.36, 0.16]], [0])
    pred = encode_prediction(S, B, C, {(0, 0): {"boxes": [(0.25, 0.25, 0.36, 0.16, 0.0)], "classes": [1.0, 0.0]}})
    pred[0, 0, 0, 2] += 0.1  # sqrt(w) off by 0.1
    out = build_loss(S, B, C)(pred, gt)
    assert float(out.coord) == pytest.approx(5 * 0.1**2, abs=1e-6)


def test_tie_gives_exactly_one_responsible_predictor():
    gt = targets([[0.25, 0.25, 0.4, 0.4]], [0])
    # both predictors are the exact box: a tie at IoU 1; the first one wins, the second is noobj
    pred = encode_prediction(S, B, C, {(0, 0): {"boxes": [(0.25, 0.25, 0.4, 0.4, 0.5), (0.25, 0.25, 0.4, 0.4, 0.9)],
                                                "classes": [1.0, 0.0]}})
    out = build_loss(S, B, C)(pred, gt)
    assert float(out.obj) == pytest.approx((0.5 - 1.0) ** 2, abs=1e-6)
    assert float(out.noobj) == pytest.approx(0.5 * 0.9**2, abs=1e-6)  # the starting code's "both responsible": 0
    assert float(out.total) == pytest.approx(0.25 + 0.405, abs=1e-6)


def test_tie_at_zero_init_assigns_one_predictor_per_object():
    loss = build_loss(7, 2, 20)
    boxes = torch.tensor([[0.5, 0.5, 0.3, 0.3], [0.1, 0.8, 0.2, 0.1]])
    t = collate_targets([encode_targets(boxes, torch.tensor([3, 7]), 7, 2, 20)])
    pred = torch.zeros(1, 7, 7, 30)  # every predicted box is empty: all IoUs 0
    from yolov1.boxes import decode_boxes

    assign = loss.responsible(decode_boxes(pred, 2), t["boxes"], t["slots"])
    assert int(assign.sum()) == 2
    assert (assign.sum(-2) <= 1).all() and (assign.sum(-1) <= 1).all()  # one predictor per object and vice versa


def test_two_objects_in_one_cell():
    big, small = [0.2, 0.2, 0.3, 0.3], [0.3, 0.3, 0.2, 0.2]  # both centres in cell (0, 0)
    gt = targets([small, big], [1, 0])
    # predictor 0 matches the small box, predictor 1 the big one: each object gets its best predictor
    pred = encode_prediction(S, B, C, {(0, 0): {"boxes": [(*small, 1.0), (*big, 1.0)], "classes": [0.5, 0.5]}})
    out = build_loss(S, B, C)(pred, gt)
    assert float(out.total) == pytest.approx(0.0, abs=1e-6)  # class target = mean one-hot = [0.5, 0.5]
    pred[0, 0, 0, 10:] = torch.tensor([1.0, 0.0])
    assert float(build_loss(S, B, C)(pred, gt).cls) == pytest.approx(0.25 + 0.25, abs=1e-6)


def test_third_object_in_a_cell_is_dropped_and_counted():
    t = encode_targets(torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.15, 0.15, 0.2, 0.2]]),
                       torch.tensor([0, 1, 1]), S, B, C)
    assert int(t["dropped"]) == 1 and int(t["slots"].sum()) == 2
    # the largest two are kept, largest first
    assert torch.allclose(t["boxes"][0, 0, 0], torch.tensor([0.2, 0.2, 0.3, 0.3]))
    assert torch.allclose(t["boxes"][0, 0, 1], torch.tensor([0.15, 0.15, 0.2, 0.2]))


def test_empty_image_only_noobj():
    t = targets(torch.zeros(0, 4), [])
    pred = torch.zeros(1, S, S, 5 * B + C)
    pred[..., 4] = 0.2
    pred[..., 9] = -0.4
    pred[..., 10:] = 0.7  # class outputs of empty cells cost nothing
    pred[..., 0:4] = 0.3  # nor do coordinates
    out = build_loss(S, B, C)(pred, t)
    assert float(out.total) == pytest.approx(0.5 * S * S * (0.2**2 + 0.4**2), abs=1e-6)
    assert float(out.coord) == float(out.obj) == float(out.cls) == 0.0


def test_batch_mean_and_finite_gradients_at_zero_init():
    loss = build_loss(7, 2, 20)
    t = collate_targets([encode_targets(torch.tensor([[0.5, 0.5, 0.3, 0.3]]), torch.tensor([3]), 7, 2, 20)] * 2)
    pred = torch.zeros(2, 7, 7, 30, requires_grad=True)
    out = loss(pred, t)
    out.total.backward()
    assert torch.isfinite(pred.grad).all()
    single = loss(pred[:1].detach(), {k: v[:1] for k, v in t.items()})
    assert math.isclose(float(out.total.detach()), float(single.total), rel_tol=1e-6)  # mean over the batch, not sum


def test_encode_targets_rejects_bad_labels():
    with pytest.raises(ValueError, match="out of range"):
        encode_targets(torch.tensor([[0.5, 0.5, 0.1, 0.1]]), torch.tensor([5]), 7, 2, 3)
