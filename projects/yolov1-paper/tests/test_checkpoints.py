"""Backbone extraction round trip through what accelerate's save_state really writes."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from yolov1.checkpoints import (MODEL_FILE, checkpoint_dirs, extract_backbone, load_backbone, read_meta,
                                resolve_checkpoint, save_checkpoint, strip_wrappers)
from yolov1.engine import build_optimizer
from yolov1.extract_backbone import main as extract_main
from yolov1.model import build_classifier, build_detector


def test_save_extract_load_round_trip(tmp_path, fresh_accelerate):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = build_classifier(5, width=0.125)
    opt = build_optimizer(model, 0.01)
    model, opt = acc.prepare(model, opt)
    classes = {"wnids": ["n1", "n2", "n3", "n4", "n5"], "names": list("abcde")}
    run = tmp_path / "run"
    for epoch in range(3):
        save_checkpoint(acc, run, epoch, {"step": epoch * 10, "config": {"width": 0.125, "batch_norm": False},
                                          "classes": classes}, keep=2)
    dirs = checkpoint_dirs(run)
    assert [d.name for d in dirs] == ["epoch_0001", "epoch_0002"]  # pruned to the newest 2
    assert (dirs[-1] / MODEL_FILE).is_file()  # accelerate writes safetensors, not pytorch_model.bin
    assert read_meta(dirs[-1])["epoch"] == 2 and resolve_checkpoint(run) == dirs[-1]

    out = extract_main([str(run), str(tmp_path / "bb.safetensors")])  # the CLI, on the run folder
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["width"] == "0.125" and '"n1"' in meta["classes"] and meta["epoch"] == "2"
    src = acc.unwrap_model(model).backbone.state_dict()
    assert keys == set(src)

    det = build_detector(3, 2, 4, width=0.125, hidden=32)
    before_head = det.head[1].weight.clone()
    load_backbone(det, out, width=0.125, batch_norm=False)
    for k, v in det.backbone.state_dict().items():
        assert torch.equal(v, src[k].cpu()), k
    assert torch.equal(det.head[1].weight, before_head)  # only the backbone is touched

    with pytest.raises(ValueError, match="width"):
        load_backbone(build_detector(3, 2, 4, width=0.25, hidden=32), out, width=0.25)
    with pytest.raises(ValueError, match="does not fit"):
        load_backbone(build_detector(3, 2, 4, width=0.25, hidden=32), out)  # no metadata check: shapes catch it
    assert extract_backbone(dirs[0] / MODEL_FILE).name == "backbone.safetensors"  # the model file itself works too


def test_extract_errors(tmp_path):
    with pytest.raises(SystemExit):
        extract_main([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        resolve_checkpoint(tmp_path)
    from safetensors.torch import save_file

    (tmp_path / "c").mkdir()
    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "c" / MODEL_FILE))
    with pytest.raises(ValueError, match="backbone"):
        extract_backbone(tmp_path / "c")


def test_strip_wrappers():
    s = strip_wrappers({"_orig_mod.module.backbone.x": 1, "backbone.y": 2})
    assert s == {"backbone.x": 1, "backbone.y": 2}
