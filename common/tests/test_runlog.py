import json
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from yolo_common import runlog


@dataclass
class Cfg:
    data: Path = Path("/data/coco")
    lr: float = 0.01
    epochs: np.int64 = np.int64(3)
    scale: np.float32 = np.float32(0.5)
    sizes: tuple = (320, 640)
    extra: dict = field(default_factory=lambda: {"dtype": torch.bfloat16})


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def no_wandb(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError


def test_layout_jsonl_config(tmp_path):
    root = tmp_path / "run"
    t0 = time.time()
    with runlog.RunLogger(root, Cfg(), rank=0, tensorboard=False) as run:
        assert not (root / "logs").exists()  # lazy: nothing until the first line
        run.log_train(1, 0, loss=torch.tensor(2.5), lr=np.float64(0.01), note="warmup")
        # The line is on disk before close: a crash now would not lose it.
        assert _lines(run.train_log_path)[0]["loss"] == 2.5
        run.log_train(2, 0, loss=float("nan"), **{"loss/box": 1.0})
        run.log_eval(2, 0, mAP50=0.4)
    cfg = json.loads((root / "config.json").read_text())
    assert cfg == {"data": "/data/coco", "lr": 0.01, "epochs": 3, "scale": 0.5, "sizes": [320, 640],
                   "extra": {"dtype": "torch.bfloat16"}}
    train = _lines(root / "logs" / "train.jsonl")
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert r["epoch"] == 0 and t0 - 1 <= r["time"] <= time.time() + 1
    assert train[0]["note"] == "warmup" and train[0]["lr"] == 0.01
    assert train[1]["loss"] is None and train[1]["loss/box"] == 1.0  # NaN -> null, strict JSON
    evals = _lines(root / "logs" / "eval.jsonl")
    assert evals[0]["mAP50"] == 0.4 and {"step", "epoch", "time"} <= evals[0].keys()


def test_reserved_names_rejected(tmp_path):
    with runlog.RunLogger(tmp_path, rank=0, tensorboard=False) as run:
        with pytest.raises(ValueError, match="reserved"):
            run.log_train(1, 0, time=3.0)


def test_dirs_created_on_demand(tmp_path):
    run = runlog.RunLogger(tmp_path / "r", rank=0)
    assert not (tmp_path / "r").exists()
    assert run.checkpoints_dir.is_dir() and run.onnx_dir.is_dir()
    assert run.checkpoints_dir == tmp_path / "r" / "checkpoints"
    run.close()
    assert not (tmp_path / "r" / "tb").exists()  # never logged -> no TensorBoard writer


def test_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with runlog.RunLogger(tmp_path, rank=0) as run:
        for step in range(3):
            run.log_train(step, 0, loss=1.0 / (step + 1))
        run.log_eval(2, 0, mAP=0.25)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert {"train/loss", "eval/mAP"} <= set(acc.Tags()["scalars"])
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [0, 1, 2]
    assert [e.value for e in loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert acc.Scalars("eval/mAP")[0].value == pytest.approx(0.25)


def test_curves(tmp_path):
    with runlog.RunLogger(tmp_path, rank=0, tensorboard=False, curves_on_close=False) as run:
        for step in range(5):
            run.log_train(step, step // 2, loss=5.0 - step, box_loss=1.0, lr=0.1)
        csv_path, png_path = run.write_curves()
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "step,epoch,loss,box_loss"  # lr is not loss-like
    assert rows[1] == "0,0,5.0,1.0" and len(rows) == 6
    data = png_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_curves_on_close_and_without_losses(tmp_path):
    with runlog.RunLogger(tmp_path / "a", rank=0, tensorboard=False) as run:
        run.log_train(0, 0, loss=1.0)
    assert (tmp_path / "a" / "curves" / "loss.png").is_file()
    with runlog.RunLogger(tmp_path / "b", rank=0, tensorboard=False) as run:
        run.log_train(0, 0, lr=1.0)
        assert run.write_curves() is None


def test_matplotlib_backend_untouched(tmp_path):
    import matplotlib

    before = matplotlib.get_backend()
    runlog.write_loss_curves(tmp_path / "missing.jsonl", tmp_path)  # no log -> None, no error
    with runlog.RunLogger(tmp_path, rank=0, tensorboard=False) as run:
        run.log_train(0, 0, loss=1.0)
    assert matplotlib.get_backend() == before


def test_nonzero_rank_writes_nothing(tmp_path, no_wandb):
    root = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even the W&B warning on rank 1
        with runlog.RunLogger(root, Cfg(), rank=1, report_to="wandb") as run:
            assert run.log_train(1, 0, loss=1.0) is None
            run.log_eval(1, 0, mAP=0.1)
            assert run.write_curves() is None
            run.write_summary({"x": "y"})
            assert run.checkpoints_dir == root / "checkpoints"
            _ = run.onnx_dir, run.tb_dir
    assert not root.exists()


def test_rank_defaults_from_launcher_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = runlog.RunLogger(tmp_path / "r", {"a": 1})
    assert run.rank == 1 and not run.active
    run.close()
    assert not (tmp_path / "r").exists()


def test_wandb_missing_warns_once(tmp_path, no_wandb):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with runlog.RunLogger(tmp_path, {"lr": 0.1}, rank=0, tensorboard=False,
                              report_to="wandb", wandb_project="p") as run:
            run.log_train(1, 0, loss=1.0)
            run.log_train(2, 0, loss=0.5)
    relevant = [w for w in caught if "W&B" in str(w.message)]
    assert len(relevant) == 1 and "not installed" in str(relevant[0].message)
    assert len(_lines(tmp_path / "logs" / "train.jsonl")) == 2


class _FakeRun:
    def __init__(self):
        self.logged, self.finished = [], False

    def log(self, data, step=None):
        self.logged.append((step, data))

    def finish(self):
        self.finished = True


def _fake_wandb(monkeypatch, init):
    mod = types.ModuleType("wandb")
    mod.init = init
    monkeypatch.setitem(sys.modules, "wandb", mod)


def test_wandb_calls_forwarded(tmp_path, monkeypatch):
    fake_run, init_kwargs = _FakeRun(), {}

    def init(**kwargs):
        init_kwargs.update(kwargs)
        return fake_run

    _fake_wandb(monkeypatch, init)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with runlog.RunLogger(tmp_path, Cfg(), rank=0, tensorboard=False, report_to=["wandb"],
                              wandb_project="proj", wandb_run_name="r1", wandb_mode="offline",
                              wandb_kwargs={"tags": ["t"]}) as run:
            run.log_train(3, 1, loss=torch.tensor(0.5), note="text")
            run.log_eval(3, 1, mAP=0.2)
    assert init_kwargs["project"] == "proj" and init_kwargs["name"] == "r1"
    assert init_kwargs["mode"] == "offline" and init_kwargs["tags"] == ["t"]
    assert init_kwargs["config"]["data"] == "/data/coco" and init_kwargs["dir"] == str(tmp_path)
    assert fake_run.logged == [(3, {"train/epoch": 1, "train/loss": 0.5}),
                               (3, {"eval/epoch": 1, "eval/mAP": 0.2})]
    assert fake_run.finished


def test_wandb_mode_left_to_env_when_not_given(tmp_path, monkeypatch):
    seen = {}
    _fake_wandb(monkeypatch, lambda **k: seen.update(k) or _FakeRun())
    runlog.RunLogger(tmp_path, rank=0, report_to="wandb").close()
    assert "mode" not in seen  # wandb itself reads WANDB_MODE


def test_wandb_init_failure_warns_once(tmp_path, monkeypatch):
    def init(**kwargs):
        raise RuntimeError("api_key not configured (no-tty)")

    _fake_wandb(monkeypatch, init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with runlog.RunLogger(tmp_path, rank=0, tensorboard=False, report_to="wandb") as run:
            run.log_train(1, 0, loss=1.0)
    msgs = [str(w.message) for w in caught if "W&B" in str(w.message)]
    assert len(msgs) == 1 and "api_key" in msgs[0]
    assert _lines(tmp_path / "logs" / "train.jsonl")[0]["loss"] == 1.0


def test_markdown_table_dicts():
    rows = [{"model": "yolov8n", "mAP": 0.37251, "params": 3_200_000},
            {"model": "a|b", "mAP": np.float32(0.5), "fps": 120.0}]
    table = runlog.markdown_table(rows).splitlines()
    assert table[0].split("|")[1:-1] == [" model   ", " mAP   ", " params  ", " fps     "]
    assert table[1] == "| ------- | ----: | ------: | ------: |"
    assert "0.373" in table[2] and "3200000" in table[2]
    assert table[3].startswith("| a\\|b ") and "0.500" in table[3] and "120.000" in table[3]
    assert len({len(line) for line in table}) == 1  # padded: raw text lines up


def test_markdown_table_lists_and_headers():
    out = runlog.markdown_table([["a", 1.23456], ["b", None]], headers=["k", "v"], floatfmt=".1f")
    assert out.splitlines()[2:] == ["| a   | 1.2 |", "| b   |     |"]
    with pytest.raises(ValueError, match="headers"):
        runlog.markdown_table([["a", 1]])
    sel = runlog.markdown_table([{"a": 1, "b": 2}], headers=["b"])
    assert "a" not in sel and "2" in sel


def test_write_summary(tmp_path):
    path = runlog.write_summary(tmp_path / "s" / "summary.md", {
        "Results": [{"split": "val", "mAP": 0.5}],
        "Speed": (["batch", "ms"], [[1, 2.0]]),
        "Notes": "trained on synthetic shapes\n",
    }, title="run-1")
    text = path.read_text()
    assert text.startswith("# run-1\n")
    assert "## Results\n\n| split | mAP   |" in text and "| val   | 0.500 |" in text
    assert "| batch | ms    |" in text and "## Notes\n\ntrained on synthetic shapes\n" in text
    assert text.index("## Results") < text.index("## Speed") < text.index("## Notes")


def test_resume_trims_jsonl_and_purges_tensorboard(tmp_path):
    """A run killed after its step-5 checkpoint logged steps up to 7; the resumed run (from step 5) must
    leave each step once in train.jsonl and in TensorBoard."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from yolo_common.runlog import RunLogger

    first = RunLogger(tmp_path, {"a": 1}, rank=0, curves_on_close=False)
    for step in range(8):
        first.log_train(step, 0, loss=float(step))
    first.log_eval(4, 1, AP=0.1)
    first.log_eval(7, 1, AP=0.9)  # after the checkpoint: must go
    first.close()
    with open(first.train_log_path, "a") as f:
        f.write('{"step": 8, "los')  # a line torn by the kill
    second = RunLogger(tmp_path, {"a": 1}, rank=0, curves_on_close=False, resume_step=5)
    assert second.trimmed == {"train": 4, "eval": 1}
    for step in range(5, 10):
        second.log_train(step, 1, loss=100.0 + step)
    second.close()
    steps = [json.loads(x)["step"] for x in second.train_log_path.read_text().splitlines()]
    assert steps == list(range(10))
    assert [json.loads(x)["step"] for x in second.eval_log_path.read_text().splitlines()] == [4]
    ev = EventAccumulator(str(tmp_path / "tb")).Reload()
    events = ev.Scalars("train/loss")
    assert [e.step for e in events] == list(range(10))
    assert [e.value for e in events][5:] == [105.0, 106.0, 107.0, 108.0, 109.0]


def test_record_logs_hold_nested_fields_and_are_trimmed_on_resume(tmp_path):
    """log_record writes any structured record to logs/<name>.jsonl (non-finite floats -> null, like the
    scalars); a resume trims it with the train/eval logs, torn last line included; ranks > 0 write nothing."""
    import json

    import pytest

    from yolo_common.runlog import RunLogger

    first = RunLogger(tmp_path, rank=0, curves_on_close=False)
    for step in (2, 4, 6):
        first.log_record("layer_errors", step, 0, errors={"a.b": 0.5, "c": float("nan")})
    first.close()
    path = tmp_path / "logs" / "layer_errors.jsonl"
    assert json.loads(path.read_text().splitlines()[0])["errors"] == {"a.b": 0.5, "c": None}
    with open(path, "a") as f:
        f.write('{"step": 8, "err')
    second = RunLogger(tmp_path, rank=0, curves_on_close=False, resume_step=5)
    assert second.trimmed["layer_errors"] == 2
    second.log_record("layer_errors", 6, 1, errors={})
    second.close()
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [2, 4, 6]
    assert RunLogger(tmp_path / "r1", rank=1).log_record("layer_errors", 1) is None
    assert not (tmp_path / "r1").exists()
    with pytest.raises(ValueError, match="record log name"):
        second.log_record("train", 1)
