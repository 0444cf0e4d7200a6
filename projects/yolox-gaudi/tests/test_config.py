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
