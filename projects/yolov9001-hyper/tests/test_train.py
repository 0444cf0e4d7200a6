"""Training: checkpoints (weights_only), resume == uninterrupted, NaN stop, run dirs, 2-process DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from yolov9001.cli import main
from yolov9001.core import trainer as trainer_mod
from yolov9001.core.rundir import increment_run_dir, resolve_resume

PROJECT = Path(__file__).resolve().parents[1]
TINY = ["--img-size", "64", "--batch-size", "4", "--workers", "0", "--tb-only", "--device", "cpu"]
HYPO = "warmup_min_iters:0,warmup_epochs:1,nbs:8,val_interval:1"


def test_checkpoint_contents_load_with_weights_only(trained):
    ck = torch.load(trained["last"], map_location="cpu", weights_only=True)
    assert {"model", "ema", "optimizer", "scaler", "epoch", "step", "config", "names"} <= set(ck)
    assert ck["epoch"] == 0 and ck["step"] == 2 and ck["names"] == ["circle", "square", "triangle"]
    assert ck["config"]["imgsz"] == 64 and ck["config"]["nc"] == 3
    assert trained["best"].is_file()
    cfg = json.loads((trained["run"] / "config.json").read_text())
    assert cfg["config"]["imgsz"] == 64
    lines = (trained["run"] / "logs" / "train.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    assert {"loss", "lr", "loss/box", "hyperedge_size"} <= set(rec) and rec["hyperedge_size"] >= 1
    ev = json.loads((trained["run"] / "logs" / "eval.jsonl").read_text().splitlines()[-1])
    assert 0 <= ev["AP"] <= 1 and "AP50" in ev
    assert (trained["run"] / "curves" / "loss.png").is_file() and any((trained["run"] / "tb").iterdir())
    assert not list(trained["run"].rglob("*.tmp"))


def test_run_dirs_increment_and_resume_resolution(tmp_path):
    a, b, c = (increment_run_dir(tmp_path) for _ in range(3))
    assert [p.name for p in (a, b, c)] == ["exp", "exp2", "exp3"]
    (a / "checkpoints").mkdir()
    (a / "checkpoints" / "best.pt").write_bytes(b"x")
    assert resolve_resume(a).name == "best.pt"
    (a / "checkpoints" / "last.pt").write_bytes(b"x")
    assert resolve_resume(a).name == "last.pt"
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        resolve_resume(b)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_resume_continues_exactly(synthetic, tmp_path, monkeypatch):
    """2 epochs in one go == 1 epoch, a crash, and --resume RUN_DIR (model, EMA, optimizer, step, LR)."""
    args = ["train", "--data", str(synthetic["yolo"]), "--epochs", "2", *TINY, "--hypo", HYPO]
    full = Path(main([*args, "--log-dir", str(tmp_path / "a")])["run_dir"])

    original = trainer_mod.Trainer._optimizer_step

    def killed_mid_epoch(self):
        if self.step == 7:  # epoch 2 (steps 4..7), after steps 4-6 were logged
            raise KeyboardInterrupt("simulated kill")
        return original(self)

    monkeypatch.setattr(trainer_mod.Trainer, "_optimizer_step", killed_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--log-dir", str(tmp_path / "b")])
    monkeypatch.setattr(trainer_mod.Trainer, "_optimizer_step", original)
    part = tmp_path / "b" / "exp"
    assert _state(part / "checkpoints" / "last.pt")["epoch"] == 0
    logged = [json.loads(x)["step"] for x in (part / "logs" / "train.jsonl").read_text().splitlines()]
    assert logged == [0, 1, 2, 3, 4, 5, 6]  # the killed run got past its checkpoint
    main(["train", "--resume", str(part), *TINY])
    assert not (tmp_path / "b" / "exp2").exists()  # resuming keeps the run dir
    a, b = _state(full / "checkpoints" / "last.pt"), _state(part / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 1 and a["step"] == b["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][key], b["ema"]["model"][key]), key
    assert a["ema"]["updates"] == b["ema"]["updates"]
    # the logs hold every step once: the killed run's partial records are trimmed, TB purged
    steps = [json.loads(x)["step"] for x in (part / "logs" / "train.jsonl").read_text().splitlines()]
    full_steps = [json.loads(x)["step"] for x in (full / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == full_steps == sorted(set(steps))
    assert len((part / "logs" / "eval.jsonl").read_text().splitlines()) == 2
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [g["lr"] for g in b["optimizer"]["param_groups"]]


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(synthetic, tmp_path, monkeypatch):
    from yolov9001.utils.loss import DetectionLoss

    real = DetectionLoss.__call__
    calls = {"n": 0}

    def poisoned(self, feats, targets, epoch=0, dino=None):
        loss, items = real(self, feats, targets, epoch, dino=dino)
        calls["n"] += 1
        return (loss * float("nan"), items) if epoch == 1 else (loss, items)

    monkeypatch.setattr(DetectionLoss, "__call__", poisoned)
    with pytest.raises(SystemExit, match="non-finite loss .* epoch 2"):
        main(["train", "--data", str(synthetic["yolo"]), "--epochs", "3", *TINY, "--hypo", HYPO, "--log-dir",
              str(tmp_path)])
    ck = _state(tmp_path / "exp" / "checkpoints" / "last.pt")
    assert ck["epoch"] == 0 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_two_process_ddp_gloo(synthetic, tmp_path):
    """torchrun --nproc_per_node 2 on the CPU: one run dir, one set of checkpoints, world size 2 recorded,
    and each rank trained on its half of the data (steps per epoch halve). The tiny DINOv3 teacher is on
    (feature distillation + contrast), so the distillation head's hand-made gradient all-reduce runs too."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_PORT="29617")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29617",
           str(PROJECT / "9001.py"), "train", "--data", str(synthetic["yolo"]), "--epochs", "1", *TINY,
           "--hypo", HYPO + ",dino.enabled:true,dino.model_name:tiny-random,dino.resolution:64,"
           "dino.feat_distill:true,dino.contrast:true", "--log-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    run = tmp_path / "exp"
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    ck = _state(run / "checkpoints" / "last.pt")
    assert ck["step"] == 2  # 16 images / (2 ranks x batch 4)
    lines = (run / "logs" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 logs alone
    assert "dino/feat" in json.loads(lines[0]) and ck["distill"]["head"]["feat_proj.weight"].isfinite().all()


@pytest.mark.slow
def test_heavy_logging_and_bf16_autocast(synthetic, tmp_path):
    """--log INFO,HEAVY adds a batch grid and weight histograms to TensorBoard; precision bf16 trains under
    CPU autocast and still saves fp32 weights."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = main(["train", "--data", str(synthetic["yolo"]), "--epochs", "1", "--img-size", "64", "--batch-size", "8",
                "--workers", "0", "--device", "cpu", "--log", "INFO,HEAVY", "--log-dir", str(tmp_path),
                "--hypo", HYPO + ",precision:bf16"])
    run = Path(res["run_dir"])
    ev = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "histograms": 0}).Reload()
    assert "train/batch" in ev.Tags()["images"]
    assert any(t.startswith("weights/model.0.conv") for t in ev.Tags()["histograms"])
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    ck = _state(run / "checkpoints" / "last.pt")
    assert ck["model"]["model.0.conv.weight"].dtype == torch.float32
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_compile_trains_like_eager(synthetic, tmp_path):
    """--compile (inductor) runs the same training; its first-epoch losses match eager's closely."""
    common = ["train", "--data", str(synthetic["yolo"]), "--epochs", "1", "--scale", "t", *TINY, "--hypo", HYPO]
    eager = Path(main([*common, "--log-dir", str(tmp_path / "e")])["run_dir"])
    compiled = Path(main([*common, "--compile", "--log-dir", str(tmp_path / "c")])["run_dir"])
    le = [json.loads(x)["loss"] for x in (eager / "logs" / "train.jsonl").read_text().splitlines()]
    lc = [json.loads(x)["loss"] for x in (compiled / "logs" / "train.jsonl").read_text().splitlines()]
    assert len(le) == len(lc) == 4
    assert le[0] == pytest.approx(lc[0], rel=1e-3)
    assert max(abs(a - b) / a for a, b in zip(le, lc)) < 0.05
