"""Every mode of 9001.py on the synthetic set; export parity with ONNX Runtime; bad input messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from yolov9001.cli import main

PROJECT = Path(__file__).resolve().parents[1]
COMMON = ["--img-size", "64", "--device", "cpu", "--tb-only"]


def test_val_mode_writes_stats_table_and_pr_curve(trained, synthetic, tmp_path):
    stats = main(["val", "--data", str(synthetic["coco"]), "--weights", str(trained["best"]), "--out",
                  str(tmp_path), *COMMON])
    assert set(stats) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}
    assert json.loads((tmp_path / "metrics.json").read_text())["coco"]["AP"] == stats["AP"]
    assert (tmp_path / "pr_curve.png").stat().st_size > 1000
    assert "circle" in (tmp_path / "per_class.md").read_text()
    from PIL import Image

    with Image.open(tmp_path / "samples" / "val.png") as im:         # ground truth | predictions, 4 images
        assert im.format == "PNG" and im.size == (512, 4 * (256 + 14))
    assert (trained["run"] / "samples" / "val.png").is_file()         # the training run's last evaluation


def test_detect_mode_folder_file_and_glob(trained, synthetic, tmp_path):
    images = synthetic["yolo"] / "images" / "val"
    one = sorted(images.glob("*"))[0]
    for source, n in ((str(images), 8), (str(one), 1), (str(images / "*.jpg"), 8)):
        out = tmp_path / f"d{n}"
        res = main(["detect", "--data", source, "--weights", str(trained["last"]), "--out", str(out), *COMMON,
                    "--hypo", "detect_conf:0.0001"])
        assert res["images"] == n and len(list(out.glob("*.jpg"))) == n
        dets = json.loads((out / "detections.json").read_text())
        assert len(dets["images"]) == n
    with pytest.raises(SystemExit, match="no images found"):
        main(["detect", "--data", str(tmp_path / "nothing*.jpg"), "--weights", str(trained["last"]), *COMMON])


def test_export_onnx_parity_and_common_evaluator(trained, synthetic, tmp_path):
    import onnxruntime as ort
    from yolo_common.onnx_eval import evaluate_onnx, read_model_metadata

    from yolov9001.cli import load_for_inference, build_parser
    from yolov9001.core.export import RawExport

    path = tmp_path / "m.onnx"
    main(["export", "--weights", str(trained["best"]), "--out", str(path), *COMMON])
    meta = read_model_metadata(str(path))
    assert meta["contract"] == "raw" and meta["class_names"] == ["circle", "square", "triangle"]
    assert meta["letterbox"].size == 64 and meta["letterbox"].center is True and meta["letterbox"].pad_value == 114
    args = build_parser().parse_args(["export", "--weights", str(trained["best"]), *COMMON])
    model, _, _ = load_for_inference(args, torch.device("cpu"))
    x = torch.rand(3, 3, 64, 64)  # batch 3: the batch axis is dynamic
    with torch.no_grad():
        ref = RawExport(model)(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": x.numpy()})[0]
    assert out.shape == ref.shape == (3, 4 + 3, 64 + 16 + 4)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)
    # the same model scored by the common evaluator and by 9001.py val give the same AP
    ev = evaluate_onnx(str(path), synthetic["yolo_yaml"], "val", progress=False)
    val = main(["val", "--data", str(synthetic["yolo"]), "--weights", str(trained["best"]), "--out",
                str(tmp_path / "v"), *COMMON])
    assert abs(ev["coco"]["AP"] - val["AP"]) <= 0.01 and abs(ev["coco"]["AP50"] - val["AP50"]) <= 0.01


def test_no_cdist_in_exported_graph(trained, tmp_path):
    import onnx

    path = tmp_path / "m.onnx"
    main(["export", "--weights", str(trained["best"]), "--out", str(path), *COMMON])
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Less" in ops and "MatMul" in ops and not any("dist" in o.lower() for o in ops)


@pytest.mark.slow
def test_benchmark_mode(synthetic, capsys):
    res = main(["benchmark", "--data", str(synthetic["yolo"]), "--batch-size", "4", "--steps", "2", "--workers", "0",
                *COMMON])
    assert res["data_ours_samples_s"] > 0
    assert set(res["train_step_eager_ms"]) == {"data", "forward", "teacher", "loss_assign", "backward", "optimizer",
                                              "total"}
    assert 0 < res["hcm_share_of_forward"] < 1 and res["latency_b1_eager_ms"] > 0
    assert "data_ratio_ours_vs_ultralytics" in res or res["data_ultralytics"].startswith("skipped")


@pytest.mark.parametrize("argv,needle", [
    (["train", "--data", "/definitely/not/here"], "does not exist"),
    (["train"], "train needs --data"),
    (["val", "--data", "x"], "needs --weights"),
    (["train", "--data", ".", "--hypo", "lr00:1"], "closest known keys: lr0"),
    (["train", "--data", ".", "--log", "LOUD"], "level must be"),
    (["train", "--resume", "/no/such/run"], "does not exist"),
])
def test_bad_input_messages(argv, needle, tmp_path):
    with pytest.raises(SystemExit, match=needle):
        main([*argv, "--log-dir", str(tmp_path)])


def test_9001_py_entry_point_and_module(tmp_path):
    for cmd in ([sys.executable, str(PROJECT / "9001.py"), "--help"], [sys.executable, "-m", "yolov9001", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "train" in proc.stdout and "--hypo" in proc.stdout
    proc = subprocess.run([sys.executable, str(PROJECT / "9001.py"), "train", "--data", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_hyp_with_a_checkpoint_is_not_silently_dropped(trained, synthetic, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, "yolov9001"):
        main(["val", "--data", str(synthetic["yolo"]), "--weights", str(trained["best"]), "--hyp",
              "models/hyps/low.yaml", "--out", str(tmp_path), *COMMON])
    assert "--hyp models/hyps/low.yaml is not applied" in caplog.text
