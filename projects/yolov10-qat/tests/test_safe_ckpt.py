"""Checkpoint loading never unpickles a file this package did not write, unless told to (issue: security)."""

from __future__ import annotations

import pickle

import pytest
import torch

from yolov10_qat import safe_ckpt
from yolov10_qat.trainer import load_float_checkpoint, load_qat_checkpoint


class _Payload:
    """Unpickling this runs code (writes a marker file), as a malicious downloaded .pt would."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights" / "best.pt"
    path.parent.mkdir()
    torch.save({"ema": _Payload(marker), "epoch": 3}, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    return path, marker


@pytest.mark.parametrize("loader", [load_float_checkpoint, load_qat_checkpoint])
def test_foreign_pickle_is_refused_and_not_executed(evil, loader):
    path, marker = evil
    with pytest.raises(safe_ckpt.UntrustedCheckpoint, match=r"best\.pt.*--trust-checkpoint"):
        loader(path)
    assert not marker.exists()


def test_trust_flag_warns_and_unpickles(evil):
    path, marker = evil
    with pytest.warns(RuntimeWarning, match="trust-checkpoint"):
        with pytest.raises(Exception):   # the payload is not a model; what matters is that it ran
            load_float_checkpoint(path, trust=True)
    assert marker.exists()


def test_recorded_file_is_trusted_until_its_bytes_change(tmp_path):
    pt = tmp_path / "last.pt"
    torch.save({"epoch": 1}, pt)
    assert safe_ckpt.recorded(pt) is None
    safe_ckpt.record(pt)
    assert safe_ckpt.recorded(pt) == {"sha256": safe_ckpt.sha256(pt), "finished": False}
    safe_ckpt.check_pickle_allowed(pt, trust=False)          # our own file: allowed
    torch.save({"epoch": 2}, pt)                             # replaced behind our back
    with pytest.raises(safe_ckpt.UntrustedCheckpoint):
        safe_ckpt.check_pickle_allowed(pt, trust=False)
    (tmp_path / safe_ckpt.CHECKSUMS).write_text("{not json")  # a damaged record trusts nothing
    assert safe_ckpt.recorded(pt) is None


def test_safe_twin_round_trip_is_weights_only(tmp_path, float_model):
    """The twin holds plain data only: torch.load(weights_only=True) reads it and the rebuilt model
    equals the original bit for bit."""
    pt = tmp_path / "best.pt"
    state = safe_ckpt.safe_state_of(float_model, kind="fp16", epoch=4, train_args={"imgsz": 64, "p": tmp_path},
                                    qat=None)
    safe_ckpt.write_safe(pt, state)
    raw = torch.load(safe_ckpt.safe_path(pt), weights_only=True)
    assert raw["format"] == safe_ckpt.SAFE_FORMAT and raw["train_args"]["p"] == str(tmp_path)
    model, ckpt = load_float_checkpoint(pt)   # no best.pt exists at all: nothing to unpickle
    assert ckpt["epoch"] == 4
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = model(x), float_model.eval()(x)
    float_model.train()
    out, ref = (out[0], ref[0]) if isinstance(out, (tuple, list)) else (out, ref)
    assert out.numel() > 0 and torch.equal(out, ref)
    with pytest.raises(ValueError, match="not a yolov10-qat QAT checkpoint"):
        load_qat_checkpoint(pt)
