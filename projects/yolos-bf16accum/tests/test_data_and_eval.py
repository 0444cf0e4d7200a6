"""Data pipeline + decoding + COCO mAP: ground truth fed back as predictions scores AP 1."""

import pytest
import torch

from yolos_bf16accum.config import TrainConfig
from yolos_bf16accum.data import build_datasets, collate
from yolos_bf16accum.engine import postprocess


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn")
    cfg = TrainConfig(dataset="synthetic", output_dir=str(out), image_size=(64, 96), synthetic_train=6,
                      synthetic_val=5, augment=True)
    return build_datasets(cfg)


def test_targets_are_normalised_cxcywh(synthetic):
    train_ds, eval_ds, gt, labels = synthetic
    pixels, target = train_ds[0]
    assert pixels.shape == (3, 64, 96) and pixels.dtype == torch.float32
    b = target["boxes"]
    assert b.ndim == 2 and b.shape[1] == 4 and ((b >= 0) & (b <= 1)).all()
    assert target["class_labels"].max() < labels.num_labels == 3
    assert labels.label_to_cat == {0: 1, 1: 2, 2: 3}  # synthetic ids start at 1: labels are contiguous


def test_ground_truth_as_predictions_scores_ap_one(synthetic):
    from yolo_common.evaluation import coco_map

    _, eval_ds, gt, labels = synthetic
    pixels, targets = collate([eval_ds[i] for i in range(len(eval_ds))])
    Q = 10
    logits = torch.full((len(targets), Q, labels.num_labels + 1), -10.0)
    logits[..., -1] = 10.0  # unused queries predict no-object
    boxes = torch.full((len(targets), Q, 4), 0.5)
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        boxes[i, :n] = t["boxes"]
        logits[i, torch.arange(n), t["class_labels"]] = 10.0
        logits[i, :n, -1] = -10.0
    sizes = torch.stack([t["orig_size"] for t in targets])
    dets = []
    for t, r in zip(targets, postprocess(logits, boxes, sizes)):
        for s, l, (x1, y1, x2, y2) in zip(r["scores"].tolist(), r["labels"].tolist(), r["boxes"].tolist()):
            dets.append({"image_id": t["image_id"], "category_id": labels.label_to_cat[l],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    m = coco_map(gt, dets)
    assert m["AP"] > 0.99 and m["AP50"] > 0.99


def test_coco_without_dir_is_a_clear_error():
    with pytest.raises(ValueError, match="coco_dir"):
        TrainConfig(dataset="coco2017")


def test_missing_coco_root_names_the_path(tmp_path):
    cfg = TrainConfig(dataset="coco2017", coco_dir=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        build_datasets(cfg)


@pytest.mark.slow  # first transformers AutoConfig import: ~7 s here
def test_unloadable_model_is_a_clear_error():
    from yolos_bf16accum.model import build_model

    cfg = TrainConfig(dataset="synthetic", model="/nonexistent/yolos-tiny")
    with pytest.raises(RuntimeError, match="tiny-random"):
        build_model(cfg, 3, {0: "a", 1: "b", 2: "c"})


def test_aspect_size_follows_yolos_eval_rule():
    from yolos_bf16accum.data import aspect_size

    assert aspect_size(480, 640) == (512, 688)          # shortest edge 512, 682.7 -> a multiple of 16
    assert aspect_size(300, 1000) == (256, 864)         # the longest edge caps it at 864
    assert aspect_size(512, 512) == (512, 512)
    assert aspect_size(300, 1000, 512, 856) == (256, 848)     # rounding never passes the longest edge
    h, w = aspect_size(427, 640, 48, 80)
    assert h % 16 == 0 and w % 16 == 0 and max(h, w) <= 80 + 8


def test_aspect_eval_keeps_the_normalised_boxes_and_the_aspect(synthetic):
    """Aspect-preserving eval resizes each image to its own size; the normalised targets are the fixed
    resize's (both map back to original pixels exactly), and the model runs on the new size."""
    from yolos_bf16accum.data import DetectionDataset
    from yolos_bf16accum.model import tiny_yolos_config
    from transformers import YolosForObjectDetection

    _, eval_ds, gt, labels = synthetic
    aspect = DetectionDataset(eval_ds.samples, labels, (64, 96), train=False, aspect=(48, 160))
    px_fixed, t_fixed = eval_ds[0]
    px, t = aspect[0]
    s = eval_ds.samples[0]
    assert px.shape[-2:] == (48, 80) and (s.height, s.width) == (64, 96)   # 64x96 -> shortest 48
    torch.testing.assert_close(t["boxes"], t_fixed["boxes"], atol=1e-6, rtol=0)
    torch.manual_seed(0)
    model = YolosForObjectDetection(tiny_yolos_config(num_labels=3, image_size=(64, 96))).eval()
    with torch.no_grad():
        out = model(pixel_values=px[None])
    assert out.logits.shape[:2] == model(pixel_values=px_fixed[None]).logits.shape[:2]
