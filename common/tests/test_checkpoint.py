import json
import pickle

import pytest
import torch

from yolo_common import checkpoint as C


class Custom:
    def __init__(self):
        self.x = 1


def _temps(directory):
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_save_load_roundtrip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "lr": 0.01,
             "names": ["a", "b"], "opt": (1, None, True)}
    path = C.save_checkpoint(state, tmp_path / "sub" / "last.pt")
    assert path == tmp_path / "sub" / "last.pt" and path.is_file()
    loaded = C.load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert loaded["epoch"] == 3 and loaded["lr"] == 0.01 and loaded["names"] == ["a", "b"]
    assert _temps(path.parent) == []


def test_load_missing_names_path(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        C.load_checkpoint(missing)


def test_weights_only_refuses_custom_objects(tmp_path):
    path = C.save_checkpoint({"obj": Custom()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        C.load_checkpoint(path)
    # Explicit opt-out still works for trusted files.
    assert C.load_checkpoint(path, weights_only=False)["obj"].x == 1


def test_crash_mid_save_keeps_previous(tmp_path, monkeypatch):
    path = C.save_checkpoint({"v": torch.tensor([1.0])}, tmp_path / "last.pt")
    before = path.read_bytes()

    def torn_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip file")  # partial bytes hit the temp file...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(C.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        C.save_checkpoint({"v": torch.tensor([2.0])}, path)
    assert path.read_bytes() == before
    assert torch.equal(C.load_checkpoint(path)["v"], torch.tensor([1.0]))
    assert _temps(tmp_path) == []


def test_keyboard_interrupt_mid_save_leaves_no_temp(tmp_path, monkeypatch):
    def interrupted(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(C.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint({}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_manager_tracks_best_higher(tmp_path):
    m = C.CheckpointManager(tmp_path / "ckpt")
    assert m.load() is None
    assert m.save({"e": 0}, epoch=0, metric=0.3) is True
    assert m.save({"e": 1}, epoch=1, metric=0.5) is True
    assert m.save({"e": 2}, epoch=2, metric=0.4) is False
    assert m.save({"e": 3}, epoch=3) is False  # no eval this epoch
    assert m.save({"e": 4}, epoch=4, metric=float("nan")) is False
    assert C.load_checkpoint(m.last_path)["e"] == 4
    assert m.load("best")["e"] == 1
    assert (m.best_metric, m.best_epoch) == (0.5, 1)
    assert _temps(m.directory) == []


def test_manager_lower_is_better_and_tensor_metric(tmp_path):
    m = C.CheckpointManager(tmp_path, higher_is_better=False)
    m.save({"e": 0}, epoch=0, metric=torch.tensor(2.0))
    assert m.save({"e": 1}, epoch=1, metric=3.0) is False
    assert m.save({"e": 2}, epoch=2, metric=1.0) is True
    assert m.load("best")["e"] == 2


def test_manager_resume_keeps_best(tmp_path):
    m = C.CheckpointManager(tmp_path)
    m.save({"e": 0}, epoch=0, metric=0.7)
    m.save({"e": 1}, epoch=1, metric=0.2)
    meta = json.loads((tmp_path / "checkpoints.json").read_text())
    assert meta["best_metric"] == 0.7 and meta["best_epoch"] == 0 and meta["last_epoch"] == 1

    resumed = C.CheckpointManager(tmp_path)
    assert (resumed.best_metric, resumed.best_epoch, resumed.last_epoch) == (0.7, 0, 1)
    assert resumed.save({"e": 2}, epoch=2, metric=0.6) is False  # would win without the memory
    assert resumed.load("best")["e"] == 0
    assert resumed.save({"e": 3}, epoch=3, metric=0.9) is True
    assert resumed.load("best")["e"] == 3


def test_best_survives_next_last(tmp_path):
    # best.pt may share last.pt's inode (hard link); the next save must not change it.
    m = C.CheckpointManager(tmp_path)
    m.save({"w": torch.ones(3)}, epoch=0, metric=1.0)
    m.save({"w": torch.zeros(3)}, epoch=1, metric=0.0)
    assert torch.equal(m.load("best")["w"], torch.ones(3))
    assert torch.equal(m.load("last")["w"], torch.zeros(3))


def test_keep_history(tmp_path):
    m = C.CheckpointManager(tmp_path, keep_history=2)
    for e in range(5):
        m.save({"e": e}, epoch=e)
    names = sorted(p.name for p in tmp_path.glob("epoch_*.pt"))
    assert names == ["epoch_3.pt", "epoch_4.pt"]
    assert m.load(3)["e"] == 3

    keep_all = C.CheckpointManager(tmp_path / "all", keep_history=-1)
    for e in range(3):
        keep_all.save({"e": e}, epoch=e)
    assert len(list((tmp_path / "all").glob("epoch_*.pt"))) == 3
    keep_all.save({"e": "mid-epoch 2"}, epoch=2, history=False)   # a `steps N` stop inside epoch 3
    assert keep_all.load(2)["e"] == 2 and keep_all.load("last")["e"] == "mid-epoch 2"

    off = C.CheckpointManager(tmp_path / "off")
    off.save({}, epoch=0)
    assert list((tmp_path / "off").glob("epoch_*.pt")) == []


def test_atomic_write_bytes_and_json(tmp_path):
    import json

    import numpy as np

    from yolo_common.checkpoint import atomic_write_bytes, atomic_write_json

    p = atomic_write_bytes(tmp_path / "a" / "x.bin", b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01" and list(p.parent.iterdir()) == [p]
    j = atomic_write_json(tmp_path / "m.json", {"ap": np.float32(0.5), "n": np.int64(3)})
    assert json.loads(j.read_text()) == {"ap": 0.5, "n": 3}
    assert not list(tmp_path.glob(".*.tmp"))


def test_killed_write_leaves_old_file_and_a_temp_that_the_manager_sweeps(tmp_path, monkeypatch):
    from yolo_common import checkpoint as ck

    target = tmp_path / "ckpt" / "last.pt"
    ck.save_checkpoint({"v": 1}, target)

    # simulate a kill after the temp file is written but before the rename (no cleanup runs on SIGKILL)
    def killed(src, dst):  # the process dies between the fsync and the rename
        raise SystemExit("killed")

    monkeypatch.setattr(ck.os, "replace", killed)
    monkeypatch.setattr(ck.os, "unlink", lambda p: None)  # SIGKILL: no except-branch cleanup either
    try:
        ck.save_checkpoint({"v": 2}, target)
    except SystemExit:
        pass
    monkeypatch.undo()
    temps = list(target.parent.glob(".last.pt.*.tmp"))
    assert len(temps) == 1 and ck.load_checkpoint(target)["v"] == 1
    (target.parent / "notes.tmp").write_text("not ours")  # other .tmp files are left alone
    mgr = ck.CheckpointManager(target.parent)
    assert mgr.swept == temps and not temps[0].exists() and (target.parent / "notes.tmp").exists()
