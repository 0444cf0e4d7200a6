"""QAT checkpoints: save -> reload gives the same quantized model; resume continues epoch, optimizer and EMA."""

from __future__ import annotations

import shutil

import pytest
import torch

from yolov10_qat.config import smoke_config
from yolov10_qat.data import prepare_data
from yolov10_qat.quant import quantized_layers
from yolov10_qat.trainer import QAT_KEY, build_trainer, load_qat_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A 2-epoch QAT run stopped after its first epoch; the checkpoint it wrote then is kept aside (the copy
    ultralytics leaves at the end has its optimizer stripped, like any finished run)."""
    root = tmp_path_factory.mktemp("resume")
    cfg = smoke_config(epochs=2, synthetic_train=8, synthetic_val=4, batch=4).resolve()
    rd = prepare_data(cfg, root)
    trainer = build_trainer("qat", cfg, rd.dataset_yaml, root / "qat-w4a16")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    seen = {}

    def on_model_save(tr):
        if tr.epoch == 0:
            shutil.copy(tr.last, root / "interrupted.pt")
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


def test_checkpoint_reloads_into_the_same_quantized_model(interrupted):
    model, ckpt = load_qat_checkpoint(interrupted["ckpt"])
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None
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
    trainer = build_trainer("qat", interrupted["cfg"], interrupted["rd"].dataset_yaml, tmp_path, resume=last)
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
