"""One command for a scarce GPU: every CUDA-marked test and the GPU rows of each ``bench-*``, in < 8 minutes.

    python3 tasks/run.py -e rtx5090 gpu-check          # or: pixi run -e rtx5090 gpu-check
    python tasks/gpu_check.py [--out gpu-report.md] [--budget 480] [--only tests|benches]

Writes ``gpu-report.md`` (device, driver, torch / triton / onnxruntime versions and providers, each CUDA test's
outcome, each bench's result lines and the seconds it took) and ``gpu-report.json``. The budget is split:
tests first (``pytest -m cuda`` over the repo, at most 40 % of it), then the benches in order, each with a
time limit so one slow bench cannot eat the others; whatever did not fit is listed as "not run (budget)".
On a machine without CUDA it says so, writes a report saying so, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (name, cwd, command) of each bench's GPU run; each bench picks CUDA itself when it is there.
BENCHES = [
    ("bench-bf16acc", "projects/yolos-bf16accum", [sys.executable, "-m", "yolos_bf16accum.bench"]),
    ("bench-hyper", "projects/yolov9001-hyper", [sys.executable, "-m", "yolov9001.bench", "--device", "cuda",
                                                 "--json", "runs/bench/gpu.json"]),
    ("hyper-validate-aug-full", "projects/yolov9001-hyper",
     [sys.executable, "tools/validate_augmentations.py", "--data", "synthetic", "--img-size", "640", "--full-pipeline",
      "--batch-size", "16", "--num-workers", "4", "--gpu-collate", "--cuda-prefetch", "--cache", "ram", "--samples", "6",
      "--out", "runs/aug_outcomes_gpu"]),
    ("bench-yolox", "projects/yolox-gaudi", [sys.executable, "-m", "yolox_gaudi.bench"]),
    ("bench-qat", "projects/yolov10-qat", [sys.executable, "-m", "yolov10_qat", "bench"]),
    ("bench-yolov1", "projects/yolov1-paper", [sys.executable, "-m", "yolov1.bench", "--json", "runs/bench/gpu.json"]),
    ("bench-common", ".", [sys.executable, "tasks/bench_common.py", "--quick"]),
]


def device_info() -> dict:
    info = {"python": platform.python_version(), "host": platform.node()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_available"] = torch.cuda.is_available()
        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
            info["devices"] = torch.cuda.device_count()
            info["bf16"] = torch.cuda.is_bf16_supported()
    except Exception as e:  # a broken torch install is itself a finding
        info["torch_error"] = repr(e)
    for mod in ("triton", "onnxruntime"):
        try:
            m = __import__(mod)
            info[mod] = m.__version__
            if mod == "onnxruntime":
                info["ort_providers"] = m.get_available_providers()
        except Exception as e:
            info[mod] = f"missing ({type(e).__name__})"
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = r.stdout.strip() or r.stderr.strip()
    return info


def run_tests(budget_s: float, out_dir: Path) -> dict:
    junit = out_dir / "gpu-tests.xml"
    print(f"[gpu-check] pytest -m cuda (at most {budget_s:.0f} s)", flush=True)
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", f"--junitxml={junit}"],
                              cwd=REPO, capture_output=True, text=True, timeout=budget_s)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired as e:
        rc, tail = "timeout", str(e.stdout or "")[-3000:]
    cases = []
    if junit.is_file():
        for tc in ET.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for tag in ("failure", "error", "skipped"):
                node = tc.find(tag)
                if node is not None:
                    outcome = f"{tag}: {(node.get('message') or '')[:200]}"
            cases.append({"test": f"{tc.get('classname')}::{tc.get('name')}", "seconds": float(tc.get("time", 0)),
                          "outcome": outcome})
    return {"rc": rc, "seconds": time.time() - t0, "cases": cases, "tail": tail}


def run_benches(budget_s: float, per_bench_s: float) -> list[dict]:
    results, t_start = [], time.time()
    for name, cwd, cmd in BENCHES:
        left = budget_s - (time.time() - t_start)
        if left < 20:
            results.append({"bench": name, "status": "not run (budget)"})
            continue
        print(f"[gpu-check] {name} (at most {min(per_bench_s, left):.0f} s)", flush=True)
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, cwd=REPO / cwd, capture_output=True, text=True, timeout=min(per_bench_s, left),
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
            status, out = ("ok" if proc.returncode == 0 else f"rc {proc.returncode}"), proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:
            status = "timeout"
            out = (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or "")
        lines = [ln for ln in out.splitlines() if any(k in ln for k in ("x", "ratio", "ms", "/s", "%"))]
        results.append({"bench": name, "status": status, "seconds": round(time.time() - t0, 1),
                        "lines": lines[-25:], "tail": out[-1500:] if status != "ok" else ""})
    return results


def report(info: dict, tests: dict | None, benches: list[dict] | None) -> str:
    md = ["# GPU check", "", "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in info.items()]
    if not info.get("cuda_available"):
        md += ["", "No CUDA device here: nothing was run (this is not a failure)."]
        return "\n".join(md) + "\n"
    if tests is not None:
        md += ["", f"## CUDA tests (`pytest -m cuda`, rc {tests['rc']}, {tests['seconds']:.0f} s)", "",
               "| test | outcome | s |", "|---|---|---:|"]
        md += [f"| `{c['test']}` | {c['outcome']} | {c['seconds']:.1f} |" for c in tests["cases"]]
        if tests["rc"] not in (0, 5):
            md += ["", "```", tests["tail"], "```"]
    if benches is not None:
        md += ["", "## Benches (GPU rows)"]
        for b in benches:
            md += ["", f"### {b['bench']}: {b['status']}" + (f" ({b['seconds']} s)" if "seconds" in b else "")]
            if b.get("lines"):
                md += ["```", *b["lines"], "```"]
            if b.get("tail"):
                md += ["", "<details><summary>output</summary>", "", "```", b["tail"], "```", "</details>"]
    return "\n".join(md) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "gpu-report.md")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for tests + benches (default 8 min)")
    ap.add_argument("--only", choices=("tests", "benches"), default=None)
    args = ap.parse_args(argv)
    info = device_info()
    tests = benches = None
    if info.get("cuda_available"):
        t0 = time.time()
        if args.only != "benches":
            tests = run_tests(args.budget * (1.0 if args.only == "tests" else 0.4), args.out.parent)
        if args.only != "tests":
            left = args.budget - (time.time() - t0)
            benches = run_benches(left, per_bench_s=max(60.0, left / 3))
    else:
        print("[gpu-check] no CUDA device on this machine: nothing to run (exit 0)")
    args.out.write_text(report(info, tests, benches), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"info": info, "tests": tests, "benches": benches},
                                                        indent=1, default=str))
    print(f"[gpu-check] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
