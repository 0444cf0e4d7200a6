"""tasks/gpu_check.py: a report on any machine, the CUDA tests it would run are collected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gpu_check

REPO = Path(__file__).resolve().parents[1]


def test_cpu_machine_writes_a_report_and_exits_0(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "device_info", lambda: {"torch": "x", "cuda_available": False})
    out = tmp_path / "gpu-report.md"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "No CUDA device here" in out.read_text() and out.with_suffix(".json").is_file()


def test_report_lists_tests_and_bench_rows():
    md = gpu_check.report({"cuda_available": True, "device": "H200"},
                          {"rc": 1, "seconds": 3.0, "tail": "boom",
                           "cases": [{"test": "a::t1", "outcome": "passed", "seconds": 1.0},
                                     {"test": "a::t2", "outcome": "failure: x", "seconds": 2.0}]},
                          [{"bench": "bench-hyper", "status": "ok", "seconds": 9.0, "lines": ["ratio 1.8x"]},
                           {"bench": "bench-qat", "status": "not run (budget)"}])
    assert "| `a::t2` | failure: x |" in md and "ratio 1.8x" in md and "bench-qat: not run (budget)" in md
    assert "boom" in md  # a failing test run shows its output


def test_every_bench_is_in_the_manifest():
    import tomllib

    tasks = tomllib.loads((REPO / "pixi.toml").read_text())["feature"]
    names = {t for f in tasks.values() for t in f.get("tasks", {})}
    run = {b for b, _, _ in gpu_check.BENCHES}
    assert {b for b in run if b.startswith("bench-")} == {n for n in names if n.startswith("bench-")}
    assert run <= names   # the other GPU rows (the augmentation validator's device pipeline) are tasks too


def test_cuda_tests_are_marked_and_collected():
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "--collect-only", "-q",
                           "projects/yolos-bf16accum/tests/test_triton_kernel.py",
                           "projects/yolov9001-hyper/tests/test_cuda.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    collected = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    assert len(collected) >= 14 and any("test_cuda.py" in ln for ln in collected)
