"""The smoke pipeline end to end: tiny pretrain -> extract -> detection -> VOC/COCO mAP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from yolov1.smoke import run_smoke


@pytest.mark.slow
def test_smoke_pipeline(tmp_path):
    r = run_smoke(tmp_path, num_train=16, num_val=6, pre_epochs=1, det_epochs=8, S=2, hidden=32, batch_size=8)
    pre, det = tmp_path / "pretrain", tmp_path / "detect"
    for p in (pre / "config.json", pre / "classes.json", pre / "logs/train.jsonl", pre / "logs/eval.jsonl",
              pre / "checkpoints/epoch_0000/model.safetensors", pre / "checkpoints/epoch_0000/backbone.safetensors",
              det / "logs/eval.jsonl", det / "curves/loss.png", det / "eval/metrics.json", det / "summary.md",
              det / "checkpoints/epoch_0007/model.safetensors", tmp_path / "smoke.json"):
        assert p.is_file(), p
    assert any((det / "tb").iterdir())
    assert 0 <= r["pretrain"]["top1"] <= r["pretrain"]["top5"] <= 1
    for k in ("voc07_mAP", "voc_mAP", "coco_AP", "coco_AP50"):
        assert math.isfinite(r["detect"][k]) and 0 <= r["detect"][k] <= 1, k
    metrics = json.loads((det / "eval/metrics.json").read_text())
    assert set(metrics["per_class_voc07"]) == {"circle", "square", "triangle"}
    cfg = json.loads((det / "config.json").read_text())
    assert cfg["seed"] == 0 and cfg["config"]["backbone"] == r["backbone"]
    # something a broken model fails: the detection loss falls over the run (steps logged every 5)
    losses = [json.loads(x)["loss"] for x in (det / "logs/train.jsonl").read_text().splitlines()]
    assert len(losses) >= 4 and sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses
    assert r["settings"]["threads"] == 1
    # fixed threads: the same command gives the same numbers (the quoted README figures reproduce)
    again = run_smoke(tmp_path / "again", num_train=16, num_val=6, pre_epochs=1, det_epochs=8, S=2, hidden=32,
                      batch_size=8)
    assert again["detect"] == r["detect"] and again["pretrain"] == r["pretrain"]


@pytest.mark.slow
def test_evaluate_cli_on_a_trained_checkpoint(tmp_path, capsys):
    """``python -m yolov1.evaluate`` scores a trained checkpoint without training: same mAP as the training
    run's own last evaluation, a per-class table, and the legacy-devkit switch."""
    from yolov1.evaluate import main as evaluate_main

    r = run_smoke(tmp_path, num_train=16, num_val=6, pre_epochs=1, det_epochs=2, S=2, hidden=32, batch_size=8)
    voc = tmp_path / "data" / "voc"
    m = evaluate_main([r["detect_run"], "--data", str(voc), "--split", "2012:val", "--cpu", "--num-workers", "0"])
    assert m["voc07_mAP"] == pytest.approx(r["detect"]["voc07_mAP"], abs=1e-12)
    assert m["num_images"] == 6 and set(m["per_class_voc07"]) == {"circle", "square", "triangle"}
    text = capsys.readouterr().out
    assert "AP (VOC07 11-point)" in text and "2012:val: VOC07 11-point mAP@0.5" in text
    saved = json.loads((Path(r["detect_run"]) / "checkpoints" / "epoch_0001" / "eval_2012_val" / "metrics.json")
                       .read_text())
    assert saved["voc07_mAP"] == m["voc07_mAP"]
    legacy = evaluate_main([r["detect_run"], "--data", str(voc), "--split", "2012:val", "--cpu", "--num-workers",
                            "0", "--legacy-devkit", "--out", str(tmp_path / "legacy")])
    assert legacy["legacy_devkit"] is True and 0 <= legacy["voc07_mAP"] <= 1
    with pytest.raises(SystemExit, match="not a detection checkpoint"):
        evaluate_main([str(tmp_path / "pretrain"), "--data", str(voc), "--cpu"])


@pytest.mark.slow
def test_detect_cli_writes_annotated_images_and_json(tmp_path):
    from yolov1.detect import main as detect_main

    r = run_smoke(tmp_path, num_train=16, num_val=6, pre_epochs=1, det_epochs=1, S=2, hidden=32, batch_size=8)
    images = tmp_path / "imgs"
    images.mkdir()
    src = sorted((tmp_path / "data" / "voc").rglob("JPEGImages/*.jpg"))[:3]
    for f in src:
        (images / f.name).write_bytes(f.read_bytes())
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    res = detect_main([str(images), "--checkpoint", r["detect_run"], "--out", str(tmp_path / "out"), "--conf", "0.0"])
    assert res["images"] == 3 and len(res["failed"]) == 1 and res["failed"][0].endswith("broken.jpg")
    data = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [Path(i["file"]).name for i in data["images"]] == [f.name for f in src]
    assert all((tmp_path / "out" / f"{f.stem}.jpg").is_file() for f in src)
    assert any(i["detections"] for i in data["images"])   # conf 0: every kept box is there
    for i in data["images"]:
        for d in i["detections"]:
            x1, y1, x2, y2 = d["bbox"]
            assert 0 <= x1 <= x2 <= i["width"] and 0 <= y1 <= y2 <= i["height"] and d["class"] in (
                "circle", "square", "triangle")
    with pytest.raises(SystemExit, match="no images found"):
        detect_main([str(tmp_path / "nope.jpg"), "--checkpoint", r["detect_run"]])
