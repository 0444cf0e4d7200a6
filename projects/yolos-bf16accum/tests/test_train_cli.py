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

    base = _run("train_yolos_baseline_bf16.py", tmp_path, "--eval_aspect", "--eval_shortest_edge", "48",
                "--eval_longest_edge", "160")
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
    aspect = json.loads((base / "metrics_summary.json").read_text())["final_aspect"]
    assert aspect["shortest_edge"] == 48 and 0 <= aspect["AP"] <= 1 and aspect["num_images"] == 4
    base_eval = [json.loads(l) for l in (base / "logs/eval.jsonl").read_text().splitlines()]
    assert base_eval[-1]["patched_linears"] == 0
    # per-layer error report at every eval with something patched (the baseline writes none)
    reports = [json.loads(l) for l in (prog / "logs/layer_errors.jsonl").read_text().splitlines()]
    assert [r["step"] for r in reports] == [e["step"] for e in evals if e["patched_linears"] or e["patched_attention"]]
    assert len(reports[-1]["errors"]) == 6 * 4 + 6 + 4 and 0 < evals[-1]["layer_err/max"] < 1
    assert not (base / "logs/layer_errors.jsonl").exists()


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


@pytest.mark.parametrize("offline_env", [True, False])
def test_unloadable_model_is_an_error_line_at_once(tmp_path, monkeypatch, offline_env):
    """No network: HF_HUB_OFFLINE, or the 2 s probe says the hub is unreachable -> cache only, so the error
    comes at once (not after ~50 s of hub retries) and as the CLI's `error:` line, not a traceback."""
    import time

    from yolos_bf16accum import model as model_mod
    from yolos_bf16accum.cli import main

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if offline_env:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model_mod, "hub_reachable", lambda *a, **k: False)   # never touch the network here
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    t0 = time.time()
    with pytest.raises(SystemExit, match="error: cannot load YOLOS model 'hustvl/yolos-tiny'") as e:
        main(["--dataset", "synthetic", "--output_dir", str(tmp_path / "run"), "--model", "hustvl/yolos-tiny",
              "--max_train_samples", "4", "--max_eval_samples", "2", "--num_workers", "0", "--device", "cpu",
              "--precision", "fp32"])
    assert time.time() - t0 < 30
    assert ("HF_HUB_OFFLINE is set" if offline_env else "unreachable") in str(e.value)


def test_logged_lr_is_the_lr_the_step_used(tmp_path):
    """train.jsonl's lr at step 1 is the scheduler's value for step 0 (it used to log the next step's)."""
    import torch

    from yolos_bf16accum.config import smoke_config
    from yolos_bf16accum.train import build_lr_scheduler, run

    cfg = smoke_config("baseline", output_dir=str(tmp_path / "run"), num_train_epochs=1, synthetic_train=8,
                       synthetic_val=4, log_every_steps=1)
    summary = run(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "logs" / "train.jsonl").read_text().splitlines()]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.learning_rate)
    sched = build_lr_scheduler(opt, summary["total_steps"], cfg.warmup_ratio)
    expected = []
    for _ in rows:
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [r["lr"] for r in rows] == pytest.approx(expected)


