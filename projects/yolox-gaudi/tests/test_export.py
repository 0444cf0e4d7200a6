"""ONNX export: ORT equals torch, the evaluator reads YOLOX's letterbox and decode from the metadata, and a
trained run's ONNX score equals its own evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from yolox_gaudi.config import get_exp
from yolox_gaudi.export import RawContract, export_onnx
from yolox_gaudi.model import build_model

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("size", [(64, 64), (64, 96)])
def test_onnx_equals_torch_and_carries_the_metadata(tmp_path, size):
    from yolo_common.onnx_eval import read_model_metadata

    exp = get_exp("yolox-nano").merge(["num_classes", "3", "test_size", f"{size[0]},{size[1]}"])
    torch.manual_seed(0)
    model = build_model(exp).eval()
    path = export_onnx(model, exp, tmp_path / "m.onnx", ["a", "b", "c"])
    x = torch.rand(3, 3, *size) * 255                                  # batch 3: the batch dim is dynamic
    with torch.no_grad():
        ref = RawContract(model)(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x.numpy()})[0]
    anchors = sum((size[0] // s) * (size[1] // s) for s in (8, 16, 32))
    assert out.shape == ref.shape == (3, 4 + 3, anchors)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)
    with torch.no_grad():
        dec = model(x)                                                 # the model's own inference output
    np.testing.assert_allclose(out[:, 4:].transpose(0, 2, 1), (dec[..., 4:5] * dec[..., 5:]).numpy(), atol=1e-5)
    meta = read_model_metadata(sess)
    assert meta["contract"] == "raw" and meta["class_names"] == ["a", "b", "c"]
    spec = meta["letterbox"]
    assert spec.hw == size and not spec.center and not spec.rgb and spec.scale == 1.0 and spec.pad_value == 114
    assert meta["decode"] == {"conf": 0.01, "iou": 0.65, "max_det": 100, "multi_label": False}


@pytest.mark.slow
def test_run_export_scores_like_its_own_evaluation(tmp_path, train):
    """export_onnx True at the end of a run: the ONNX evaluator's detections and AP equal the run's own
    (same images, letterbox, one class per anchor, NMS 0.65); test_conf 1e-5: an untrained head scores ~1e-4."""
    root = train(tmp_path, ["--batch-size", "8"], ["max_epoch", "2", "export_onnx", "True", "test_conf", "1e-5"])
    torch_m = json.loads((root / "eval" / "metrics.json").read_text())
    onnx_m = json.loads((root / "export" / "onnx_eval" / "metrics.json").read_text())
    assert (root / "export" / "yolox-nano.onnx").is_file()
    ours = json.loads((root / "eval" / "detections.json").read_text())
    theirs = json.loads((root / "export" / "onnx_eval" / "detections.json").read_text())
    assert len(ours) > 50 and abs(len(theirs) - len(ours)) <= max(2, len(ours) // 100)
    assert abs(onnx_m["coco"]["AP"] - torch_m["AP"]) < 0.01 and abs(onnx_m["coco"]["AP50"] - torch_m["AP50"]) < 0.01
    best = lambda dets: sorted((d["image_id"], round(d["score"], 3)) for d in dets)[-20:]  # noqa: E731
    assert best(ours) == best(theirs)
    summary = (root / "summary.md").read_text()
    assert "ONNX AP" in summary and "samples/val.png" in summary and "curves/loss.png" in summary
    from PIL import Image

    with Image.open(root / "samples" / "val.png") as im:             # 4 val images x (GT | predictions)
        assert im.format == "PNG" and im.size == (512, 4 * (256 + 14))


def test_export_cli_builds_the_checkpoints_network(tmp_path):
    """A checkpoint trained with act relu: the CLI (named yolox-nano, SiLU by default) exports ReLU."""
    from yolox_gaudi.export import main

    exp = get_exp("yolox-nano").merge(["num_classes", "3", "act", "relu", "test_size", "64,64"])
    torch.manual_seed(0)
    model = build_model(exp).eval()
    ck = tmp_path / "relu.pt"
    torch.save({"model": model.state_dict(), "exp": dict(exp.__dict__), "class_names": ["a", "b", "c"]}, ck)
    assert main(["-n", "yolox-nano", "-c", str(ck), "-o", str(tmp_path / "m.onnx")]) == 0
    x = torch.rand(1, 3, 64, 64) * 255
    out = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, RawContract(model)(x).numpy(), rtol=1e-4, atol=1e-3)
