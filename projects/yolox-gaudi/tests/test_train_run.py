"""End-to-end runs (slow): resume continues the counters; 2 gloo processes == 1 process, same global batch."""

import json
import subprocess
import sys

import pytest
import torch

TINY = ["num_classes", "3", "input_size", "64,64", "test_size", "64,64", "random_size", "2,3",
        "data_num_workers", "0", "print_interval", "1", "warmup_epochs", "1", "no_aug_epochs", "0"]


def _train(tmp_path, extra, opts, name="run", in_process=True):
    argv = ["--name", "yolox-nano", "--device", "cpu", "--threads", "1",
           "--synthetic", "--synthetic-images", "16", "--synthetic-size", "64", "-expn", name, *extra,
           *TINY, "output_dir", str(tmp_path), *opts]
    if in_process:   # saves an interpreter + torch import per run
        from yolox_gaudi.train import main

        assert main(argv) == 0
    else:
        r = subprocess.run([sys.executable, "-m", "yolox_gaudi.train", *argv], capture_output=True, text=True,
                           timeout=400)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp_path / name


@pytest.mark.slow
def test_resume_continues_epoch_and_iteration(tmp_path):
    root = _train(tmp_path, ["--batch-size", "8"], ["max_epoch", "1"])
    ck = torch.load(root / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["start_epoch"], ck["iteration"]) == (1, 2)         # 16 images / batch 8
    assert (root / "eval" / "metrics.json").is_file() and (root / "curves" / "loss.csv").is_file()
    for key in ("AP", "AP50", "AR100"):
        assert key in json.loads((root / "eval" / "metrics.json").read_text())
    # as if the process had been killed after logging iterations 3 and 4 (past its last checkpoint)
    with open(root / "logs" / "train.jsonl", "a") as f:
        f.write('{"step": 3, "epoch": 1.5, "time": 0}\n{"step": 4, "epoch": 2.0, "time": 0}\n{"step": 5, "lo')
    _train(tmp_path, ["--batch-size", "8", "--resume"], ["max_epoch", "2"])
    ck2 = torch.load(root / "checkpoints" / "last.pt", weights_only=True)
    assert (ck2["start_epoch"], ck2["iteration"], ck2["ema_updates"]) == (2, 4, 4)
    steps = [json.loads(line)["step"] for line in (root / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]              # the second run went on from 2; the killed run's 3, 4 trimmed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_steps = [e.step for e in EventAccumulator(str(root / "tb")).Reload().Scalars("train/total_loss")]
    assert tb_steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    # freeze_bn: BN statistics of a 2-image shard differ from those of the 4-image batch (upstream has
    # no SyncBN), which is the one thing data parallelism legitimately changes; everything else
    # (sharding, loss normalisation, gradient averaging, multiscale, augmentation) must agree.
    opts = ["max_epoch", "1", "steps", "3", "freeze_bn", "True", "mosaic_prob", "1", "warmup_epochs", "0",
            "basic_lr_per_img", "0.01"]
    one = _train(tmp_path, ["--batch-size", "4", "--devices", "1"], opts, "one")
    # --devices 2 without a launcher: the CLI starts 2 ranks itself (torchrun's variables, gloo on CPU)
    two = _train(tmp_path, ["--batch-size", "4", "--devices", "2"], opts, "two", in_process=False)
    a = torch.load(one / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 3
    assert json.loads((two / "config.json").read_text())["world_size"] == 2
    from yolox_gaudi.config import get_exp
    from yolox_gaudi.model import build_model

    torch.manual_seed(0)
    init = build_model(get_exp("yolox-nano").merge(["num_classes", "3"])).state_dict()
    moved = max((a["train_model"][k] - init[k]).abs().max().item() for k in init if init[k].is_floating_point())
    assert moved > 1e-3                                            # training really changed the weights
    for k, v in a["train_model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(b["train_model"][k], v, rtol=1e-4, atol=2e-5, msg=k)


@pytest.mark.slow
def test_eval_cli_on_a_trained_checkpoint(tmp_path):
    root = _train(tmp_path, ["--batch-size", "8"], ["max_epoch", "1", "save_history_ckpt", "False"])
    assert sorted(p.name for p in (root / "checkpoints").glob("*.pt")) == ["best.pt", "last.pt"]
    from yolox_gaudi.eval import main

    out = tmp_path / "ev"
    assert main(["--name", "yolox-nano", "-c", str(root / "checkpoints" / "best.pt"), "--data_dir",
                 str(root / "synthetic" / "coco"), "--tsize", "64", "--out", str(out), "num_classes", "3",
                 "data_num_workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AR100", "per_class"} and -1 <= metrics["AP"] <= 1
    # a checkpoint of another class count is refused with a message naming the file
    assert main(["--name", "yolox-nano", "-c", str(root / "checkpoints" / "best.pt"), "--data_dir",
                 str(root / "synthetic" / "coco"), "--out", str(out), "num_classes", "80"]) == 2


def test_class_count_mismatch_names_the_annotation_file(synthetic_coco, tmp_path, capsys):
    from yolox_gaudi.train import main

    rc = main(["--name", "yolox-nano", "--device", "cpu", "--data_dir", str(synthetic_coco), "output_dir",
               str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "instances_train2017.json has 3 categories but num_classes=80" in err
    assert "num_classes 3" in err
