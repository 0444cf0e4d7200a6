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


@pytest.mark.slow
def test_unreadable_images_are_counted_not_fatal(tmp_path):
    """Truncated / empty / garbage images (COCO headers are trusted): training with 2 loader workers
    replaces them, evaluation drops them from the batch; counts land in metrics_summary.json."""
    import shutil

    from yolo_common.synthetic import make_synthetic

    from yolos_bf16accum.config import smoke_config
    from yolos_bf16accum.train import run

    src = make_synthetic(tmp_path / "src", layouts=("coco",), num_train=8, num_val=4, image_size=(96, 64),
                         seed=0)["coco"]
    root = tmp_path / "coco"
    shutil.copytree(src, root)
    train = sorted((root / "train2017").iterdir())
    train[0].write_bytes(train[0].read_bytes()[:200])
    train[1].write_bytes(b"")
    val = sorted((root / "val2017").iterdir())
    val[0].write_bytes(b"garbage")
    cfg = smoke_config("baseline", output_dir=str(tmp_path / "run"), dataset="coco2017", coco_dir=str(root),
                       num_train_epochs=1, num_workers=2)
    summary = run(cfg)
    assert summary["unreadable_eval_images"] == 1 and summary["final"]["num_images"] == 3
    assert summary["unreadable_train_images"] >= 1      # each time an unreadable index is drawn
    verified = run(smoke_config("baseline", output_dir=str(tmp_path / "v"), dataset="coco2017",
                                coco_dir=str(root), num_train_epochs=1, verify_images=True))
    assert (verified["train_images"], verified["eval_images"]) == (6, 3)
    assert verified["unreadable_train_images"] == verified["unreadable_eval_images"] == 0
