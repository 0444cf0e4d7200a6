"""Central config: merge order, --hypo parsing, typed values, unknown keys, the seed's hyp files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from yolov9001.core.config import ConfigError, YOLOConfig, all_keys, get_config, parse_hypo

HYPS = Path(__file__).resolve().parents[1] / "models" / "hyps"


def test_merge_order_hyp_dict_over_file_over_cfg_over_defaults(tmp_path):
    f = tmp_path / "h.yaml"
    f.write_text(yaml.safe_dump({"lr0": 0.03, "lrf": 0.2, "box": 5.0}))
    cfg = get_config({"hyp": {"lr0": 0.02, "lrf": 0.3, "cls": 0.9, "mosaic": 0.4}}, hyp={"lr0": 0.04},
                     hyp_path=f)
    assert cfg.lr0 == 0.04          # hyp dict beats all
    assert cfg.lrf == 0.2           # file beats cfg['hyp']
    assert cfg.cls == 0.9           # cfg['hyp'] beats defaults
    assert cfg.mosaic == 0.4
    assert cfg.dfl == YOLOConfig().dfl  # untouched default


def test_hypo_parsing_dotted_brackets_and_yaml(tmp_path):
    assert parse_hypo("dino.quant:fp16,assign_mode:simota,strides:[8,16,32]") == {
        "dino.quant": "fp16", "assign_mode": "simota", "strides": "[8,16,32]"}
    cfg = get_config(hyp=parse_hypo("dino.quant:fp16,strides:[8,16,32],mosaic:0.25,nesterov:false"))
    assert cfg["dino.quant"] == "fp16" and cfg.strides == (8, 16, 32) and cfg.mosaic == 0.25 and cfg.nesterov is False
    f = tmp_path / "o.yaml"
    f.write_text("dino:\n  every_n: 3\nmixup: 0.2\n")
    cfg = get_config(hyp=parse_hypo(str(f)))
    assert cfg.dino.every_n == 3 and cfg.mixup == 0.2


@pytest.mark.parametrize("hyp,needle", [
    ({"lr00": 1.0}, "closest known keys: lr0"),
    ({"dino.enabeld": True}, "dino.enabled"),
    ({"mosaic": "lots"}, "'mosaic'"),
    ({"epochs": 2.5}, "'epochs'"),
    ({"nesterov": "maybe"}, "'nesterov'"),
    ({"assign_mode": "hungarian"}, "tal, simota"),
    ({"optimizer": "Adam"}, "SGD, Lion"),
    ({"mosaic": 1.5}, "probability"),
    ({"imgsz": 100}, "multiple of 32"),
])
def test_bad_key_or_value_names_the_key(hyp, needle):
    with pytest.raises(ConfigError) as e:
        get_config(hyp=hyp)
    assert needle in str(e.value)


def test_hypo_entry_without_colon():
    with pytest.raises(ConfigError, match="not key:value"):
        parse_hypo("lr0=0.1")


def test_low_yaml_is_the_seed_verbatim():
    data = yaml.safe_load((HYPS / "low.yaml").read_text())
    assert data["optimizer"]["SGD"]["lrf"] == 0.02 and data["assign_radius"] == 1.4 and data["dino"]["enabled"]
    seed = get_config(hyp_path=HYPS / "low.yaml")
    d = seed.dino
    assert d.enabled and d.objfor02 and d.reg_weight_with_saliency and d.centroid_align and d.max_epochs == 12
    assert (d.reg_weight_floor, d.reg_weight_power, d.centroid_weight, d.centroid_max_epochs) == (0.2, 2.0, 0.1, 6)
    with pytest.raises(ConfigError, match="multiple of 16"):
        get_config(hyp_path=HYPS / "low.yaml", hyp={"dino.resolution": 500})
    cfg = get_config(hyp_path=HYPS / "low.yaml", hyp={"dino.enabled": "false"})
    # the optimizer block and decoupled LR normalise to flat keys
    assert (cfg.optimizer, cfg.lr0, cfg.lrf, cfg.warmup_bias_lr, cfg.backbone_lr_scale) == ("SGD", 0.01, 0.02, 0.1, 1.0)
    assert (cfg.assign_mode, cfg.assign_radius, cfg.assign_lambda_iou, cfg.hsv_s, cfg.mosaic) == (
        "simota", 1.4, 3.5, 0.4, 0.9)
    assert cfg.dino.resolution == 512 and cfg.dino.quant == "fp16"


def test_high_yaml_loads_and_is_heavier_than_low():
    high = get_config(hyp_path=HYPS / "high.yaml")
    low = get_config(hyp_path=HYPS / "low.yaml", hyp={"dino.enabled": False})
    assert high.mosaic > low.mosaic and high.hsv_s > low.hsv_s and high.mixup > low.mixup


def test_every_yaml_key_is_known():
    """No key of the shipped hyp files is silently ignored."""
    from yolov9001.core.config import flatten_hyp

    known = set(all_keys())
    for f in HYPS.glob("*.yaml"):
        for key in flatten_hyp(yaml.safe_load(f.read_text())):
            assert key in known, f"{f.name}: {key}"


def test_lion_block_and_bad_optimizer_block():
    cfg = get_config(hyp={"optimizer": {"Lion": {"lr0": 1e-4, "betas": [0.95, 0.98], "weight_decay": 0.01}}})
    assert (cfg.optimizer, cfg.lr0, cfg.momentum, cfg.lion_beta2) == ("Lion", 1e-4, 0.95, 0.98)
    with pytest.raises(ConfigError, match="exactly one"):
        get_config(hyp={"optimizer": {"SGD": {}, "Lion": {}}})


def test_config_round_trips_through_saved_dict():
    cfg = get_config(hyp={"lr0": 0.05, "dino.every_n": 2, "strides": [8, 16, 32]})
    again = get_config({"hyp": cfg.to_dict()})
    assert again == cfg


def test_device_pipeline_keys_are_accepted():
    cfg = get_config(hyp={"gpu_collate": True, "cuda_prefetch": True, "buffer_depth": 4})
    assert (cfg.gpu_collate, cfg.cuda_prefetch, cfg.buffer_depth) == (True, True, 4)
