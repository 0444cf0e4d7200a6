"""The smoke pipeline end to end: tiny pretrain -> extract -> detection -> VOC/COCO mAP."""

from __future__ import annotations

import json
import math

import pytest

from yolov1.smoke import run_smoke


@pytest.mark.slow
def test_smoke_pipeline(tmp_path):
    r = run_smoke(tmp_path, num_train=16, num_val=6, pre_epochs=1, det_epochs=2, S=2, hidden=32, batch_size=8)
    pre, det = tmp_path / "pretrain", tmp_path / "detect"
    for p in (pre / "config.json", pre / "classes.json", pre / "logs/train.jsonl", pre / "logs/eval.jsonl",
              pre / "checkpoints/epoch_0000/model.safetensors", pre / "checkpoints/epoch_0000/backbone.safetensors",
              det / "logs/eval.jsonl", det / "curves/loss.png", det / "eval/metrics.json", det / "summary.md",
              det / "checkpoints/epoch_0001/model.safetensors", tmp_path / "smoke.json"):
        assert p.is_file(), p
    assert any((det / "tb").iterdir())
    assert 0 <= r["pretrain"]["top1"] <= r["pretrain"]["top5"] <= 1
    for k in ("voc07_mAP", "voc_mAP", "coco_AP", "coco_AP50"):
        assert math.isfinite(r["detect"][k]) and 0 <= r["detect"][k] <= 1, k
    metrics = json.loads((det / "eval/metrics.json").read_text())
    assert set(metrics["per_class_voc07"]) == {"circle", "square", "triangle"}
    cfg = json.loads((det / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["config"]["backbone"] == r["backbone"]
