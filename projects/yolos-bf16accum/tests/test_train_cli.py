"""Both entry points end to end on the synthetic set: logs, summary, checkpoints, patched blocks."""

import json
import logging
import runpy
import sys
from pathlib import Path

import pytest
import torch

PROJECT = Path(__file__).resolve().parents[1]


def _run(script, tmp_path, *extra):
    out = tmp_path / script.split("_")[2]
    argv = [script, "--smoke", "--output_dir", str(out), "--num_train_epochs", "2", "--max_train_samples", "8",
            "--max_eval_samples", "4", *extra]
    # The CLI owns its process (it sets torch threads, may configure logging): put both back for the
    # tests that share this one.
    old_argv, threads = sys.argv, torch.get_num_threads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sys.argv = argv
    try:
        runpy.run_path(str(PROJECT / script), run_name="__main__")
    finally:
        sys.argv = old_argv
        torch.set_num_threads(threads)
        root.handlers[:], root.level = handlers, level
    return out


@pytest.mark.slow
def test_baseline_and_progressive_runs_write_everything(tmp_path):
    from yolo_common.checkpoint import load_checkpoint

    base = _run("train_yolos_baseline_bf16.py", tmp_path)
    prog = _run("train_yolos_progressive_bf16accum_ste.py", tmp_path, "--blocks_per_stage", "1")
    for out in (base, prog):
        for f in ("config.json", "logs/train.jsonl", "logs/eval.jsonl", "metrics_summary.json",
                  "checkpoints/last.pt", "curves/loss.csv"):
            assert (out / f).is_file(), f
        assert any((out / "tb").iterdir())
        summary = json.loads((out / "metrics_summary.json").read_text())
        assert summary["final_step"] == summary["total_steps"] == 4
        assert 0 <= summary["final"]["AP"] <= 1
        ckpt = load_checkpoint(out / "checkpoints/last.pt")  # weights_only
        assert ckpt["step"] == 4
    evals = [json.loads(l) for l in (prog / "logs/eval.jsonl").read_text().splitlines()]
    assert all("bf16acc/attn" in e for e in evals)  # groups logged at every eval
    assert evals[-1]["patched_linears"] == 6 * 4 + 6 and evals[-1]["patched_attention"] == 4
    summary = json.loads((prog / "metrics_summary.json").read_text())
    assert summary["bf16acc_final_state"]["attn"] == [0, 1, 2, 3]
    base_eval = [json.loads(l) for l in (base / "logs/eval.jsonl").read_text().splitlines()]
    assert base_eval[-1]["patched_linears"] == 0


def test_bad_schedule_exits_with_message(tmp_path):
    from yolos_bf16accum.cli import main

    with pytest.raises(SystemExit, match="unknown group"):
        main(["--smoke", "--output_dir", str(tmp_path), "--schedule", "ffn@0.3"], regime="progressive")
