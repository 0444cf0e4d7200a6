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
              det / "checkpoints/epoch_0007/model.safetensors", tmp_path / "smoke.json", det / "samples/val.png",
              det / "eval/detections.json"):
        assert p.is_file(), p
    assert any((det / "tb").iterdir())
    assert "samples/val.png" in (det / "summary.md").read_text()
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


@pytest.mark.slow
def test_onnx_export_equals_torch_and_scores_like_the_run(tmp_path):
    """The smoke ends by exporting the detector (raw contract) and scoring it with yolo_common.onnx_eval:
    ORT equals the torch model + the paper's scoring, and the ONNX COCO AP equals the run's own on the
    same images (stretch resize, ImageNet normalisation, multi-label per-class NMS from the metadata)."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from yolo_common.onnx_eval import read_model_metadata

    from yolov1.evaluate import load_detector
    from yolov1.export import RawContract
    from yolov1.postprocess import decode

    r = run_smoke(tmp_path, num_train=16, num_val=6, pre_epochs=1, det_epochs=3, S=2, hidden=32, batch_size=8)
    onnx_path = Path(r["onnx"]["model"])
    model, meta = load_detector(r["detect_run"])
    x = torch.randn(3, 3, 128, 128)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        ref = RawContract(model, 2, 128)(x).numpy()
        pred = model(x)
    assert out.shape == (3, 4 + 3, 2 * 2 * 2)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)     # (-inf where decode drops a box)
    # the graph's boxes/scores are decode()'s, before its threshold and NMS
    det = decode(pred, 2, conf_threshold=-1e9, nms_iou=1.0, max_detections=10_000)[0]
    assert np.isclose(np.sort(out[0, 4:].reshape(-1))[-1], det["scores"].max().item(), atol=1e-5)
    m = read_model_metadata(sess)
    assert m["contract"] == "raw" and m["class_names"] == ["circle", "square", "triangle"]
    assert m["letterbox"].keep_ratio is False and m["letterbox"].size == 128 and m["letterbox"].mean is not None
    assert m["decode"] == {"conf": 0.005, "iou": 0.5, "max_det": 100, "multi_label": True}
    assert abs(r["onnx"]["coco_AP"] - r["detect"]["coco_AP"]) < 0.01
    assert abs(r["onnx"]["coco_AP50"] - r["detect"]["coco_AP50"]) < 0.01
    # a 3-epoch model has ~no detections above 0.005: with no threshold at all both paths keep the same
    # boxes (same decode, same per-class NMS, same cap), which AP alone could not show here
    from yolo_common.onnx_eval import evaluate_onnx

    from yolov1.evaluate import main as evaluate_main

    voc = tmp_path / "data" / "voc"
    own = evaluate_main([r["detect_run"], "--data", str(voc), "--split", "2012:val", "--cpu", "--num-workers", "0",
                         "--conf-threshold=-1e9", "--out", str(tmp_path / "own")])
    onnx_m = evaluate_onnx(onnx_path, voc, "val", conf=-1e9, progress=False, warmup=0)
    assert own["num_detections"] == onnx_m["num_detections"] > 50
    assert onnx_m["coco"]["AP"] == pytest.approx(own["coco_AP"], abs=1e-3)
