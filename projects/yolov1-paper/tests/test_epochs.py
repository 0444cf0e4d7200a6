"""Epoch hygiene (issue: augmentation frozen with workers, resume replaying epoch 0): the augmentation and
the shuffle change every epoch through the accelerate-prepared loader with 2 workers, also when epochs are
cut short; a resumed run is bit-identical to one that never stopped; Darknet's responsibility rule."""

from __future__ import annotations

import json

import pytest
import torch


def _images_per_epoch(loader, epochs, max_batches=0):
    from yolov1.training import start_epoch

    seen = []
    for epoch in range(epochs):
        start_epoch(loader, epoch)
        got = {}
        for b, (x, _, idx) in enumerate(loader):
            got.update({int(i): img.clone() for i, img in zip(idx, x)})
            if max_batches and b + 1 >= max_batches:
                break   # what max_train_batches does: the prepared loader's pass never completes
        seen.append(got)
    return seen


@pytest.mark.parametrize("max_batches", [0, 1])
def test_augmentation_and_order_change_every_epoch_with_workers(synthetic_voc, fresh_accelerate, max_batches):
    from accelerate import Accelerator

    from yolov1.augment import DetectionTransform
    from yolov1.training import make_loader
    from yolov1.voc import VOCDetection, collate, read_voc_parts

    (train,) = read_voc_parts(synthetic_voc, "2012:train")
    ds = VOCDetection([train], DetectionTransform(128, train=True), S=2, B=2, seed=0)
    # max_batches=1 cuts every epoch after its first batch: with batches of 6 (of 12 images, 2 batches)
    # the loader's pass never completes, which is the case accelerate's own counter got wrong
    batch = 6 if max_batches else 4
    loader = make_loader(ds, batch, train=True, num_workers=2, seed=0, collate_fn=collate)
    loader = Accelerator(cpu=True).prepare(loader)
    seen = _images_per_epoch(loader, 3, max_batches)
    both = set(seen[0]) & set(seen[1])
    assert both                             # (with max_batches: 6 of 12 per epoch, seeded order)
    for i in both:                          # the same image looks different in the next epoch
        assert not torch.equal(seen[0][i], seen[1][i]), i
    if max_batches:                         # the shuffle moved on although no pass completed
        assert len({tuple(sorted(s)) for s in seen}) > 1
    else:
        assert len(seen[0]) == len(seen[1]) == 12


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resumed_detection_run_is_bit_identical(synthetic_voc, tmp_path, optimizer):
    """SGD (the paper) and AdamW (the smoke recipe): the optimizer state comes back with the run."""
    from safetensors.torch import load_file

    from yolov1 import detection_train

    common = [f"data_root={synthetic_voc}", "train_split=2012:train", "val_split=2012:val", f"output_dir={tmp_path}",
              "verify_images=false", "num_workers=2", "S=2", "hidden=16", "width=0.125", "batch_size=4",
              "lr_milestones=3", "log_every=1", "eval_every=10", "keep_checkpoints=0", "dropout=0.5",
              "grad_clip_norm=10", "lr=0.001", f"optimizer={optimizer}"]
    whole = detection_train.main([*common, "run_name=whole", "epochs=4"])
    detection_train.main([*common, "run_name=cut", "epochs=2"])

    cut = detection_train.main([*common, "run_name=cut", "epochs=4", f"resume_from={tmp_path / 'cut'}"])
    a = load_file(str(whole["run_dir"] / "checkpoints" / "epoch_0003" / "model.safetensors"))
    b = load_file(str(cut["run_dir"] / "checkpoints" / "epoch_0003" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(x) for x in (cut["run_dir"] / "logs" / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))     # each step once
    assert {"resp_share_0", "resp_share_1", "dropped_per_image"} <= set(rows[0])
    assert rows[0]["resp_share_0"] + rows[0]["resp_share_1"] == pytest.approx(1.0)
    other = "adamw" if optimizer == "sgd" else "sgd"
    with pytest.raises(ValueError, match=f"optimizer={optimizer}"):   # not a bare KeyError from the state dict
        detection_train.main([*common, f"optimizer={other}", "run_name=cut2", "epochs=4",
                              f"resume_from={tmp_path / 'cut'}"])


def test_darknet_rule_gives_the_closest_box_when_no_iou_is_positive():
    from yolov1.loss import YoloLoss

    gt = torch.zeros(1, 1, 1, 2, 4)
    gt[..., 0, :] = torch.tensor([0.5, 0.5, 0.1, 0.1])
    slots = torch.tensor([[[[True, False]]]])
    pred = torch.zeros(1, 1, 1, 2, 4)
    pred[..., 0, :] = torch.tensor([0.05, 0.05, 0.05, 0.05])   # far away: IoU 0
    pred[..., 1, :] = torch.tensor([0.70, 0.70, 0.05, 0.05])   # also IoU 0, but closer
    darknet = YoloLoss(1, 2, 3, responsibility="darknet").responsible(pred, gt, slots)
    paper = YoloLoss(1, 2, 3, responsibility="iou").responsible(pred, gt, slots)
    assert darknet[0, 0, 0, :, 0].tolist() == [False, True]
    assert paper[0, 0, 0, :, 0].tolist() == [True, False]     # argmax of two zeros: the first
    pred[..., 0, :] = torch.tensor([0.52, 0.5, 0.1, 0.1])      # now predictor 0 overlaps: IoU decides
    assert YoloLoss(1, 2, 3).responsible(pred, gt, slots)[0, 0, 0, :, 0].tolist() == [True, False]
    with pytest.raises(ValueError, match="responsibility"):
        YoloLoss(1, 2, 3, responsibility="random")
