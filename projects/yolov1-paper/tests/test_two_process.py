"""Two CPU processes through accelerate (gloo): the evaluation gathers every validation image exactly once
(6 images over 2 ranks x batch 4 needs padding that gather_for_metrics must drop), the logs are written
once, and extract_backbone reads the 2-process checkpoint. Each rank loads with 2 DataLoader workers, as a real
run does (that the draws change per epoch in workers is checked by the single-process tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_gloo_processes_detection(synthetic_voc, tmp_path):
    from yolov1.checkpoints import extract_backbone
    from yolov1.voc import read_voc_parts

    (val,) = read_voc_parts(synthetic_voc, "2012:val")
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           "29631", "-m", "yolov1.detection_train", f"data_root={synthetic_voc}", "train_split=2012:train",
           "val_split=2012:val", f"output_dir={tmp_path}", "run_name=ddp", "verify_images=false",
           "num_workers=2", "S=2", "hidden=16", "width=0.125", "batch_size=4", "epochs=1", "lr_milestones=3",
           "log_every=1", "cpu=true", "grad_clip_norm=10", "lr=0.001"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 process(es), MULTI_CPU" in r.stdout
    run = tmp_path / "ddp"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == len(val) == 6          # each image once: padding dropped, none lost
    rows = (run / "logs" / "train.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in rows]
    assert steps == sorted(set(steps)) and len(steps) == 1   # 12 images / (2 ranks x 4) = 1 step, logged once
    out = extract_backbone(run, tmp_path / "bb.safetensors")
    assert out.is_file() and out.stat().st_size > 0
