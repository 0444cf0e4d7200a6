"""CUDA paths (skipped without a GPU; ``tasks/gpu_check.py`` runs them): AMP bf16/fp16 training, compile,
ONNX Runtime's CUDA provider on the exported model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from yolov9001.cli import main

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_training_on_cuda(synthetic, tmp_path, precision):
    res = main(["train", "--data", str(synthetic["yolo"]), "--epochs", "2", "--img-size", "96", "--batch-size", "8",
                "--workers", "2", "--device", "cuda", "--tb-only", "--log-dir", str(tmp_path),
                "--hypo", f"precision:{precision},warmup_min_iters:0"])
    run = Path(res["run_dir"])
    assert json.loads((run / "config.json").read_text())["precision"] == precision
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["model"]["model.0.conv.weight"].dtype == torch.float32
    if precision == "fp16":
        assert ck["scaler"]["scale"] > 0  # the GradScaler was enabled and saved
    assert 0 <= res["AP"] <= 1


def test_compile_on_cuda(synthetic, tmp_path):
    res = main(["train", "--data", str(synthetic["yolo"]), "--epochs", "1", "--img-size", "64", "--batch-size", "8",
                "--workers", "0", "--device", "cuda", "--tb-only", "--compile", "--log-dir", str(tmp_path),
                "--hypo", "warmup_min_iters:0"])
    assert res["epoch"] == 1


def test_onnx_cuda_provider_matches_cpu(trained, synthetic, tmp_path):
    import onnxruntime as ort
    from yolo_common.onnx_eval import evaluate_onnx

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider (install onnxruntime-gpu)")
    path = tmp_path / "m.onnx"
    main(["export", "--weights", str(trained["best"]), "--out", str(path), "--img-size", "64", "--device", "cpu"])
    gpu = evaluate_onnx(str(path), synthetic["yolo_yaml"], "val", providers=["CUDAExecutionProvider"], progress=False)
    cpu = evaluate_onnx(str(path), synthetic["yolo_yaml"], "val", providers=["CPUExecutionProvider"], progress=False)
    assert gpu["provider"] == "CUDAExecutionProvider"
    assert abs(gpu["coco"]["AP"] - cpu["coco"]["AP"]) < 0.01