def test_eval_only_ablation_writes_its_table_from_a_checkpoint(tmp_path):
    """--eval_only --ablate on a (random-init, saved) checkpoint: none, each group, all; the patched
    configurations change the eval loss, stochastic rounding repeats per seed, the files are written."""
    from yolos_bf16accum.ablation import interval95, parse_groups
    from yolos_bf16accum.config import smoke_config
    from yolos_bf16accum.model import build_model

    cfg = smoke_config("progressive", str(tmp_path / "x"))
    torch.manual_seed(3)
    model = build_model(cfg, 3, {0: "circle", 1: "square", 2: "triangle"})
    torch.save({"model": model.state_dict(), "step": 0}, tmp_path / "init.pt")
    out = _run("train_yolos_progressive_bf16accum_ste.py", tmp_path, "--eval_only", "--ablate", "mlp,head,patch_embed",
               "--init_checkpoint", str(tmp_path / "init.pt"), "--rounding", "sr", "--ablate_seeds", "2",
               "--accum_chunk", "1", "--accum_format", "e5m2")
    result = json.loads((out / "ablation.json").read_text())
    rows = {r["config"]: r for r in result["rows"]}
    assert list(rows) == ["none", "mlp", "head", "patch_embed", "all"]
    assert rows["none"]["seeds"] == 1 and rows["all"]["seeds"] == 2
    # the seeds really differ: two SR streams give two different eval losses
    assert len({s["loss"] for s in rows["all"]["per_seed"]}) == 2
    assert all(r["eval loss"] != rows["none"]["eval loss"] for n, r in rows.items() if n != "none")
    assert result["datapath"] == "e5m2/sr/c1" and result["eval_images"] == 4
    assert (out / "ablation.md").read_text().count("\n|") == 7 and (out / "ablation.csv").is_file()
    assert not (out / "checkpoints").exists()              # nothing trained
    assert abs(interval95([1.0, 2.0, 3.0]) - 4.303 / 3 ** 0.5) < 1e-9 and interval95([0.5]) == 0.0
    with pytest.raises(ValueError, match="ablate"):
        parse_groups("attn,bogus")
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"nope": torch.zeros(1)}}, bad)
    with pytest.raises(SystemExit, match="does not match"):
        _run("train_yolos_progressive_bf16accum_ste.py", tmp_path, "--eval_only", "--init_checkpoint", str(bad))


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    """Progressive regime, stochastic rounding, 2 loader workers, augmentations on: a run killed after
    epoch 1 and resumed with --resume ends with the same weights, the same eval/train logs and the same
    per-layer error reports as the run that was never interrupted."""
    from yolo_common.checkpoint import load_checkpoint

    import yolos_bf16accum.engine as engine

    args = ("--max_train_samples", "8", "--num_train_epochs", "3", "--num_workers", "2", "--accum_chunk", "16",
            "--rounding", "sr", "--blocks_per_stage", "1")
    whole = _run("train_yolos_progressive_bf16accum_ste.py", tmp_path / "whole", *args)

    real = engine.train_one_epoch

    def killed_at_epoch_2(*a, **kw):
        if a[5].epoch == 2:            # state: after epochs 0 and 1 were checkpointed
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(engine, "train_one_epoch", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _run("train_yolos_progressive_bf16accum_ste.py", tmp_path / "parts", *args)
    monkeypatch.setattr(engine, "train_one_epoch", real)
    parts = _run("train_yolos_progressive_bf16accum_ste.py", tmp_path / "parts", *args, "--resume")

    a, b = load_checkpoint(whole / "checkpoints/last.pt"), load_checkpoint(parts / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 6 and a["patch_state"] == b["patch_state"]
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k

    def lines(run, name, drop=("time",)):
        return [{k: v for k, v in json.loads(l).items() if k not in drop}
                for l in (run / "logs" / name).read_text().splitlines()]

    for name in ("eval.jsonl", "train.jsonl", "layer_errors.jsonl"):
        assert lines(whole, name) == lines(parts, name), name
    sa, sb = (json.loads((r / "metrics_summary.json").read_text()) for r in (whole, parts))
    assert sa["evals"] == sb["evals"] and len(sa["evals"]) == 3
    # a resume with other settings is refused with a clear error (also the optimiser's, which
    # load_state_dict would otherwise silently override)
    with pytest.raises(SystemExit, match="learning_rate"):
        _run("train_yolos_progressive_bf16accum_ste.py", tmp_path / "parts", *args, "--learning_rate", "3e-4",
             "--resume")
    with pytest.raises(SystemExit, match="accum_chunk"):
        other = [("32" if x == "16" else x) for x in args]
        _run("train_yolos_progressive_bf16accum_ste.py", tmp_path / "parts", *other, "--resume")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process_with_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo), 4 images each vs 1 process with 8: the same parameters after the
    run (tolerance: DDP's all-reduce sums gradients in another order), the same patch state on every rank
    (checked in the run), and rank 0 alone wrote logs, checkpoints and the summary."""
    import os
    import subprocess

    from yolo_common.checkpoint import load_checkpoint

    common = ["--smoke", "--no_augment", "--num_workers", "0", "--max_train_samples", "8", "--max_eval_samples", "4",
              "--num_train_epochs", "3", "--accum_chunk", "16", "--blocks_per_stage", "1", "--learning_rate", "1e-4"]
    one = tmp_path / "one"
    _run_args = ["--output_dir", str(one), "--per_device_train_batch_size", "8", *common]
    old_argv, threads = sys.argv, torch.get_num_threads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sys.argv = ["train_yolos_progressive_bf16accum_ste.py", *_run_args]
    try:
        runpy.run_path(str(PROJECT / "train_yolos_progressive_bf16accum_ste.py"), run_name="__main__")
    finally:
        sys.argv = old_argv
        torch.set_num_threads(threads)
        root.handlers[:], root.level = handlers, level
    two = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(PROJECT / "train_yolos_progressive_bf16accum_ste.py"), "--output_dir", str(two),
           "--per_device_train_batch_size", "4", *common]
    res = subprocess.run(cmd, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_checkpoint(one / "checkpoints/last.pt"), load_checkpoint(two / "checkpoints/last.pt")
    assert a["step"] == b["step"] == 3 and a["patch_state"] == b["patch_state"] and a["patch_state"]
    # step 1 depends only on the (seeded) init and the data: the global-batch loss and the clipped
    # gradient's norm agree to float rounding (without the loss rescaling they differ by ~10%)
    first = [json.loads((r / "logs/train.jsonl").read_text().splitlines()[0]) for r in (one, two)]
    assert first[0]["step"] == first[1]["step"] == 1
    for key in ("loss", "grad_norm"):
        assert abs(first[0][key] - first[1][key]) <= 1e-5 * abs(first[0][key]), (key, first)
    # later steps: AdamW's first updates are ~lr * sign(g), so near-zero gradients whose sign differs in
    # the last bits move by ~lr either way (measured: 3% of the parameters' total movement, max 1.3e-4 at
    # lr 1e-4); the parameters as a whole agree closely
    diff = sum(float((a["model"][k] - b["model"][k]).norm() ** 2) for k in a["model"]) ** 0.5
    norm = sum(float(v.norm() ** 2) for v in a["model"].values()) ** 0.5
    assert diff / norm < 2e-4, (diff, norm)
    assert max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"]) < 3e-4
    s1, s2 = (json.loads((r / "metrics_summary.json").read_text()) for r in (one, two))
    assert (s1["world_size"], s2["world_size"]) == (1, 2) and s1["global_batch"] == s2["global_batch"] == 8
    l1 = (one / "logs/train.jsonl").read_text().splitlines()
    l2 = (two / "logs/train.jsonl").read_text().splitlines()
    assert len(l1) == len(l2)                             # written once, by rank 0
    assert len((two / "logs/eval.jsonl").read_text().splitlines()) == 3
