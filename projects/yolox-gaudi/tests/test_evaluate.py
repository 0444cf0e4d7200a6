"""evaluate(): perfect predictions in letterboxed pixels score AP 1 through yolo_common's coco_map."""

import pytest
import torch
from yolo_common.preprocess import YOLOX, letterbox_boxes, letterbox_geometry

from yolox_gaudi.config import get_exp
from yolox_gaudi.data import build_eval_loader, load_coco_split
from yolox_gaudi.engine import evaluate, postprocess


class _Oracle(torch.nn.Module):
    """Returns, batch by batch, the ground truth as a YOLOX inference output (cx, cy, w, h, obj, probs)."""

    def __init__(self, split, size, nc, batch):
        super().__init__()
        self.outs = []
        id_to_index = split.category_id_to_index
        recs = split.records
        for i in range(0, len(recs), batch):
            out = torch.zeros(len(recs[i:i + batch]), 30, 5 + nc)
            for j, r in enumerate(recs[i:i + batch]):
                meta, _, _ = letterbox_geometry(r.width, r.height, YOLOX.with_size(size))
                b = torch.from_numpy(letterbox_boxes(r.boxes, meta))
                n = len(b)
                out[j, :n, :2] = (b[:, :2] + b[:, 2:]) / 2
                out[j, :n, 2:4] = b[:, 2:] - b[:, :2]
                out[j, :n, 4] = 0.9
                out[j, torch.arange(n), 5 + torch.tensor([id_to_index[int(c)] for c in r.category_ids])] = 1.0
            self.outs.append(out)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.outs[self.calls - 1]


@pytest.mark.slow
@pytest.mark.parametrize("size,preproc", [(128, "pil"), ((96, 160), "pil"), ((96, 160), "cv2"), (128, "legacy")])
def test_perfect_predictions_score_one(synthetic_coco, size, preproc):
    # not the synthetic 96 px: the letterbox really rescales, and boxes must map back; a non-square test
    # size and Megvii's cv2 preproc (int-truncated sides) map boxes the same way
    if preproc != "pil":
        pytest.importorskip("cv2")
    split = load_coco_split(synthetic_coco, "val2017")
    exp = get_exp("yolox-nano").merge(["num_classes", "3"])
    loader = build_eval_loader(split, size, batch_size=3, num_workers=0, preproc=preproc)
    images = next(iter(loader))[0]
    assert images.shape[-2:] == ((size, size) if isinstance(size, int) else size)
    assert (images.max() <= 3) == (preproc == "legacy")        # legacy: ImageNet-normalised, else 0-255
    metrics, dets = evaluate(_Oracle(split, size, 3, 3), loader, split, torch.device("cpu"), exp)
    assert metrics["AP"] > 0.99 and metrics["AP50"] > 0.99
    assert len(dets) == split.num_boxes
    assert {d["category_id"] for d in dets} <= {c["id"] for c in split.categories}


@pytest.mark.parametrize("sets", ["val", "2012/val", "2012/train+2012/val"])
def test_perfect_predictions_score_one_on_voc(synthetic_voc, sets):
    """A VOC root goes through VOC mAP (Megvii's map_5095 and mAP50); joined image sets get running ids."""
    from yolox_gaudi.data import load_dataset_split

    split = load_dataset_split(synthetic_voc, sets)
    assert split.layout == "voc" and len({r.image_id for r in split.records}) == len(split.records)
    exp = get_exp("yolox-nano").merge(["num_classes", str(len(split.categories))])
    loader = build_eval_loader(split, 128, batch_size=3, num_workers=0)
    metrics, dets = evaluate(_Oracle(split, 128, len(split.categories), 3), loader, split, torch.device("cpu"), exp)
    assert metrics["metric"] == "voc (all-point)"
    assert metrics["AP50"] > 0.99 and metrics["AP"] > 0.99 and len(dets) == split.num_boxes
    # a detection moved off its object by half its width: AP50 drops, the stricter thresholds more
    loader = build_eval_loader(split, 128, batch_size=3, num_workers=0)
    oracle = _Oracle(split, 128, len(split.categories), 3)
    for out in oracle.outs:
        out[:, :, 0] += out[:, :, 2] * 0.2
    shifted, _ = evaluate(oracle, loader, split, torch.device("cpu"), exp)
    assert shifted["AP"] < shifted["AP50"] and shifted["AP"] < 0.9


def test_voc2007_images_are_scored_with_the_11_point_metric(synthetic_voc, tmp_path):
    """Megvii's voc_eval picks the 11-point metric by year: a VOC2007 set (written here from the
    synthetic one) is scored 'voc07', its AP50 differs from the all-point one on imperfect predictions."""
    from yolo_common.data import write_voc

    from yolox_gaudi.data import load_dataset_split

    write_voc(load_dataset_split(synthetic_voc, "val"), tmp_path, "test", year="2007")
    split = load_dataset_split(tmp_path, "2007/test")
    exp = get_exp("yolox-nano").merge(["num_classes", str(len(split.categories))])
    def spoil(oracle):
        # every other detection moved off its object (a false positive) and scored above the good ones:
        # a precision-recall curve with steps, where 11-point and all-point AP differ
        for out in oracle.outs:
            out[:, ::2, 0] += out[:, ::2, 2] * 0.7
            out[:, 1::2, 4] = 0.5

    oracle = _Oracle(split, 128, len(split.categories), 3)
    spoil(oracle)
    m07, _ = evaluate(oracle, build_eval_loader(split, 128, 3, 0), split, torch.device("cpu"), exp)
    assert m07["metric"] == "voc07 (11-point)"
    from yolox_gaudi.engine import voc_metrics

    split12 = load_dataset_split(synthetic_voc, "val")
    oracle12 = _Oracle(split12, 128, len(split12.categories), 3)
    spoil(oracle12)
    m12, _ = evaluate(oracle12, build_eval_loader(split12, 128, 3, 0), split12, torch.device("cpu"), exp)
    assert m12["metric"] == "voc (all-point)" and 0 < m12["AP50"] < 1 and m07["AP50"] != m12["AP50"]
    same = voc_metrics(split12, [])                    # no detections at all: AP 0 under either rule
    assert same["AP50"] == 0


def test_voc_root_with_coco_split_names_is_a_clear_error(synthetic_voc):
    from yolox_gaudi.data import load_dataset_split

    with pytest.raises(ValueError, match="2007/trainval"):
        load_dataset_split(synthetic_voc, "train2017")


def test_postprocess_nms_is_class_aware():
    out = torch.zeros(1, 3, 7)
    out[0, :, :4] = torch.tensor([[10.0, 10, 8, 8], [10.5, 10, 8, 8], [10, 10, 8, 8]])
    out[0, :, 4] = torch.tensor([0.9, 0.8, 0.7])
    out[0, 0, 5] = out[0, 1, 5] = 1.0      # two overlapping boxes of class 0 -> one survives
    out[0, 2, 6] = 1.0                      # same place, class 1 -> kept
    det = postprocess(out, 0.01, 0.65)[0]
    assert det.shape == (2, 6) and sorted(det[:, 5].tolist()) == [0.0, 1.0]
    torch.testing.assert_close(det[det[:, 5] == 0, :4], torch.tensor([[6.0, 6, 14, 14]]))
