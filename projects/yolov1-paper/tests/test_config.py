"""Config overrides and the LR schedule."""

from __future__ import annotations

import pytest

from yolov1.detection_config import DetectionConfig
from yolov1.overrides import apply_overrides, parse_bool
from yolov1.pretrain_config import PretrainConfig
from yolov1.scheduler import StepSchedule, paper_schedule


def test_defaults_are_the_papers():
    c = DetectionConfig()
    assert (c.S, c.B, c.image_size, c.width, c.hidden, c.dropout, c.batch_norm) == (7, 2, 448, 1.0, 4096, 0.5, False)
    assert (c.lambda_coord, c.lambda_noobj, c.rescore) == (5.0, 0.5, True)
    assert (c.epochs, c.lr, c.warmup_start, c.lr_milestones, c.momentum, c.weight_decay, c.batch_size) == (
        135, 1e-2, 1e-3, (75.0, 105.0), 0.9, 5e-4, 64)
    assert (c.aug_scale, c.aug_translate, c.aug_saturation, c.aug_exposure) == (0.2, 0.2, 1.5, 1.5)
    assert c.train_split == "2007:trainval,2012:trainval" and c.val_split == "2007:test"
    assert PretrainConfig().image_size == 224


def test_overrides_typed():
    base = DetectionConfig()
    c = apply_overrides(base, ["epochs=3", "--batch_norm=false", "hflip=yes", "lr_milestones=2,2.5",
                               "class_names=a,b", "lr=0.001", "backbone=x.safetensors"])
    assert c.epochs == 3 and c.batch_norm is False and c.hflip is True and c.lr == 0.001
    assert c.lr_milestones == (2.0, 2.5) and c.class_names == ("a", "b") and c.backbone == "x.safetensors"
    assert base.epochs == 135  # the original is untouched
    with pytest.raises(ValueError, match="unknown config key 'epoch'.*epochs"):
        apply_overrides(base, ["epoch=3"])
    with pytest.raises(ValueError, match="boolean"):
        apply_overrides(base, ["hflip=maybe"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(base, ["epochs"])
    with pytest.raises(ValueError, match="mixed_precision"):
        apply_overrides(base, ["mixed_precision=fp8"])
    assert parse_bool("OFF") is False


def test_paper_schedule():
    s = paper_schedule(135)
    assert s.lr_at(0) == pytest.approx(1e-3) and s.lr_at(0.5) == pytest.approx(5.5e-3)
    assert s.lr_at(1) == s.lr_at(74.9) == pytest.approx(1e-2)
    assert s.lr_at(75) == pytest.approx(1e-3) and s.lr_at(104.9) == pytest.approx(1e-3)
    assert s.lr_at(105) == pytest.approx(1e-4) and s.lr_at(134.9) == pytest.approx(1e-4)
    lrs = [s.lr_at(e / 10) for e in range(11)]
    assert lrs == sorted(lrs)  # warm-up rises monotonically, per iteration
    with pytest.raises(ValueError, match="increasing"):
        StepSchedule(milestones=(5.0, 2.0))


def test_schedule_sets_optimizer_lr():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5.0)
    assert StepSchedule().apply(opt, 100.0) == pytest.approx(1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_override_files(tmp_path):
    f = tmp_path / "x.args"
    f.write_text("# a comment\ntrain_split=2012:train   # trailing comment\n\nepochs=7\n")
    c = apply_overrides(DetectionConfig(), [f"@{f}", "epochs=9"])
    assert c.train_split == "2012:train" and c.epochs == 9  # later items win
    with pytest.raises(FileNotFoundError, match="nope.args"):
        apply_overrides(DetectionConfig(), ["@nope.args"])


def test_shipped_config_files_parse():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(configs.glob("*.args"))
    assert files
    for f in files:
        # rtx5090.args is shared by both pixi tasks, so it must parse for both configs
        targets = [PretrainConfig(), DetectionConfig()] if f.name == "rtx5090.args" else [
            PretrainConfig() if f.name.startswith("pretrain") else DetectionConfig()]
        for target in targets:
            apply_overrides(target, [f"@{f}"])
    # the exact combinations the yolov1-pretrain / yolov1-detect tasks pass
    gpu = f"@{configs / 'rtx5090.args'}"
    pre = apply_overrides(PretrainConfig(), [f"@{configs / 'pretrain_imagenet100.args'}", gpu])
    det = apply_overrides(DetectionConfig(), [f"@{configs / 'detect_voc0712.args'}", gpu])
    assert pre.mixed_precision == det.mixed_precision == "bf16" and pre.num_workers == det.num_workers == 12
    assert det.train_split == "2007:trainval,2012:trainval" and det.val_split == "2007:test"
