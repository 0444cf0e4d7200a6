"""The workspace's own jobs (demo, bench-common) run end to end, at small sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_and_leaves_its_outputs(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(REPO / "tasks/demo_common.py"), "--out", str(out),
                           "--num-train", "2", "--num-val", "6", "--imgsz", "160"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for rel in ("provenance.json", "onnx/demo-detector.onnx", "eval-coco/metrics.json",
                "eval-yolo/metrics.json", "summary.md"):
        assert (out / rel).is_file(), rel
    metrics = json.loads((out / "eval-coco/metrics.json").read_text())
    assert metrics["num_images"] == 6 and metrics["provider"] == "CPUExecutionProvider"
    assert 0.0 <= metrics["coco"]["AP"] <= 1.0
    prov = json.loads((out / "provenance.json").read_text())
    assert json.dumps(prov).count("sha256") >= 3  # one per layout at least
    assert "| coco" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_bench_common_prints_both_ratios():
    proc = subprocess.run([sys.executable, str(REPO / "tasks/bench_common.py"), "--quick"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tail = proc.stdout.split("== bench-common ==")[-1]
    assert "time ratio =" in tail and "overhead =" in tail
    ratio = float(tail.split("time ratio =")[1].split("x")[0])
    assert ratio > 0
