"""Backbone extraction round trip through what accelerate's save_state really writes."""

from __future__ import annotations

import json

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
    # a save killed before meta.json: not a checkpoint (resume would read no epoch and start over) ...
    partial = run / "checkpoints" / "epoch_0003"
    partial.mkdir()
    (partial / MODEL_FILE).write_bytes((dirs[-1] / MODEL_FILE).read_bytes()[:100])
    assert resolve_checkpoint(run) == dirs[-1] and partial not in checkpoint_dirs(run)
    # ... and the next save removes it (each leftover is a whole model)
    save_checkpoint(acc, run, 4, {"step": 40, "config": {"width": 0.125, "batch_norm": False},
                                  "classes": classes}, keep=2)
    assert not partial.exists() and [d.name for d in checkpoint_dirs(run)] == ["epoch_0002", "epoch_0004"]


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


@pytest.mark.slow
def test_pretrain_resume_continues_the_run(tmp_path):
    from yolov1 import pretrain_train
    from yolov1.imagenet100 import write_tiny_imagenet

    data = write_tiny_imagenet(tmp_path / "in100", ["n00000002", "n00000001"], images_per_class=4, size=40)
    common = [f"data_root={data}", f"output_dir={tmp_path}", "image_size=32", "width=0.125", "batch_size=4",
              "num_workers=0", "verify_images=false", "log_every=1", "lr_milestones=5"]
    first = pretrain_train.main([*common, "run_name=a", "epochs=1"])
    step0 = read_meta(first["run_dir"] / "checkpoints" / "epoch_0000")["step"]
    assert step0 == 2  # 8 images, batch 4
    second = pretrain_train.main([*common, "run_name=b", "epochs=2", f"resume_from={first['run_dir']}"])
    dirs = checkpoint_dirs(second["run_dir"])
    assert [d.name for d in dirs] == ["epoch_0001"]  # epoch 0 came from the checkpoint; only epoch 1 ran
    assert read_meta(dirs[-1])["step"] == 2 * step0 and "top1" in second["metrics"]
    # resumed in its own folder after a kill that had logged steps 3-4 past the epoch-0 checkpoint:
    # those records are trimmed, the resumed run logs them again, so each step appears once
    with open(first["run_dir"] / "logs" / "train.jsonl", "a") as f:
        f.write('{"step": 3, "epoch": 1.5, "time": 0}\n{"step": 4, "epoch": 2.0, "time": 0}\n{"st')
    import time

    from torch.utils.tensorboard import SummaryWriter

    # TensorBoard orders event files by the creation second in their names: the killed run's file must
    # sort after the first run's, and the resumed run's after it, as they would in real time
    time.sleep(1.1)
    with SummaryWriter(str(first["run_dir"] / "tb")) as w:   # the killed process's TensorBoard events
        for step in (3, 4):
            w.add_scalar("train/loss", 99.0, step)
    time.sleep(1.1)
    pretrain_train.main([*common, "run_name=a", "epochs=2", f"resume_from={first['run_dir']}"])
    steps = [json.loads(x)["step"] for x in (first["run_dir"] / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(first["run_dir"] / "tb")).Reload()
    loss = tb.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3, 4] and 99.0 not in [e.value for e in loss]
    # a Labels.json in another order would silently permute the labels: refused
    labels = data / "Labels.json"
    labels.write_text(json.dumps(dict(reversed(list(json.loads(labels.read_text()).items())))))
    with pytest.raises(ValueError, match="another class order"):
        pretrain_train.main([*common, "run_name=c", "epochs=2", f"resume_from={first['run_dir']}"])
