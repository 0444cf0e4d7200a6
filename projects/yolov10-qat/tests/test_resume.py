"""QAT checkpoints: save -> reload gives the same quantized model; resume continues epoch, optimizer and EMA."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from yolov10_qat.config import DEFAULT_HYP, smoke_config
from yolov10_qat.data import prepare_data
from yolov10_qat.quant import quantized_layers
from yolov10_qat import safe_ckpt
from yolov10_qat.trainer import QAT_KEY, build_trainer, load_qat_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A 2-epoch QAT run stopped after its first epoch; the checkpoint it wrote then is kept aside (the copy
    ultralytics leaves at the end has its optimizer stripped, like any finished run)."""
    root = tmp_path_factory.mktemp("resume")
    cfg = smoke_config(epochs=2, synthetic_train=8, synthetic_val=4, batch=4, hyp=str(DEFAULT_HYP)).resolve()
    rd = prepare_data(cfg, root)
    trainer = build_trainer("qat", cfg, rd.dataset_yaml, root / "qat-w4a16")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = {}

    def on_model_save(tr):
        if tr.epoch == 0:
            shutil.copy(tr.last, root / "interrupted.pt")
            shutil.copy(safe_ckpt.safe_path(tr.last), root / "interrupted.safe.pt")
            ema = tr.ema.ema
            was_training = ema.training
            with torch.no_grad():
                seen["ema_out"] = ema.eval()(x)[0].clone()
            ema.train(was_training)
            seen["updates"] = tr.ema.updates
            seen["layers"] = quantized_layers(ema)
            tr.stop = True  # "interrupt": leave the loop after this epoch

    trainer.add_callback("on_model_save", on_model_save)
    trainer.train()
    return {"root": root, "cfg": cfg, "rd": rd, "ckpt": root / "interrupted.pt", "x": x, **seen}


def test_checkpoint_reloads_into_the_same_quantized_model(interrupted, monkeypatch):
    # from the plain-data twin (weights_only=True): no pickle may be opened
    monkeypatch.setattr(safe_ckpt, "load_pickle", lambda *a, **k: pytest.fail("unpickled a checkpoint"))
    model, ckpt = load_qat_checkpoint(interrupted["ckpt"])
    assert ckpt["epoch"] == 0
    assert quantized_layers(model) == interrupted["layers"] == ckpt[QAT_KEY]["layers"]
    with torch.no_grad():
        out = model(interrupted["x"])[0]
    assert torch.equal(out, interrupted["ema_out"])  # fp32 copy: bit-identical to the in-memory EMA
    # the pickled module itself is the stripped float model (what ultralytics' own loaders open)
    raw = torch.load(interrupted["ckpt"], map_location="cpu", weights_only=False)
    assert not any("Quant" in type(m).__name__ for m in raw["ema"].modules())
    assert raw["ema"].model[0].conv.weight.dtype == torch.float16


def test_resume_continues_epoch_optimizer_and_ema(interrupted, tmp_path):
    saved = torch.load(interrupted["ckpt"], map_location="cpu", weights_only=False)
    (tmp_path / "weights").mkdir()
    last = tmp_path / "weights" / "last.pt"
    shutil.copy(interrupted["ckpt"], last)
    stale = tmp_path / "weights" / ".last.pt.0123456789ab.tmp"   # what a kill mid-write leaves
    stale.write_bytes(b"x" * 1000)
    # a copied-in .pt is not this run's own file: ultralytics' resume would unpickle it, so it is refused ...
    with pytest.raises(safe_ckpt.UntrustedCheckpoint, match="--trust-checkpoint"):
        build_trainer("qat", interrupted["cfg"], interrupted["rd"].dataset_yaml, tmp_path, resume=last)
    # ... unless trusted explicitly (which warns)
    with pytest.warns(RuntimeWarning, match="trust-checkpoint"):
        trainer = build_trainer("qat", interrupted["cfg"], interrupted["rd"].dataset_yaml, tmp_path,
                                resume=last, trust=True)
    # the killed run had logged epoch 1 (steps 3-4, 2 batches per epoch) past its epoch-0 checkpoint
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "train.jsonl").write_text("".join(
        json.dumps({"step": k, "epoch": k / 2, "time": 0, "loss/total": 99.0}) + "\n" for k in (1, 2, 3, 4)))
    at_start = {}

    def on_train_start(tr):
        at_start["start_epoch"] = tr.start_epoch
        at_start["updates"] = tr.ema.updates
        at_start["opt"] = {k: {n: v.clone() for n, v in s.items() if torch.is_tensor(v)}
                           for k, s in tr.optimizer.state_dict()["state"].items()}
        at_start["ema"] = {k: v.clone() for k, v in tr.ema.ema.state_dict().items()}
        at_start["layers"] = quantized_layers(tr.model)

    trainer.add_callback("on_train_start", on_train_start)
    trainer.train()
    assert at_start["start_epoch"] == 1  # epoch 0 done, continue with epoch 1 of 2
    assert at_start["updates"] == interrupted["updates"] == saved["updates"]
    assert at_start["layers"] == interrupted["layers"]
    # optimizer state (SGD momentum buffers) came back from the checkpoint (stored in fp16 by ultralytics)
    saved_state = saved["optimizer"]["state"]
    assert at_start["opt"].keys() == saved_state.keys() and len(saved_state) > 100
    for k, s in saved_state.items():
        torch.testing.assert_close(at_start["opt"][k]["momentum_buffer"], s["momentum_buffer"].float())
    # the EMA restarts from the fp32 copy, not the fp16 pickle
    for k, v in saved[QAT_KEY]["ema_fp32"].items():
        assert torch.equal(at_start["ema"][k], v), k
    assert trainer.epoch == 1  # and it trained that last epoch
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines[-1].split(",")[0].strip() == "2"
    steps = [json.loads(x)["step"] for x in (tmp_path / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]                      # 3, 4 of the killed run trimmed, then logged again
    losses = [json.loads(x)["loss/total"] for x in (tmp_path / "logs" / "train.jsonl").read_text().splitlines()]
    assert losses[:2] == [99.0, 99.0] and 99.0 not in losses[2:]
    assert not stale.exists()
    # the resumed run's own checkpoints are recorded: a second resume needs no trust
    assert safe_ckpt.recorded(tmp_path / "weights" / "last.pt")["finished"] is True
