"""`key value` overrides are parsed against each default's type."""

import pytest

from yolox_gaudi.config import Exp, YoloxNano, get_exp


def test_booleans_really_parse():
    exp = get_exp("yolox-s").merge(["save_history_ckpt", "False", "ema", "0", "enable_mixup", "yes"])
    assert exp.save_history_ckpt is False and exp.ema is False and exp.enable_mixup is True


def test_types_tuples_and_none():
    exp = get_exp("yolox_nano").merge(["max_epoch", "300", "min_lr_ratio", "1", "input_size", "320,320",
                                       "mosaic_scale", "(0.5, 1.5)", "random_size", "None", "output_dir", "x"])
    assert exp.max_epoch == 300 and isinstance(exp.max_epoch, int)
    assert exp.min_lr_ratio == 1.0 and isinstance(exp.min_lr_ratio, float)
    assert exp.input_size == (320, 320) and exp.mosaic_scale == (0.5, 1.5)
    assert exp.random_size is None and exp.output_dir == "x"
    assert get_exp("yolox-nano").merge(["random_size", "8,12"]).random_size == (8, 12)


@pytest.mark.parametrize("opts, match", [
    (["max_epohc", "3"], "unknown config key 'max_epohc'.*max_epoch"),
    (["save_history_ckpt", "Flase"], "save_history_ckpt.*boolean"),
    (["max_epoch", "2.5"], "max_epoch.*integer"),
    (["input_size", "640"], "input_size.*2 values"),
    (["max_epoch"], "pairs"),
])
def test_bad_overrides_are_clear(opts, match):
    with pytest.raises(ValueError, match=match):
        get_exp("yolox-s").merge(opts)


def test_model_defaults_follow_megvii():
    s, nano = get_exp("yolox-s"), get_exp("yolox-nano")
    assert (s.depth, s.width, s.input_size, s.multiscale_range, s.no_aug_epochs) == (0.33, 0.5, (640, 640), 5, 15)
    assert (s.max_epoch, s.warmup_epochs, s.basic_lr_per_img, s.ema_decay) == (300, 5, 0.01 / 64, 0.9998)
    assert isinstance(nano, YoloxNano) and isinstance(nano, Exp)
    assert nano.depthwise and nano.input_size == (416, 416) and not nano.enable_mixup and nano.mosaic_prob == 0.5
    with pytest.raises(ValueError, match="unknown model"):
        get_exp("yolox-xl")


DATACLASS_EXP = '''
from dataclasses import dataclass
from yolox_gaudi.config import YoloxNano

@dataclass
class Exp(YoloxNano):
    num_classes: int = 3
    max_epoch: int = 7
    act: str = "relu"
'''

MEGVII_STYLE_EXP = '''
from yolox_gaudi.config import YoloxNano as MyExp

class Exp(MyExp):
    def __init__(self):
        super().__init__()
        self.num_classes = 3
        self.max_epoch = 7
        self.act = "relu"
'''


PLAIN_CLASS_EXP = '''
from yolox_gaudi.config import YoloxNano

class Exp(YoloxNano):          # no @dataclass: class attributes still count
    num_classes = 3
    max_epoch: int = 7
    act = "relu"
'''


@pytest.mark.parametrize("text", [DATACLASS_EXP, MEGVII_STYLE_EXP, PLAIN_CLASS_EXP])
def test_experiment_files_in_both_styles(tmp_path, text):
    from yolox_gaudi.config import load_exp_file

    f = tmp_path / "my_exp.py"
    f.write_text(text)
    exp = load_exp_file(f).merge(["warmup_epochs", "1"])
    assert (exp.num_classes, exp.max_epoch, exp.act, exp.warmup_epochs, exp.depthwise) == (3, 7, "relu", 1, True)


@pytest.mark.parametrize("text,match", [
    ("x = 1\n", "must define `class Exp`"),
    ("from yolox_gaudi.config import YoloxS\nclass Exp(YoloxS):\n    def get_model(self):\n        pass\n",
     "never calls"),
    ("import not_an_installed_module\n", "ModuleNotFoundError"),
    ("from yolox_gaudi.config import YoloxS\nclass Exp(YoloxS):\n    act: str = 'gelu'\n", "act"),
])
def test_bad_experiment_files_are_clear(tmp_path, text, match):
    from yolox_gaudi.config import load_exp_file

    f = tmp_path / "bad_exp.py"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_exp_file(f)


@pytest.mark.parametrize("act,cls", [("silu", "SiLU"), ("relu", "ReLU"), ("lrelu", "LeakyReLU")])
def test_act_reaches_every_conv(act, cls):
    import torch

    from yolox_gaudi.model import build_model

    model = build_model(get_exp("yolox-nano").merge(["num_classes", "3", "act", act]))
    acts = {type(m).__name__ for m in model.modules() if isinstance(m, (torch.nn.SiLU, torch.nn.ReLU,
                                                                         torch.nn.LeakyReLU))}
    assert acts == {cls}
    if act == "lrelu":
        assert all(m.negative_slope == 0.1 for m in model.modules() if isinstance(m, torch.nn.LeakyReLU))
    out = model.eval()(torch.rand(1, 3, 64, 64) * 255)
    assert out.shape == (1, 84, 8) and torch.isfinite(out).all()


@pytest.mark.slow
def test_cli_trains_from_an_experiment_file(tmp_path, train):
    f = tmp_path / "my_exp.py"
    f.write_text(DATACLASS_EXP)
    import json

    root = train(tmp_path, ["--batch-size", "8", "-f", str(f)], ["max_epoch", "1"], name="my_exp")
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["exp"]["act"] == "relu" and cfg["exp"]["max_epoch"] == 1


def test_experiment_file_setting_unknown_attributes_is_refused(tmp_path):
    from yolox_gaudi.config import load_exp_file

    f = tmp_path / "megvii_custom.py"
    f.write_text("from yolox_gaudi.config import YoloxS as MyExp\n\nclass Exp(MyExp):\n    def __init__(self):\n"
                 "        super().__init__()\n        self.data_dir = 'datasets/coco128'\n        self.num_clases = 71\n")
    with pytest.raises(ValueError, match=r"\['data_dir', 'num_clases'\].*for data_dir use --data_dir"):
        load_exp_file(f)


def test_checkpoint_exp_sets_the_network_fields():
    from yolox_gaudi.config import apply_checkpoint_exp

    exp = get_exp("yolox-s")
    ck = {"exp": {**get_exp("yolox-nano").merge(["act", "relu", "num_classes", "3"]).__dict__,
                  "test_size": [96, 128]}}
    changed = apply_checkpoint_exp(exp, ck, extra=("test_size",))
    assert set(changed) == {"num_classes", "width", "depthwise", "act", "test_size"}    # depth: 0.33 in both
    assert (exp.act, exp.num_classes, exp.depthwise, exp.test_size) == ("relu", 3, True, (96, 128))
    assert apply_checkpoint_exp(get_exp("yolox-s"), {"model": {}}) == []      # a Megvii .pth: nothing
