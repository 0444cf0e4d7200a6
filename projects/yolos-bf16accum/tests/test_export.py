"""ONNX export (set contract): ORT equals the float torch model, patched layers export as plain matmuls,
and the ONNX evaluator scores a trained run like the run's own evaluation."""

import json

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")


def test_export_equals_the_float_model_and_carries_the_metadata(tmp_path):
    from transformers import YolosForObjectDetection
    from yolo_common.onnx_eval import read_model_metadata

    from yolos_bf16accum.export import export_onnx, float_model
    from yolos_bf16accum.model import tiny_yolos_config
    from yolos_bf16accum.patching import count_patched, install_attention_function, patch_all

    torch.manual_seed(0)
    model = YolosForObjectDetection(tiny_yolos_config(3, (64, 96))).eval()
    install_attention_function(model)
    patch_all(model)                                  # a fully patched (bf16-accumulating) model
    assert count_patched(model)["linears"] > 0
    path = export_onnx(model, (64, 96), ["a", "b", "c"], tmp_path / "y.onnx")
    x = torch.randn(2, 3, 64, 96)
    plain = float_model(model)
    assert count_patched(plain)["linears"] == 0
    with torch.no_grad():
        ref = plain(pixel_values=x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, boxes = sess.run(None, {"pixel_values": x.numpy()})
    assert logits.shape == (2, 10, 4) and boxes.shape == (2, 10, 4)
    np.testing.assert_allclose(logits, ref.logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(boxes, ref.pred_boxes.numpy(), rtol=1e-4, atol=1e-4)
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "MatMul" in ops or "Gemm" in ops                      # ordinary matmuls, no custom op
    meta = read_model_metadata(sess)
    assert meta["contract"] == "set" and meta["class_names"] == ["a", "b", "c"]
    spec = meta["letterbox"]
    assert spec.hw == (64, 96) and spec.keep_ratio is False and spec.mean == pytest.approx((0.485, 0.456, 0.406))
    assert meta["decode"] == {"conf": 0.0, "max_det": 100}


@pytest.mark.slow
def test_baseline_run_onnx_score_equals_its_own(tmp_path):
    """The smoke baseline (fp32) exports at the end; its ONNX AP through yolo_common.onnx_eval equals the
    run's final evaluation on the same images (same decode; the resize filter differs: torchvision's
    antialiased tensor resize in training, PIL bilinear in the evaluator)."""
    from yolos_bf16accum.config import smoke_config
    from yolos_bf16accum.train import run

    cfg = smoke_config("baseline", output_dir=str(tmp_path / "run"), num_train_epochs=3)
    summary = run(cfg)
    onnx = summary["onnx"]
    assert (tmp_path / "run" / "export" / "yolos.onnx").is_file()
    assert abs(onnx["AP"] - summary["final"]["AP"]) < 0.01 and abs(onnx["AP50"] - summary["final"]["AP50"]) < 0.01
    m = json.loads((tmp_path / "run" / "export" / "onnx_eval" / "metrics.json").read_text())
    assert m["contract"] == "set" and m["num_detections"] == 10 * m["num_images"]     # 10 queries, all kept
    from PIL import Image

    with Image.open(tmp_path / "run" / "samples" / "val.png") as im:   # GT | ONNX detections, 4 images
        assert im.format == "PNG" and im.size == (2 * 256, 4 * (256 + 14))
    assert onnx["samples"] == str(tmp_path / "run" / "samples" / "val.png")
    # AP of a 3-epoch tiny model is ~0 either way: compare the detections themselves. The project's own
    # decode (engine.postprocess) of the float model on the eval loader vs the ONNX evaluator's boxes.
    from yolo_common.checkpoint import load_checkpoint

    from yolos_bf16accum.data import build_datasets
    from yolos_bf16accum.engine import postprocess
    from yolos_bf16accum.export import load_run

    model, _, _ = load_run(tmp_path / "run" / "checkpoints" / "last.pt")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["class_names"]
    _, eval_ds, _, _ = build_datasets(cfg)
    ours = {}
    with torch.no_grad():
        for i in range(len(eval_ds)):
            x, t = eval_ds[i]
            res = postprocess(*(lambda o: (o.logits, o.pred_boxes))(model(pixel_values=x[None])),
                              t["orig_size"][None])[0]
            ours[int(t["image_id"])] = sorted(res["scores"].tolist(), reverse=True)
    theirs = {}
    for d in json.loads((tmp_path / "run" / "export" / "onnx_eval" / "detections.json").read_text()):
        theirs.setdefault(d["image_id"], []).append(d["score"])
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_allclose(sorted(theirs[k], reverse=True), ours[k], atol=0.02)
    # the CLI: a run folder (its best.pt) -> the same kind of file
    from yolos_bf16accum.export import main

    assert main([str(tmp_path / "run"), "-o", str(tmp_path / "cli.onnx")]) == 0
    assert ort.InferenceSession(str(tmp_path / "cli.onnx"), providers=["CPUExecutionProvider"]).get_outputs()[1].name \
        == "pred_boxes"
